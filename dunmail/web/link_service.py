"""SERVICE: what a customer's link does, apart from HTTP: verify and look up, record the click,
queue a fresh link, revoke, fetch the PDF. ``links.py`` turns these into pages."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from bounce.recovery import copy_request
from bounce.threads import note_activity
from dunmail.app import Services
from dunmail.web.deps import SECURITY_HEADERS
from mailer.content.attachment import file_stem, plan_pdf
from mailer.content.kinds import Kind
from mailer.content.models import StoredPDF
from mailer.db import session_scope
from mailer.errors import LinkInvalid, MailerError, NotFoundError
from mailer.ledger.models import Customer, Invoice, InvoiceStatus
from mailer.ledger.queries import customer_contacts, find_invoice
from mailer.outbound.links import PURPOSES, LinkClaims, token_hash, verify_link
from mailer.outbound.models import LinkEvent, LinkRevocation, Message

log = logging.getLogger(__name__)

# Responses about one customer's document: never kept by a shared cache or the browser.
NO_STORE = {**SECURITY_HEADERS, "Cache-Control": "private, no-store"}
CLICKS = ("opened", "redirected", "downloaded")  # what a link.clicked webhook reports
_AGENT_CHARS = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Opened:
    """A link whose MAC verified, with the email it came in (detached from its session)."""

    token: str
    claims: LinkClaims
    # None for a download link made without one (DownloadLinks), and for a preview's links
    # (``dunmail preview`` stores nothing): those show the document as the ledger has it now.
    message: Message | None
    revoked: str | None = None  # "token" or "document"

    @property
    def blocked(self) -> bool:
        """Expired or revoked: the document is not shown."""
        return self.claims.expired or self.revoked is not None

    @property
    def preview(self) -> bool:
        """A link from a preview: no customer got it, so opening it is recorded nowhere."""
        return self.message is None and self.claims.purpose != "download"


@dataclass(frozen=True)
class Shown:
    """What a link shows: an email's kind and frozen context, and when it was sent."""

    kind: str
    context: dict[str, Any]
    sent_at: datetime
    invoice_id: int | None = None


class FreshLink(StrEnum):
    """What a request for a fresh link did."""

    SENT = "sent"
    LIMITED = "limited"  # too many in 24 hours
    WITHDRAWN = "withdrawn"  # every link to the document was revoked
    NO_CONTACT = "no_contact"


# -- service -------------------------------------------------------------------------------


def open_link(services: Services, token: str) -> Opened:
    """Verify ``token`` (expired ones too) and find its email and any revocation.

    :class:`LinkInvalid` for a bad MAC, an unknown purpose or tenant, or an email that is not
    the token's tenant's: all of them look the same to the customer.
    """
    if not services.links.keys:
        raise LinkInvalid("no link keys are configured")
    now = services.clock.now()
    claims = verify_link(token, keys=services.links.keys, now=now, allow_expired=True)
    if claims.purpose not in PURPOSES or claims.tenant_id not in services.tenants.ids.values():
        raise LinkInvalid("link names an unknown purpose or tenant")
    with Session(services.engine, expire_on_commit=False) as session:
        message = None
        if claims.message is not None:
            message = session.exec(
                select(Message).where(
                    Message.uid == claims.message, Message.tenant_id == claims.tenant_id
                )
            ).first()
            if message is None:
                raise LinkInvalid("link names no email of its tenant")
        elif claims.purpose not in ("download", "view", "pay"):
            raise LinkInvalid("link names no email")
        revoked = session.exec(
            select(LinkRevocation.document).where(
                LinkRevocation.tenant_id == claims.tenant_id,
                sa.or_(
                    col(LinkRevocation.token_hash) == token_hash(token),
                    col(LinkRevocation.document) == claims.document,
                ),
            )
        ).all()
    how = None
    if revoked:
        how = "document" if any(d is not None for d in revoked) else "token"
    return Opened(token=token, claims=claims, message=message, revoked=how)


