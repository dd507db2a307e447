"""SERVICE: a customer's contacts as the ERP lists them, and a clerk's corrections of them.

The ERP is the source of truth for contacts, except for an address a clerk corrected after it
bounced: the correction stands in for the ERP's address until the ERP is fixed too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from mailer.address import parse_addr_spec
from mailer.errors import DocumentError, NotFoundError
from mailer.ledger.contact_changes import with_customer_changes
from mailer.ledger.eventlog import assign
from mailer.ledger.holds import touch_customer_invoices
from mailer.ledger.models import (
    Contact,
    Customer,
)
from mailer.ledger.parsed import (
    ParsedContact,
)
from mailer.ledger.upsert import row_id


@dataclass(frozen=True)
class KeptCorrection:
    """An address the ERP still lists that the import left as a clerk corrected it."""

    customer: str  # the customer's external id
    erp_email: str
    email: str


def sync_contacts(
    session: Session,
    customer: Customer,
    contacts: tuple[ParsedContact, ...],
    kept: list[KeptCorrection],
    *,
    now: datetime | None = None,
) -> bool:
    """Make the customer's contacts exactly the listed ones, matched by email.

    A clerk's correction (``Contact.erp_email``) stands in for the address it replaced while
    the ERP still lists that address, so a bounced address does not come back with the next
    import; it is reported in ``ImportReport.corrections_kept``, because the fix belongs in
    the ERP too. When the ERP lists the corrected address itself, or no longer lists the
    old one, the ERP has caught up and the correction is done.
    """
    if now is not None:  # the customer's own additions and removals: the same rule
        contacts, theirs = with_customer_changes(session, customer, contacts, now=now)
        kept.extend(KeptCorrection(customer.external_id, erp, email) for erp, email in theirs)
    existing = {
        c.email: c
        for c in session.exec(
            select(Contact).where(
                col(Contact.tenant_id) == customer.tenant_id,
                col(Contact.customer_id) == customer.id,
            )
        )
    }
    listed = {parsed.email for parsed in contacts}
    standing_in = {
        c.erp_email: c for c in existing.values() if c.erp_email and c.email not in listed
    }
    changed = False
    for parsed in contacts:
        row = existing.pop(parsed.email, None)
        if row is None and (fix := standing_in.get(parsed.email)) is not None:
            row = existing.pop(fix.email, None)
            if row is not None:
                kept.append(KeptCorrection(customer.external_id, parsed.email, row.email))
        if row is None:
            row = Contact(
                tenant_id=customer.tenant_id, customer_id=row_id(customer), email=parsed.email
            )
            session.add(row)
            changed = True
        values: dict[str, Any] = {"name": parsed.name, "roles": [r.value for r in parsed.roles]}
        if row.email == parsed.email:  # the ERP lists this very address: nothing to stand in
            values.update(erp_email=None, corrected_by=None, corrected_at=None)
        if parsed.send_invoices is not None:
            values["send_invoices"] = parsed.send_invoices
        changed |= assign(row, **values)
    for gone in existing.values():  # the ERP no longer lists them: it is the source of truth
        session.delete(gone)
        changed = True
    return changed


def replace_contact_email(
    session: Session,
    *,
    tenant_id: int,
    customer_id: int,
    old: str,
    new: str,
    now: datetime,
    by: str,
) -> Contact:
    """Correct one contact's address by hand (the AR inbox's "fix the contact" after every
    address bounced): the same contact, name and roles, at ``new``. The caller commits.

    The row remembers the ERP's address (``erp_email``): an import that still lists it keeps
    the correction and says so in its report, until the ERP is fixed too.
    """
    address = parse_addr_spec(new.strip())
    contacts = {
        c.email: c
        for c in session.exec(
            select(Contact).where(
                col(Contact.tenant_id) == tenant_id, col(Contact.customer_id) == customer_id
            )
        )
    }
    row = contacts.get(old)
    if row is None:
        raise NotFoundError(f"the customer has no contact {old!r}")
    if address != old and address in contacts:
        raise DocumentError("new address", f"the customer already has a contact {address}")
    erp_email = row.erp_email or row.email
    row.email = address
    if address == erp_email:  # corrected back to what the ERP says: nothing stands in
        row.erp_email, row.corrected_by, row.corrected_at = None, None, None
    else:
        row.erp_email, row.corrected_by, row.corrected_at = erp_email, by[:200], now
    session.add(row)
    session.flush()
    touch_customer_invoices(session, customer_id, now)  # the scheduler looks again
    return row
