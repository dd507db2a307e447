"""Dunning holds: place, lift, list. A hold pauses reminders, never the invoice email itself.

Placing or lifting a hold sets ``next_action_at`` on the invoices it covers, so the next pass
looks at them at once; a hold's end date is where the pass looks next by itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailer.errors import MailerError, NotFoundError
from mailer.ledger import holds
from mailer.ledger.models import Customer, Hold, HoldReason, Invoice
from mailer.ledger.queries import find_invoice


def place_hold(
    session: Session,
    *,
    tenant_id: int,
    customer: str | None,
    invoice: str | None,
    reason: HoldReason,
    ends_at: datetime | None,
    note: str | None,
    by: str,
    now: datetime,
) -> Hold:
    """Hold one invoice (by number) or every invoice of a customer (by external id)."""
    if (customer is None) == (invoice is None):
        raise MailerError("a hold is on one invoice (--invoice) or one customer (--customer)")
    if ends_at is not None and ends_at <= now:
        raise MailerError(f"the hold would end at {ends_at.isoformat()}, which is not after now")
    target: Invoice | None = None
    if invoice is not None:
        target = find_invoice(session, tenant_id=tenant_id, number=invoice)
        customer_id = target.customer_id
    else:
        row = session.exec(
            select(Customer).where(
                col(Customer.tenant_id) == tenant_id, col(Customer.external_id) == customer
            )
        ).first()
        if row is None:
            raise NotFoundError(f"no customer with id {customer!r}")
        customer_id = row.id or 0
    hold = holds.place(
        session,
        tenant_id=tenant_id,
        customer_id=customer_id,
        invoice_id=target.id if target else None,
        reason=reason,
        note=note,
        by=by,
        now=now,
        ends_at=ends_at,
    )
    session.flush()
    return hold


def lift_hold(session: Session, *, tenant_id: int, hold_id: int, now: datetime) -> Hold:
    hold = session.get(Hold, hold_id)
    if hold is None or hold.tenant_id != tenant_id:  # another tenant's hold does not exist here
        raise NotFoundError(f"no hold {hold_id}")
    holds.lift(session, hold, now)
    return hold


def list_holds(
    session: Session, *, tenant_id: int, now: datetime, active_only: bool
) -> list[dict[str, Any]]:
    query = (
        select(Hold, Customer.external_id, Invoice.number)
        .join(Customer, col(Customer.id) == col(Hold.customer_id))
        .outerjoin(Invoice, col(Invoice.id) == col(Hold.invoice_id))
        .where(col(Hold.tenant_id) == tenant_id)
        .order_by(col(Hold.id).desc())
    )
    if active_only:
        query = query.where(
            col(Hold.lifted_at).is_(None),
            sa.or_(col(Hold.ends_at).is_(None), col(Hold.ends_at) > now),
        )
    return [
        {
            "id": hold.id,
            "customer": customer,
            "invoice": number,
            "reason": hold.reason.value,
            "note": hold.note,
            "since": hold.created_at.isoformat(),
            "until": hold.ends_at.isoformat() if hold.ends_at else None,
            "lifted_at": hold.lifted_at.isoformat() if hold.lifted_at else None,
            "by": hold.created_by,
        }
        for hold, customer, number in session.exec(query).all()
    ]