def shown(services: Services, opened: Opened) -> Shown | None:
    """What the link shows: its email's kind and frozen context; for a preview's link, the
    invoice it names as the ledger has it now, through the builder the outbox stores a
    context with (``Triggers.invoice_email``), while that version is current. None: nothing
    to show (a preview's link to an invoice changed since, or to no invoice)."""
    message, claims = opened.message, opened.claims
    if message is not None:
        return Shown(message.kind, message.context, message.created_at, message.invoice_id)
    prefix, _, raw_id = claims.document.partition(":")
    if prefix != "invoice" or not raw_id.isdigit():
        return None
    with Session(services.engine) as session:
        invoice = session.get(Invoice, int(raw_id))
        if invoice is None or invoice.tenant_id != claims.tenant_id:
            return None
        if invoice.version != claims.version:
            return None
        # The page of a paid invoice thanks; of an open one, says how overdue it is.
        kind = Kind.THANK_YOU if invoice.status is InvoiceStatus.PAID else Kind.INVOICE_REMINDER
        try:
            email = services.sending.triggers.invoice_email(
                session, tenant_id=claims.tenant_id, number=invoice.number, kind=kind, sending=False
            )
        except MailerError:
            return None
        return Shown(kind, email.context, services.clock.now(), invoice.id)


def record_click(services: Services, opened: Opened, *, action: str, user_agent: str) -> None:
    """Store the open as a :class:`LinkEvent` (and queue its webhook) in its own transaction;
    a preview's link is nobody's click and is not recorded."""
    if opened.preview:
        return
    with session_scope(services.engine) as session:
        _record(session, services, opened, action=action, user_agent=user_agent)


def _record(
    session: Session, services: Services, opened: Opened, *, action: str, user_agent: str
) -> None:
    now = services.clock.now()
    claims, message = opened.claims, opened.message
    session.add(
        LinkEvent(
            tenant_id=claims.tenant_id,
            message_id=message.id if message is not None else None,
            document=claims.document[:100],
            purpose=claims.purpose,
            action=action,
            at=now,
            user_agent=_CONTROL.sub(" ", user_agent)[:_AGENT_CHARS],
        )
    )
    if action in CLICKS and message is not None:
        note_activity(session, message, now=now)
    if action in CLICKS:
        data = {
            "message": message.uid if message is not None else None,
            "document": claims.document,
            "purpose": claims.purpose,
            "action": action,
            "at": now.isoformat(),
        }
        services.webhooks.emit(
            session, tenant_id=claims.tenant_id, event="link.clicked", data=data, now=now
        )


def request_fresh_link(services: Services, opened: Opened, *, user_agent: str) -> FreshLink:
    """Queue the link's email again (same kind, context, document and version, so the same
    links, page and PDF) to the customer's current contacts, suppression-aware; rate-limited
    per document. It is marked ``fresh_link``, so it reads as a neutral "here is your new
    link", never as the reminder it copies: the invoice may be on hold or in dispute, and the
    customer asked for a link, not for another "Overdue"."""
    message, claims = opened.message, opened.claims
    if opened.revoked == "document":
        return FreshLink.WITHDRAWN
    if message is None or message.customer_id is None:
        return FreshLink.NO_CONTACT
    now = services.clock.now()
    limit = services.config.web.fresh_links_per_day
    with session_scope(services.engine) as session:
        asked = select(sa.func.count()).where(
            LinkEvent.tenant_id == claims.tenant_id,
            LinkEvent.document == claims.document,
            LinkEvent.action == "refreshed",
        )
        recent = session.exec(asked.where(col(LinkEvent.at) > now - timedelta(days=1))).one()
        if recent >= limit:
            return FreshLink.LIMITED
        customer = session.get(Customer, message.customer_id)
        if customer is None or customer.tenant_id != claims.tenant_id:
            return FreshLink.NO_CONTACT
        contacts = customer_contacts(session, customer, now=now)
        if not contacts:
            return FreshLink.NO_CONTACT
        number = session.exec(asked).one() + 1
        copied = copy_request(
            message, [c.email for c in contacts], occasion=f"fresh link {number}", manual=True
        )
        request = replace(copied, context={**copied.context, "fresh_link": True})
        services.sending.queue.enqueue(session, request, now=now)
        _record(session, services, opened, action="refreshed", user_agent=user_agent)
    return FreshLink.SENT


