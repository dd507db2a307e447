"""Writing dunning holds: the one module that places a hold, lifts one, and makes the scheduler
look again at what it covers.

A hold is placed by a person (``dunmail hold``), by the import (an active payment plan holds
the invoices it covers) and by the bounce processor (a customer nobody can be reached at).
Each change sets ``next_action_at`` on the invoices it covers, so the next scheduler pass looks
at them at once instead of waiting for their own next step.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col

from mailer.ledger.models import Hold, HoldReason, Invoice, InvoiceStatus


def place(
    session: Session,
    *,
    tenant_id: int,
    customer_id: int,
    reason: HoldReason,
    note: str | None,
    by: str,
    now: datetime,
    invoice_id: int | None = None,
    ends_at: datetime | None = None,
    payment_plan_id: int | None = None,
) -> Hold:
    """A new hold on one invoice (``invoice_id``) or on every invoice of the customer."""
    hold = Hold(
        tenant_id=tenant_id,
        customer_id=customer_id,
        invoice_id=invoice_id,
        reason=reason,
        note=note,
        created_at=now,
        ends_at=ends_at,
        created_by=by,
        payment_plan_id=payment_plan_id,
    )
    session.add(hold)
    touch(session, hold, now)
    return hold


def lift(session: Session, hold: Hold, now: datetime) -> None:
    """End ``hold`` now (once: lifting a lifted hold changes nothing)."""
    if hold.lifted_at is None:
        hold.lifted_at = now
        session.add(hold)
        touch(session, hold, now)


def touch(session: Session, hold: Hold, now: datetime) -> None:
    """Make the scheduler look again at what ``hold`` covers."""
    if hold.invoice_id is not None:
        session.execute(
            sa.update(Invoice).where(col(Invoice.id) == hold.invoice_id).values(next_action_at=now)
        )
    else:
        touch_customer_invoices(session, hold.customer_id, now)


def touch_customer_invoices(session: Session, customer_id: int, now: datetime) -> None:
    """Make the scheduler look again at every open invoice of a customer (one UPDATE)."""
    session.execute(
        sa.update(Invoice)
        .where(
            col(Invoice.customer_id) == customer_id,
            col(Invoice.status) == InvoiceStatus.OPEN,
        )
        .values(next_action_at=now)
    )
