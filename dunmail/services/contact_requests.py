"""SERVICE: a contact address a customer adds or changes on the account page, confirmed first.

An address asked for is checked (``mailer.address.parse_addr_spec``, the import's own rule:
one bare ``local@domain``), refused when our mail may not go there (an active suppression:
it bounced, complained or was blocked by a clerk) or when it is a contact already, and kept
as a :class:`ContactRequest`: it is not a contact, and gets no invoice, until the link
emailed to it is followed. That email is the ``contact_confirmation`` kind, through the
outbox like any other, in the customer's language, to the new address only.

The link is signed with the link key (``mailer/outbound/links.py``, purpose
``confirm_contact``, naming the request), expires after :data:`CONFIRM_AFTER` and works once:
confirming flips the request from pending in one conditional UPDATE, so two clicks cannot
both apply it. Opening the link shows a button; only its POST confirms (mail scanners that
fetch links must not confirm for the customer).

A confirmed change replaces the contact's address the way a clerk's correction does
(``mailer.ledger.contacts.replace_contact_email``: ``erp_email`` keeps the ERP's address); a
confirmed addition remembers the ERP's list (``mailer/ledger/contact_changes.py``).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from dunmail.app import Services
from dunmail.services.contact_notice import queue_change_notice
from dunmail.services.customer_rows import blocks_of
from dunmail.services.portal import account_customer
from dunmail.services.preferences import (
    Outcome,
    effective_language,
    locked,
    over_limit,
    record_change,
    who,
)
from dunmail.web.link_service import Opened
from mailer.address import parse_addr_spec
from mailer.content.context import party_context
from mailer.content.kinds import Kind
from mailer.db import session_scope
from mailer.errors import AddressError, LinkError
from mailer.ledger.contact_changes import erp_listed, standing_changes
from mailer.ledger.contacts import replace_contact_email
from mailer.ledger.holds import touch_customer_invoices
from mailer.ledger.models import Contact, ContactRole, Customer, Tenant
from mailer.ledger.preference_models import ChangeKind, ContactRequest, RequestStatus
from mailer.outbound.links import issue_link, verify_link
from mailer.outbound.requests import EnqueueRequest

PURPOSE = "confirm_contact"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # a name is one line of text
CONFIRM_AFTER = timedelta(hours=48)
CONFIRMATIONS_PER_HOUR = 5  # emails to new addresses per customer: no relay for spam
MAX_CONTACTS = 10


@dataclass(frozen=True)
class Confirmation:
    """What a confirmation link's page shows before the button is pressed."""

    email: str
    replaces: str | None
    customer_name: str
    tenant_name: str
    locale: str
    tenant_id: int


def confirm_url(services: Services, token: str) -> str:
    """Where the emailed link leads."""
    return f"{services.config.web.public_url}/l/{token}/confirm"


async def request_contact(
    services: Services, opened: Opened, *, email: str, name: str, replaces: str | None
) -> Outcome | None:
    """Ask to add ``email`` (or change ``replaces`` to it) and email it the confirmation
    link; None: the link grants no account."""
    outcome, message_id = await asyncio.to_thread(
        _request, services, opened, email=email, name=name, replaces=replaces
    )
    if message_id is not None:
        await services.sending.dispatcher.deliver_due(only=[message_id])
    return outcome


def _request(
    services: Services, opened: Opened, *, email: str, name: str, replaces: str | None
) -> tuple[Outcome | None, int | None]:
    now = services.clock.now()
    _, config = services.tenants.config(opened.claims.tenant_id)
    with session_scope(services.engine) as session:
        customer = locked(session, account_customer(session, opened))
        tenant = session.get(Tenant, opened.claims.tenant_id)
        if customer is None or tenant is None:
            return None, None
        try:
            address = parse_addr_spec(email.strip())
        except AddressError:
            return Outcome.INVALID_ADDRESS, None
        contacts = {
            c.email: c
            for c in session.exec(select(Contact).where(col(Contact.customer_id) == customer.id))
        }
        if replaces is not None and replaces not in contacts:
            return Outcome.UNKNOWN_CONTACT, None
        if address in contacts:
            return Outcome.ALREADY, None
        if replaces is None and len(contacts) >= MAX_CONTACTS:
            return Outcome.TOO_MANY_CONTACTS, None
        if blocks_of(session, customer.tenant_id, [address], now):
            return Outcome.SUPPRESSED, None
        if not config.sends(Kind.CONTACT_CONFIRMATION):
            return Outcome.UNAVAILABLE, None
        if over_limit(session, customer, now) or _sent_lately(session, customer, now):
            return Outcome.LIMITED, None
        by = who(opened)
        # One open request per address: asking again sends a fresh link, the old one is void.
        session.execute(
            sa.update(ContactRequest)
            .where(
                col(ContactRequest.customer_id) == customer.id,
                col(ContactRequest.email) == address,
                col(ContactRequest.status) == RequestStatus.PENDING,
            )
            .values(status=RequestStatus.WITHDRAWN)
        )
        row = ContactRequest(
            tenant_id=customer.tenant_id,
            customer_id=customer.id or 0,
            email=address,
            name=" ".join(_CONTROL.sub(" ", name).split())[:300] or None,
            replaces=replaces,
            requested_by=by,
            requested_at=now,
            expires_at=now + CONFIRM_AFTER,
        )
        session.add(row)
        session.flush()
        record_change(
            session,
            customer,
            ChangeKind.CONTACT_REQUESTED,
            by=by,
            now=now,
            old=replaces,
            new=address,
            webhooks=services.webhooks,
        )
        token = issue_link(
            PURPOSE,
            customer.tenant_id,
            f"contact_request:{row.id}",
            0,
            key=services.links.signing,
            expires_at=row.expires_at,
        )
        contact: dict[str, str] = {
            "email": address,
            "confirm_url": confirm_url(services, token),
            "expires_at": row.expires_at.isoformat(),
        }
        if replaces is not None:
            contact["replaces"] = replaces
        context = {
            **party_context(
                tenant=tenant, customer=customer, branding=config.branding.as_context()
            ),
            "contact": contact,
        }
        message = services.sending.queue.enqueue(
            session,
            EnqueueRequest(
                tenant_id=customer.tenant_id,
                kind=Kind.CONTACT_CONFIRMATION,
                recipients=[address],
                context=context,
                document=f"contact_request:{row.id}",
                version=1,
                customer_id=customer.id,
            ),
            now=now,
        )
        return Outcome.REQUESTED, message.id


