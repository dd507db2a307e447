"""SERVICE: the account page's PDFs, each served under the page's own View link.

Every PDF the account page links to is a sub-path of the View link's token
(``/l/<token>/account/...``): an open invoice's stored PDF, a statement the customer was sent,
and a statement of the account as it stands now. Each request goes through the same checks as
the page (``link_service.open_link``: MAC, tenant, expiry, revocation) and is scoped to the
token's customer (``portal.account_customer``), so revoking the View link also stops every PDF
link the page ever showed; a separate ``download`` token, as the page issued before, outlived
that revocation. Revoking every link to an invoice (``dunmail link revoke --invoice``) stops
that invoice's PDF here too.

The statement "as it stands now" is the statement pass's own: ``scheduler.statements``'
transactions of the customer, ``mailer.content.statement.statement`` in the open-item style
(what is owed today, per currency), rendered by the statement PDF template. Renders are
counted per customer (a :class:`LinkEvent` each, which is also the audit trail) and limited
to :data:`STATEMENT_PDFS_PER_HOUR`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from dunmail.app import Services
from dunmail.services.portal import account_customer
from dunmail.web.link_service import Opened
from mailer.content.attachment import file_stem, plan_pdf
from mailer.content.context import party_context
from mailer.content.kinds import Kind
from mailer.content.models import StoredPDF
from mailer.content.pdfstore import build_pdf_context
from mailer.content.statement import statement
from mailer.db import session_scope
from mailer.ledger.localtime import customer_zone
from mailer.ledger.models import Invoice, InvoiceStatus, Tenant
from mailer.outbound.models import LinkEvent, LinkRevocation, Message, MessageStatus
from scheduler.statements import transactions

log = logging.getLogger(__name__)
STATEMENT_PDFS_PER_HOUR = 20  # statements rendered now, per customer: a person, not a script
STATEMENT_ACTION = "statement"  # LinkEvent.action of a statement rendered for the page


@dataclass(frozen=True)
class Pdf:
    data: bytes
    filename: str


def invoice_pdf(services: Services, opened: Opened, *, invoice_id: int) -> Pdf | None:
    """The stored PDF of the current version of one of the link's customer's invoices, or
    None (not the customer's, the invoice's links revoked, or no PDF stored)."""
    with Session(services.engine) as session:
        customer = account_customer(session, opened)
        invoice = session.get(Invoice, invoice_id)
        if (
            customer is None
            or invoice is None
            or invoice.tenant_id != customer.tenant_id
            or invoice.customer_id != customer.id
            or invoice.status not in (InvoiceStatus.OPEN, InvoiceStatus.PAID)
        ):
            return None
        document = f"invoice:{invoice.id}"
        if _document_revoked(session, invoice.tenant_id, document):
            return None
        stored = session.exec(
            select(StoredPDF)
            .where(
                StoredPDF.tenant_id == invoice.tenant_id,
                StoredPDF.document == document,
                StoredPDF.version == invoice.version,
            )
            .order_by(col(StoredPDF.id).desc())
        ).first()
        if stored is None:
            return None
        return Pdf(stored.data, f"{file_stem(invoice.number)}.pdf")


def _document_revoked(session: Session, tenant_id: int, document: str) -> bool:
    return (
        session.exec(
            select(LinkRevocation.id).where(
                LinkRevocation.tenant_id == tenant_id, LinkRevocation.document == document
            )
        ).first()
        is not None
    )


async def sent_statement_pdf(services: Services, opened: Opened, *, message_id: int) -> Pdf | None:
    """The PDF of a statement email the link's customer was sent: the bytes it carried, else
    rendered from its frozen context through the PDF store. None: not theirs, or no PDFs."""
    with Session(services.engine) as session:
        customer = account_customer(session, opened)
        message = session.get(Message, message_id)
        if (
            customer is None
            or message is None
            or message.tenant_id != customer.tenant_id
            or message.customer_id != customer.id
            or message.kind != Kind.STATEMENT.value
            or message.status != MessageStatus.SENT
        ):
            return None
        target = plan_pdf(message.kind, message.context, version=message.document_version)
        if target is None:
            return None
        if message.pdf_sha256 is not None:
            stored = session.exec(
                select(StoredPDF.data).where(
                    StoredPDF.tenant_id == message.tenant_id,
                    StoredPDF.sha256 == message.pdf_sha256,
                )
            ).first()
            if stored is not None:
                return Pdf(stored, target.filename)
        context, tenant_id = dict(message.context), message.tenant_id
    store = services.pdfs.store
    if store is None:
        return None
    made = await store.fetch_pdf(
        tenant_id=tenant_id,
        document=target.document,
        version=target.version,
        pdf=target.pdf,
        context=context,
    )
    return Pdf(made.data, target.filename)


class StatementRefused(Exception):
    """Too many statements rendered for this customer in the last hour."""


def current_statement_context(
    services: Services, opened: Opened, *, currency: str, user_agent: str
) -> dict[str, Any] | None:
    """The open-item statement of the link's customer in ``currency`` as the ledger has it
    now, as a statement email's context (the PDF shows that); None: no account, or nothing
    open in that currency. Counted (and refused past the limit) per customer."""
    now = services.clock.now()
    _, config = services.tenants.config(opened.claims.tenant_id)
    with session_scope(services.engine) as session:
        customer = account_customer(session, opened)
        tenant = session.get(Tenant, opened.claims.tenant_id)
        if customer is None or tenant is None:
            return None
        zone = customer_zone(customer.time_zone, tenant.time_zone)
        content = statement(
            "open_item",
            transactions(session, customer),
            currency=currency,
            start=now - timedelta(days=30),
            end=now,
            zone=zone,
        )
        if content is None:
            return None
        audit = f"account:{customer.id}"
        recent = session.exec(
            select(sa.func.count()).where(
                LinkEvent.tenant_id == customer.tenant_id,
                LinkEvent.document == audit,
                LinkEvent.action == STATEMENT_ACTION,
                col(LinkEvent.at) > now - timedelta(hours=1),
            )
        ).one()
        if recent >= STATEMENT_PDFS_PER_HOUR:
            raise StatementRefused(f"customer {customer.id}: {recent} statements this hour")
        message = opened.message
        session.add(
            LinkEvent(
                tenant_id=customer.tenant_id,
                message_id=message.id if message is not None else None,
                document=audit,
                purpose="view",
                action=STATEMENT_ACTION,
                at=now,
                user_agent="".join(c if c.isprintable() else " " for c in user_agent)[:300],
            )
        )
        return {
            **party_context(
                tenant=tenant, customer=customer, branding=config.branding.as_context()
            ),
            **content,
        }


async def current_statement_pdf(
    services: Services, opened: Opened, *, currency: str, user_agent: str
) -> Pdf | None:
    """The PDF of :func:`current_statement_context`, rendered now (not stored: it is a
    statement of this minute). None: nothing to state, or PDFs are off.
    :class:`StatementRefused` past the hourly limit."""
    renderer = services.pdfs.renderer
    if renderer is None:
        return None
    context = await asyncio.to_thread(
        lambda: current_statement_context(
            services, opened, currency=currency, user_agent=user_agent
        )
    )
    if context is None:
        return None
    pdf_context, css = build_pdf_context("statement", context)
    rendered = await renderer.render("statement", pdf_context, tenant_css=css)
    day = services.clock.now().date().isoformat()
    return Pdf(rendered.data, f"statement-{file_stem(currency)}-{day}.pdf")
