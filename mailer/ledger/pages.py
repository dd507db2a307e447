"""A tenant's ledger records a page at a time (customers, invoices, payments, credit notes),
and one record by its ERP id or number, as plain dicts for the JSON API.

Pages are keyset pages: rows in the order of their row id, the next page starting after the
last id of this one (``after``). Unlike an offset, a page boundary does not move when rows are
added or removed meanwhile, and the database reads one index range however deep the page is.
Every query names the tenant: a record of another tenant is not found, as if it did not exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailer.errors import NotFoundError
from mailer.ledger.models import (
    Contact,
    CreditNote,
    Customer,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentAllocation,
)


@dataclass(frozen=True)
class Page:
    """``items`` in row order; ``last`` is the row id to pass as ``after`` for the next page,
    ``None`` when this page is the last."""

    items: list[dict[str, Any]]
    last: int | None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _page(rows: Sequence[Any], limit: int, shape: Any) -> Page:
    """One more row than asked is read: its presence says whether a next page exists."""
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1][0].id if more and rows else None
    return Page([shape(*row) for row in rows], last)


def customer_json(customer: Customer) -> dict[str, Any]:
    """A customer as the API shows it (its ERP id as ``id``)."""
    return {
        "id": customer.external_id,
        "name": customer.name,
        "locale": customer.locale,
        "time_zone": customer.time_zone,
        "chase": customer.chase,
        "cadence": customer.cadence,
        "statement_schedule": customer.statement_schedule,
        "created_at": _iso(customer.created_at),
        "updated_at": _iso(customer.updated_at),
    }


def invoice_json(invoice: Invoice, customer: str | None = None) -> dict[str, Any]:
    """An invoice as the API shows it: version, status, totals and balance in minor units."""
    found = {
        "id": invoice.external_id,
        "number": invoice.number,
        "version": invoice.version,
        "status": invoice.status.value,
        "currency": invoice.currency,
        "total_minor": invoice.total_minor,
        "balance_minor": invoice.balance_minor,
        "issued_at": _iso(invoice.issued_at),
        "due_at": _iso(invoice.due_at),
        "sent_at": _iso(invoice.sent_at),
    }
    if customer is not None:
        found["customer"] = customer
    return found


def payment_json(payment: Payment, customer: str) -> dict[str, Any]:
    """A payment as the API shows it (its ERP id as ``id``)."""
    return {
        "id": payment.external_id,
        "customer": customer,
        "amount_minor": payment.amount_minor,
        "currency": payment.currency,
        "received_at": _iso(payment.received_at),
        "method": payment.method,
        "receipt_number": payment.receipt_number or payment.external_id,
    }


def credit_note_json(note: CreditNote, customer: str) -> dict[str, Any]:
    """A credit note as the API shows it."""
    return {
        "id": note.external_id,
        "number": note.number,
        "customer": customer,
        "currency": note.currency,
        "amount_minor": note.amount_minor,
        "issued_at": _iso(note.issued_at),
        "reason": note.reason,
        "version": note.version,
    }


def customers_page(session: Session, *, tenant_id: int, after: int | None, limit: int) -> Page:
    """The tenant's customers in row order, ``limit`` after row ``after``."""
    query = select(Customer).where(Customer.tenant_id == tenant_id)
    if after is not None:
        query = query.where(col(Customer.id) > after)
    rows = session.exec(query.order_by(col(Customer.id)).limit(limit + 1)).all()
    return _page([(c,) for c in rows], limit, customer_json)


def invoices_page(
    session: Session,
    *,
    tenant_id: int,
    after: int | None,
    limit: int,
    status: InvoiceStatus | None = None,
    customer: str | None = None,
) -> Page:
    """The tenant's invoices in row order, of one ``status`` and one ``customer`` (ERP id) if
    given."""
    query = (
        select(Invoice, Customer.external_id)
        .join(Customer, col(Customer.id) == col(Invoice.customer_id))
        .where(Invoice.tenant_id == tenant_id)
    )
    if status is not None:
        query = query.where(col(Invoice.status) == status)
    if customer is not None:
        query = query.where(Customer.tenant_id == tenant_id, Customer.external_id == customer)
    if after is not None:
        query = query.where(col(Invoice.id) > after)
    rows = session.exec(query.order_by(col(Invoice.id)).limit(limit + 1)).all()
    return _page(rows, limit, invoice_json)