def _sent_lately(session: Session, customer: Customer, now: datetime) -> bool:
    recent = session.exec(
        select(sa.func.count()).where(
            col(ContactRequest.customer_id) == customer.id,
            col(ContactRequest.requested_at) > now - timedelta(hours=1),
        )
    ).one()
    return int(recent) >= CONFIRMATIONS_PER_HOUR


def _pending(session: Session, services: Services, token: str) -> ContactRequest | None:
    """The pending request a genuine, unexpired confirmation token names, else None."""
    now = services.clock.now()
    try:
        claims = verify_link(token, keys=services.links.keys, now=now)
    except LinkError:
        return None
    prefix, _, raw = claims.document.partition(":")
    if claims.purpose != PURPOSE or prefix != "contact_request" or not raw.isdigit():
        return None
    row = session.get(ContactRequest, int(raw))
    if (
        row is None
        or row.tenant_id != claims.tenant_id
        or row.status is not RequestStatus.PENDING
        or row.expires_at <= now
    ):
        return None
    return row


def read_confirmation(services: Services, token: str) -> Confirmation | None:
    """What the confirmation page shows, or None for a link that confirms nothing."""
    with Session(services.engine) as session:
        row = _pending(session, services, token)
        customer = session.get(Customer, row.customer_id) if row is not None else None
        tenant = session.get(Tenant, row.tenant_id) if row is not None else None
        if row is None or customer is None or tenant is None:
            return None
        locale, _ = effective_language(customer, tenant)
        return Confirmation(
            row.email, row.replaces, customer.name, tenant.name, locale, row.tenant_id
        )


def confirm_contact(services: Services, token: str) -> Outcome:
    """Make the request the token names a contact, once; NOT_VALID for any other link."""
    now = services.clock.now()
    with session_scope(services.engine) as session:
        row = _pending(session, services, token)
        if row is None:
            return Outcome.NOT_VALID
        # The customer first, as every other change locks it, then the request.
        customer = locked(session, session.get(Customer, row.customer_id))
        # Single use: only the click that flips it from pending applies it.
        flipped = session.execute(
            sa.update(ContactRequest)
            .where(
                col(ContactRequest.id) == row.id,
                col(ContactRequest.status) == RequestStatus.PENDING,
            )
            .values(status=RequestStatus.CONFIRMED, confirmed_at=now)
        )
        if getattr(flipped, "rowcount", 0) != 1 or customer is None:
            return Outcome.NOT_VALID
        by = f"customer via the confirmation email to {row.email}"[:200]
        contacts = {
            c.email: c
            for c in session.exec(select(Contact).where(col(Contact.customer_id) == customer.id))
        }
        if row.email in contacts:
            return Outcome.ALREADY
        before = list(contacts)  # the notice goes to these, never to the new address alone
        if row.replaces is not None and row.replaces in contacts:
            replace_contact_email(
                session,
                tenant_id=customer.tenant_id,
                customer_id=customer.id or 0,
                old=row.replaces,
                new=row.email,
                now=now,
                by=by,
            )
            change = record_change(
                session,
                customer,
                ChangeKind.CONTACT_CHANGED,
                by=by,
                now=now,
                old=row.replaces,
                new=row.email,
                webhooks=services.webhooks,
            )
            queue_change_notice(
                services,
                session,
                customer,
                change,
                before=before,
                now=now,
                old=row.replaces,
                new=row.email,
            )
            return Outcome.CONFIRMED
        erp = erp_listed(session, customer)
        for removed in standing_changes(session, customer.id or 0):
            if removed.kind is ChangeKind.CONTACT_REMOVED and removed.old == row.email:
                removed.standing, removed.ended_at = False, now  # the customer wants it back
                session.add(removed)
        session.add(
            Contact(
                tenant_id=customer.tenant_id,
                customer_id=customer.id or 0,
                email=row.email,
                name=row.name,
                roles=[ContactRole.BILLING.value],
                corrected_by=by,
                corrected_at=now,
            )
        )
        change = record_change(
            session,
            customer,
            ChangeKind.CONTACT_ADDED,
            by=by,
            now=now,
            new=row.email,
            erp=erp,
            webhooks=services.webhooks,
        )
        queue_change_notice(
            services, session, customer, change, before=before, now=now, new=row.email
        )
        session.flush()
        touch_customer_invoices(session, customer.id or 0, now)
    return Outcome.CONFIRMED
