"""SERVICE: what payments and credit notes settle: allocations, balances, paid invoices.

A payment or credit note names the invoices it settles; re-importing it replaces its allocations
wholesale, and every invoice whose allocations changed gets its balance and status again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailer.errors import DocumentError
from mailer.ledger.eventlog import EventLog, assign
from mailer.ledger.models import (
    CreditNote,
    Customer,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentAllocation,
)
from mailer.ledger.money import from_minor
from mailer.ledger.upsert import LedgerScope, Outcome, Upserted, row_id

_UNPAYABLE = (InvoiceStatus.DRAFT, InvoiceStatus.VOID)


class Want(NamedTuple):
    """One allocation a document asks for, with where to report each kind of refusal."""

    invoice: Invoice
    amount_minor: int
    invoice_where: str
    amount_where: str


class Settlement(LedgerScope):
    """The allocation side of an import: one tenant's payments and credit notes against its
    invoices, and the status each invoice was given by the document being imported."""

    def __init__(self, session: Session, tenant_id: int, now: datetime, events: EventLog) -> None:
        super().__init__(session, tenant_id, now, events)
        self._declared: dict[int, InvoiceStatus] = {}  # invoice id -> status the ERP sent now

    def _allocated(self, invoice_id: int | None) -> int:
        """How much of an invoice payments and credit notes settle, pending rows included."""
        query = sa.select(sa.func.coalesce(sa.func.sum(PaymentAllocation.amount_minor), 0)).where(
            col(PaymentAllocation.tenant_id) == self.tenant_id,
            col(PaymentAllocation.invoice_id) == invoice_id,
        )
        return int(self.session.scalar(query) or 0)

    def _allocations(self, **owner: int | None) -> list[PaymentAllocation]:
        query = select(PaymentAllocation).where(
            col(PaymentAllocation.tenant_id) == self.tenant_id,
            *(getattr(PaymentAllocation, k) == v for k, v in owner.items()),
        )
        return list(self.session.exec(query).all())

    def _rebalance(self, invoice_ids: Iterable[int]) -> None:
        """Recompute balances after allocations changed; an open invoice at zero becomes paid.

        A paid invoice only re-opens when this document declared it open: the ledger cannot tell
        a "paid" the ERP sent (perhaps after a write-off) from one it derived itself.
        """
        self.session.flush()
        for invoice_id in set(invoice_ids):
            invoice = self.session.get_one(Invoice, invoice_id)
            balance = invoice.total_minor - self._allocated(invoice_id)
            declared = self._declared.get(invoice_id, invoice.status)
            status = invoice.status
            if (
                status in (InvoiceStatus.OPEN, InvoiceStatus.PAID)
                and declared is InvoiceStatus.OPEN
            ):
                status = settled_status(declared, balance)
            elif status is InvoiceStatus.OPEN:
                status = settled_status(status, balance)
            if assign(invoice, balance_minor=balance, status=status):
                invoice.updated_at = self.now
                invoice.next_action_at = self.now

    def _check_target(
        self, invoice: Invoice, *, customer: Customer, row: Payment | CreditNote, where: str
    ) -> None:
        """May ``row`` settle ``invoice``: same customer, same currency, and an invoice sent?"""
        currency = row.currency
        if invoice.customer_id != customer.id:
            raise DocumentError(
                where, f"invoice {invoice.external_id!r} belongs to another customer"
            )
        if invoice.currency != currency:
            raise DocumentError(
                where, f"invoice {invoice.external_id!r} is in {invoice.currency}, not {currency}"
            )
        if invoice.status in _UNPAYABLE:
            raise DocumentError(where, f"invoice {invoice.external_id!r} is {invoice.status.value}")

    def _allocate(
        self, invoice: Invoice, amount_minor: int, *, where: str, **owner: int | None
    ) -> None:
        open_minor = invoice.total_minor - self._allocated(invoice.id)
        if amount_minor > open_minor:
            cur = invoice.currency
            raise DocumentError(
                where,
                f"{from_minor(amount_minor, cur)} {cur} is more than the "
                f"{from_minor(max(open_minor, 0), cur)} {cur} still open on invoice "
                f"{invoice.external_id!r}",
            )
        self.session.add(
            PaymentAllocation(
                tenant_id=self.tenant_id,
                invoice_id=row_id(invoice),
                amount_minor=amount_minor,
                **owner,
            )
        )
        self.session.flush()

    def _settle(
        self,
        upserted: Upserted[Payment] | Upserted[CreditNote],
        wanted: list[Want],
        *,
        customer: Customer,
        **owner: int | None,
    ) -> Outcome:
        """Replace the allocations of a payment or credit note just upserted with ``wanted``.

        Nothing is checked when nothing changed, so re-importing a payment whose invoice was
        voided since stays "unchanged" instead of failing on data the ledger already holds.
        """
        old = self._allocations(**owner)
        same = sorted((a.invoice_id, a.amount_minor) for a in old) == sorted(
            (row_id(w.invoice), w.amount_minor) for w in wanted
        )
        row = upserted.row
        if upserted.outcome == "unchanged" and same:
            return "unchanged"
        for want in wanted:
            self._check_target(want.invoice, customer=customer, row=row, where=want.invoice_where)
        if not same:
            touched = self._release(old)  # allocations are replaced wholesale on re-import
            for want in wanted:
                self._allocate(want.invoice, want.amount_minor, where=want.amount_where, **owner)
                touched.append(row_id(want.invoice))
            self._rebalance(i for i in touched if i is not None)
        return "created" if upserted.created else "updated"

    def _release(self, allocations: list[PaymentAllocation]) -> list[int | None]:
        for allocation in allocations:
            self.session.delete(allocation)
        self.session.flush()
        return [a.invoice_id for a in allocations]


def settled_status(status: InvoiceStatus, balance_minor: int) -> InvoiceStatus:
    """An open invoice with nothing left to pay is paid; draft, void and paid stay as they are."""
    if status is InvoiceStatus.OPEN and balance_minor <= 0:
        return InvoiceStatus.PAID
    return status
