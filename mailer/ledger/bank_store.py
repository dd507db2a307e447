"""SERVICE: the bank_line rows, and the ledger around a statement line that matching reads.

Every query is scoped to one tenant: a reference, an IBAN or a name never reaches another
tenant's customers, even when another tenant's reference is quoted.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session, col, select

from mailer.ledger.bank_matching import (
    CustomerView,
    InvoiceView,
    MatchContext,
    name_key,
    references_of,
    similar_keys,
)
from mailer.ledger.bank_models import BankLine, BankLineStatus
from mailer.ledger.bank_statement import Direction, StatementLine
from mailer.ledger.models import Customer, Invoice, InvoiceStatus, Payment
from mailer.ledger.references import ReferenceKind


def find_line(session: Session, tenant_id: int, line: StatementLine) -> BankLine | None:
    """The stored row of ``line``, if a statement holding it was imported before."""
    return session.exec(
        select(BankLine).where(
            col(BankLine.tenant_id) == tenant_id,
            col(BankLine.account) == line.account,
            col(BankLine.entry_ref) == line.entry_ref[:140],
            col(BankLine.booked_on) == line.booked_on,
            col(BankLine.amount_minor) == line.amount_minor,
            col(BankLine.direction) == line.direction.value,
        )
    ).first()


class CustomerNames:
    """A tenant's customers by name key, read once per import: matching a debtor's name is
    then a dictionary look-up, and "similar" a pass over the keys, not a query per line."""

    def __init__(self, session: Session, tenant_id: int) -> None:
        rows = session.exec(
            select(Customer.id, Customer.name).where(col(Customer.tenant_id) == tenant_id)
        ).all()
        self.by_key: dict[str, set[int]] = {}
        for customer_id, name in rows:
            self.by_key.setdefault(name_key(name), set()).add(int(customer_id or 0))

    def exact(self, name: str | None) -> frozenset[int]:
        return frozenset(self.by_key.get(name_key(name), ())) if name else frozenset()

    def similar(self, name: str | None) -> frozenset[int]:
        if not name:
            return frozenset()
        keys = similar_keys(name_key(name), self.by_key.keys())
        return frozenset(i for k in keys for i in self.by_key[k])


def load_context(
    session: Session, tenant_id: int, line: StatementLine, names: CustomerNames
) -> MatchContext:
    """The invoices and customers ``line`` may concern (bank_matching.MatchContext)."""
    refs, _ = references_of(line)
    ours = [r for r in refs if r.tenant_id == tenant_id]
    invoice_ids = {r.id for r in ours if r.kind is ReferenceKind.INVOICE}
    customer_ids = {r.id for r in ours if r.kind is ReferenceKind.CUSTOMER}
    by_iban: frozenset[int] = frozenset()
    by_name: frozenset[int] = frozenset()
    similar: frozenset[int] = frozenset()
    if not ours:
        by_iban = _customers_of_iban(session, tenant_id, line.debtor_iban)
        by_name = names.exact(line.debtor_name)
        if not by_iban and not by_name:  # a similar name only when nothing surer is known
            similar = names.similar(line.debtor_name)
        customer_ids |= by_iban | by_name | similar
    customers = {
        int(c.id or 0): CustomerView(int(c.id or 0), c.name)
        for c in session.exec(
            select(Customer).where(
                col(Customer.tenant_id) == tenant_id, col(Customer.id).in_(customer_ids)
            )
        )
    }
    query = select(Invoice).where(col(Invoice.tenant_id) == tenant_id)
    wanted = col(Invoice.id).in_(invoice_ids) | (
        col(Invoice.customer_id).in_(list(customers)) & (col(Invoice.status) == InvoiceStatus.OPEN)
    )
    invoices = {int(i.id or 0): _view(i) for i in session.exec(query.where(wanted))}
    return MatchContext(
        tenant_id=tenant_id,
        invoices=invoices,
        customers=customers,
        by_iban=by_iban,
        by_name=by_name,
        similar_name=similar,
    )


def earlier_credit(session: Session, tenant_id: int, line: StatementLine) -> BankLine | None:
    """The credit a returned transfer gives back: same amount and currency, and the same
    end-to-end id, else from the IBAN the money now goes back to; the latest such one."""
    query = select(BankLine).where(
        col(BankLine.tenant_id) == tenant_id,
        col(BankLine.direction) == Direction.CREDIT.value,
        col(BankLine.amount_minor) == line.amount_minor,
        col(BankLine.currency) == line.currency,
        col(BankLine.booked_on) <= line.booked_on,
    )
    if line.end_to_end_id:
        query = query.where(col(BankLine.end_to_end_id) == line.end_to_end_id)
    elif line.debtor_iban:
        query = query.where(col(BankLine.debtor_iban) == line.debtor_iban)
    else:
        return None
    return session.exec(
        query.order_by(col(BankLine.booked_on).desc(), col(BankLine.id).desc())
    ).first()


def payment_id(session: Session, tenant_id: int, external_id: str) -> int | None:
    return session.exec(
        select(Payment.id).where(
            col(Payment.tenant_id) == tenant_id, col(Payment.external_id) == external_id
        )
    ).first()


def queue(session: Session, tenant_id: int, statuses: Iterable[BankLineStatus]) -> list[BankLine]:
    """The tenant's lines in these states, oldest booking first (the clerk's AR inbox queue)."""
    return list(
        session.exec(
            select(BankLine)
            .where(col(BankLine.tenant_id) == tenant_id, col(BankLine.status).in_(list(statuses)))
            .order_by(col(BankLine.booked_on), col(BankLine.id))
        )
    )


def _customers_of_iban(session: Session, tenant_id: int, iban: str | None) -> frozenset[int]:
    if not iban:
        return frozenset()
    rows = session.exec(
        select(BankLine.customer_id)
        .where(
            col(BankLine.tenant_id) == tenant_id,
            col(BankLine.debtor_iban) == iban,
            col(BankLine.status) == BankLineStatus.MATCHED,
            col(BankLine.customer_id).is_not(None),
        )
        .distinct()
    ).all()
    return frozenset(int(r) for r in rows if r is not None)


def _view(invoice: Invoice) -> InvoiceView:
    return InvoiceView(
        id=int(invoice.id or 0),
        customer_id=invoice.customer_id,
        number=invoice.number,
        currency=invoice.currency,
        balance_minor=invoice.balance_minor,
        status=invoice.status.value,
        due_at=invoice.due_at,
    )