def revoke_links(
    services: Services,
    *,
    tenant: str | None,
    token: str | None = None,
    invoice: str | None = None,
    reason: str = "",
    by: str,
) -> str:
    """Revoke one link (``token``, or a URL ending in it) or every link to invoice ``invoice``;
    returns what was revoked. Revoking twice is harmless."""
    if (token is None) == (invoice is None):
        raise MailerError("revoke either one link (--token) or an invoice's links (--invoice)")
    now = services.clock.now()
    row = LinkRevocation(reason=reason[:300], created_by=by[:200], created_at=now, tenant_id=0)
    if token is not None:
        token = token.strip().rsplit("/l/", 1)[-1].split("/")[0].split("?")[0]
        claims = verify_link(token, keys=services.links.keys, now=now, allow_expired=True)
        if tenant is not None and services.tenants.id(tenant) != claims.tenant_id:
            raise NotFoundError("that link belongs to another tenant")
        row.tenant_id, row.token_hash = claims.tenant_id, token_hash(token)
        what = f"the {claims.purpose} link to {claims.document}"
    else:
        row.tenant_id = services.tenants.id(tenant)
        with Session(services.engine) as session:
            found = find_invoice(session, tenant_id=row.tenant_id, number=invoice or "")
            row.document = f"invoice:{found.id}"
        what = f"every link to invoice {invoice}"
    with session_scope(services.engine) as session:
        same = (
            col(LinkRevocation.token_hash) == row.token_hash
            if row.token_hash is not None
            else col(LinkRevocation.document) == row.document
        )
        known = session.exec(
            select(LinkRevocation.id).where(LinkRevocation.tenant_id == row.tenant_id, same)
        ).first()
        if known is None:
            session.add(row)
    log.info("revoked %s (tenant %d) by %s", what, row.tenant_id, by)
    return what


async def fetch_link_pdf(services: Services, opened: Opened) -> tuple[bytes, str] | None:
    """The PDF of the link's document version and its file name, or None: the stored bytes
    the email carried, else rendered through the outbox's PDF store."""
    claims, message = opened.claims, opened.message
    if message is None:
        return await run_in_threadpool(_stored_pdf, services, claims)
    target = plan_pdf(
        message.kind,
        message.context,
        invoice_id=message.invoice_id,
        version=message.document_version,
    )
    if target is None or (target.document, target.version) != (claims.document, claims.version):
        return None
    if services.pdfs.store is not None:
        stored = await services.pdfs.store.fetch_pdf(
            tenant_id=message.tenant_id,
            document=target.document,
            version=target.version,
            pdf=target.pdf,
            context=message.context,
            sha256=message.pdf_sha256,
        )
        return stored.data, target.filename
    found = await run_in_threadpool(_stored_pdf, services, claims, message.pdf_sha256)
    return (found[0], target.filename) if found is not None else None


def _stored_pdf(
    services: Services, claims: LinkClaims, sha256: str | None = None
) -> tuple[bytes, str] | None:
    with Session(services.engine) as session:
        query = select(StoredPDF).where(
            StoredPDF.tenant_id == claims.tenant_id,
            StoredPDF.document == claims.document,
            StoredPDF.version == claims.version,
        )
        if sha256 is not None:
            query = query.where(StoredPDF.sha256 == sha256)
        stored = session.exec(query.order_by(col(StoredPDF.id).desc())).first()
        if stored is None:
            return None
        sent = session.exec(
            select(Message).where(
                Message.tenant_id == claims.tenant_id, Message.pdf_sha256 == stored.sha256
            )
        ).first()
        target = sent and plan_pdf(
            sent.kind, sent.context, invoice_id=sent.invoice_id, version=sent.document_version
        )
        name = target.filename if target else f"{file_stem(claims.document)}.pdf"
        return stored.data, name