def payments_page(session: Session, *, tenant_id: int, after: int | None, limit: int) -> Page:
    """The tenant's payments in row order."""
    query = (
        select(Payment, Customer.external_id)
        .join(Customer, col(Customer.id) == col(Payment.customer_id))
        .where(Payment.tenant_id == tenant_id)
    )
    if after is not None:
        query = query.where(col(Payment.id) > after)
    rows = session.exec(query.order_by(col(Payment.id)).limit(limit + 1)).all()
    return _page(rows, limit, payment_json)


def credit_notes_page(session: Session, *, tenant_id: int, after: int | None, limit: int) -> Page:
    """The tenant's credit notes in row order."""
    query = (
        select(CreditNote, Customer.external_id)
        .join(Customer, col(Customer.id) == col(CreditNote.customer_id))
        .where(CreditNote.tenant_id == tenant_id)
    )
    if after is not None:
        query = query.where(col(CreditNote.id) > after)
    rows = session.exec(query.order_by(col(CreditNote.id)).limit(limit + 1)).all()
    return _page(rows, limit, credit_note_json)


def customer(session: Session, *, tenant_id: int, external_id: str) -> dict[str, Any]:
    """One customer with its contacts (NotFoundError for another tenant's or none)."""
    found = session.exec(
        select(Customer).where(Customer.tenant_id == tenant_id, Customer.external_id == external_id)
    ).first()
    if found is None:
        raise NotFoundError(f"no customer {external_id}")
    contacts = session.exec(
        select(Contact).where(Contact.customer_id == found.id).order_by(col(Contact.email))
    ).all()
    return {
        **customer_json(found),
        "contacts": [
            {"email": c.email, "name": c.name, "roles": c.roles, "send_invoices": c.send_invoices}
            for c in contacts
        ],
    }


def payment(session: Session, *, tenant_id: int, external_id: str) -> dict[str, Any]:
    """One payment with its allocations to invoices."""
    row = session.exec(
        select(Payment, Customer.external_id)
        .join(Customer, col(Customer.id) == col(Payment.customer_id))
        .where(Payment.tenant_id == tenant_id, Payment.external_id == external_id)
    ).first()
    if row is None:
        raise NotFoundError(f"no payment {external_id}")
    found, owner = row
    return {**payment_json(found, owner), "allocations": _allocations(session, payment=found.id)}


def credit_note(session: Session, *, tenant_id: int, number: str) -> dict[str, Any]:
    """One credit note by its number, with its lines and allocations to invoices."""
    row = session.exec(
        select(CreditNote, Customer.external_id)
        .join(Customer, col(Customer.id) == col(CreditNote.customer_id))
        .where(CreditNote.tenant_id == tenant_id, CreditNote.number == number)
        .order_by(col(CreditNote.id))
    ).first()
    if row is None:
        raise NotFoundError(f"no credit note {number}")
    found, owner = row
    return {
        **credit_note_json(found, owner),
        "lines": found.lines,
        "allocations": _allocations(session, credit_note=found.id),
    }


def _allocations(
    session: Session, *, payment: int | None = None, credit_note: int | None = None
) -> list[dict[str, Any]]:
    source = (
        col(PaymentAllocation.payment_id) == payment
        if payment is not None
        else col(PaymentAllocation.credit_note_id) == credit_note
    )
    rows = session.exec(
        select(Invoice.number, PaymentAllocation.amount_minor)
        .join(Invoice, col(Invoice.id) == col(PaymentAllocation.invoice_id))
        .where(source)
        .order_by(sa.asc(col(PaymentAllocation.id)))
    ).all()
    return [{"invoice": number, "amount_minor": amount} for number, amount in rows]
