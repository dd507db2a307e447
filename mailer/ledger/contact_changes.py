"""SERVICE: a customer's own additions and removals of contacts, as an ERP import meets them.

The README's rule for a clerk's corrections holds for the customer's changes too: the ERP is
the source of truth for contacts, but a change made here stands while the ERP keeps sending
what it sent when the change was made, so the next import does not undo it. A changed address
is a correction exactly like a clerk's (``Contact.erp_email``, mailer/ledger/contacts.py). An
addition or a removal has no address of the ERP to stand in for, so it remembers the whole
list the ERP had (``PreferenceChange.erp_listed``): while an import lists those same
addresses, the addition is kept (and the removed address stays away), each counted in the
import report's ``corrections_kept``; once the ERP lists other contacts it has been updated,
and its list is taken as it is.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from mailer.ledger.models import Contact, ContactRole, Customer
from mailer.ledger.parsed import ParsedContact
from mailer.ledger.preference_models import ChangeKind, PreferenceChange

STANDING_KINDS = (ChangeKind.CONTACT_ADDED, ChangeKind.CONTACT_REMOVED)


def standing_changes(session: Session, customer_id: int) -> list[PreferenceChange]:
    """The customer's additions and removals that still stand, oldest first."""
    return list(
        session.exec(
            select(PreferenceChange)
            .where(
                col(PreferenceChange.customer_id) == customer_id,
                col(PreferenceChange.standing).is_(True),
            )
            .order_by(col(PreferenceChange.id))
        )
    )


def _with_standing(session: Session, tenant_id: int) -> set[int]:
    """The tenant's customers with a standing change, read once per session: an import asks
    for each of its customers, and an extra query each cost it about a quarter of its time."""
    key = ("dunmail.customers_with_standing_changes", tenant_id)
    found: set[int] | None = session.info.get(key)
    if found is None:
        found = set(
            session.exec(
                select(PreferenceChange.customer_id).where(
                    col(PreferenceChange.tenant_id) == tenant_id,
                    col(PreferenceChange.standing).is_(True),
                )
            )
        )
        session.info[key] = found
    return found


def erp_listed(session: Session, customer: Customer) -> list[str]:
    """The addresses the ERP lists for ``customer`` as far as the ledger knows: those of the
    standing changes, else every contact's ERP address (a correction's ``erp_email``)."""
    standing = standing_changes(session, customer.id or 0)
    if standing:
        return list(standing[-1].erp_listed or [])
    contacts = session.exec(
        select(Contact).where(
            col(Contact.tenant_id) == customer.tenant_id, col(Contact.customer_id) == customer.id
        )
    )
    return sorted({c.erp_email or c.email for c in contacts})


def with_customer_changes(
    session: Session,
    customer: Customer,
    contacts: tuple[ParsedContact, ...],
    *,
    now: datetime,
) -> tuple[tuple[ParsedContact, ...], list[tuple[str, str]]]:
    """The contacts an import should make ``customer``'s, given what the ERP listed, and the
    customer's changes kept: (ERP address or "", address or "") pairs for the report.

    While the ERP lists what it did when the customer changed something, each standing
    addition is added to its list and each standing removal taken out of it; once it lists
    other addresses, every standing change is over and the ERP's list is used as it is."""
    if customer.id not in _with_standing(session, customer.tenant_id):
        return contacts, []  # most customers: no query of their own
    standing = standing_changes(session, customer.id or 0)
    if not standing:
        return contacts, []
    listed = sorted({c.email for c in contacts})
    if listed != sorted(standing[-1].erp_listed or []):
        for change in standing:
            change.standing = False
            change.ended_at = now
            session.add(change)
        return contacts, []
    result = list(contacts)
    kept: list[tuple[str, str]] = []
    names = {
        c.email: c.name
        for c in session.exec(select(Contact).where(col(Contact.customer_id) == customer.id))
    }
    for change in standing:
        address = change.new if change.kind is ChangeKind.CONTACT_ADDED else change.old
        if not address:
            continue
        result = [c for c in result if c.email != address]
        if change.kind is ChangeKind.CONTACT_ADDED:
            result.append(ParsedContact(address, names.get(address), (ContactRole.BILLING,), None))
            kept.append(("", address))
        else:
            kept.append((address, ""))
    return tuple(result), kept
