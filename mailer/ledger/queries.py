"""SERVICE: the ledger queries the scheduler, the CLI and the inbox use: an invoice by its
number, and who receives a customer's AR email.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime

from sqlmodel import Session, col, select

from mailer.errors import NotFoundError
from mailer.ledger.models import (
    Contact,
    ContactRole,
    Customer,
    Invoice,
)
from mailer.outbound.suppression import active as active_suppressions
from mailer.outbound.suppression import normal

ROLE_PRIORITY = (ContactRole.BILLING, ContactRole.AP, ContactRole.ACCOUNTANT, ContactRole.PRIMARY)


def find_invoice(session: Session, *, tenant_id: int, number: str) -> Invoice:
    """The tenant's invoice with this number (as printed on it, not the ERP id)."""
    invoice = session.exec(
        select(Invoice).where(col(Invoice.tenant_id) == tenant_id, col(Invoice.number) == number)
    ).first()
    if invoice is None:
        raise NotFoundError(f"no invoice numbered {number!r}")
    return invoice


def invoice_contacts(
    session: Session, invoice: Invoice, *, now: datetime | None = None
) -> list[Contact]:
    """Who receives ``invoice``: its customer's contacts (:func:`customer_contacts`)."""
    return contacts_by_customer(session, [invoice.customer_id], now=now)[invoice.customer_id]


def customer_contacts(
    session: Session, customer: Customer, *, now: datetime | None = None
) -> list[Contact]:
    """Who receives a customer's AR email: its contacts with send_invoices on.

    Ordered billing, ap, accountant, primary (a contact ranks by its best role; none ranks
    last), then by email, so the first address is the one a single-recipient send should use.
    Given ``now``, suppressed addresses are left out, and when that leaves nobody, the
    best-ranked other contact who is not suppressed stands in (a bounced AP mailbox passes the
    reminder to the accountant rather than to nobody).
    """
    cid = customer.id or 0
    return contacts_by_customer(session, [cid], now=now)[cid]


def contacts_by_customer(
    session: Session, customer_ids: Iterable[int], *, now: datetime | None = None
) -> dict[int, list[Contact]]:
    """:func:`customer_contacts` of many customers in one query (the scheduler's batches)."""
    # By customer alone: a customer id is unique across tenants, and a tenant_id condition
    # invites SQLite (without statistics) to scan all of the tenant's contacts instead.
    wanted = sorted(set(customer_ids))
    everyone: dict[int, list[Contact]] = {c: [] for c in wanted}
    if not wanted:
        return everyone
    query = select(Contact).where(col(Contact.customer_id).in_(wanted))
    if now is None:
        query = query.where(col(Contact.send_invoices).is_(True))
    for contact in session.exec(query).all():
        everyone[contact.customer_id].append(contact)
    ranked = {c: rank_contacts(rows) for c, rows in everyone.items()}
    if now is None:
        return ranked
    contacts = [c for rows in ranked.values() for c in rows]
    blocked = set(
        active_suppressions(
            session, {c.tenant_id for c in contacts}, {c.email for c in contacts}, now
        )
    )
    return {cid: deliverable(rows, blocked) for cid, rows in ranked.items()}


def deliverable(ranked: list[Contact], blocked: Collection[tuple[int, str]]) -> list[Contact]:
    """The send_invoices contacts that are not blocked; if all of those are blocked, the
    best-ranked other contact that is not (the fallback by role); else nobody. A customer
    whose contacts all opted out of AR email gets none."""
    open_ = [c for c in ranked if (c.tenant_id, normal(c.email)) not in blocked]
    chosen = [c for c in open_ if c.send_invoices]
    if chosen or not any(c.send_invoices for c in ranked):
        return chosen
    return open_[:1]


def rank_contacts(contacts: Iterable[Contact]) -> list[Contact]:
    """Billing, AP, accountant, primary (a contact ranks by its best role; none ranks last),
    then by email."""
    return sorted(contacts, key=_rank)


def _rank(contact: Contact) -> tuple[int, str]:
    best = min(
        (ROLE_PRIORITY.index(ContactRole(r)) for r in contact.roles if r in ROLE_PRIORITY),
        default=len(ROLE_PRIORITY),
    )
    return best, contact.email
