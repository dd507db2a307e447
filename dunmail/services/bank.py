"""Bank statements in: matched credits become payments, the rest a queue for the AR clerk.

One part of :class:`dunmail.app.Services`. Reading a file is ``mailer.ledger.bank_statement``,
deciding what a line pays ``mailer.ledger.bank_matching``; a matched line becomes a payment
through the ERP import's own path (``LedgerService.import_into`` with a ``payments`` record),
so its receipt is sent and its invoices stop being chased exactly as for a payment the ERP
imported. Every line is stored in ``bank_line`` under the bank's key, so importing a statement
again changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from dunmail.services.ledger import LedgerService
from mailer.clock import Clock
from mailer.db import session_scope
from mailer.errors import DocumentError, MailerError, NotFoundError
from mailer.ledger import bank_store
from mailer.ledger.bank_matching import Decision, plan_match
from mailer.ledger.bank_models import BankLine, BankLineStatus
from mailer.ledger.bank_statement import (
    Direction,
    StatementError,
    StatementLine,
    parse_statement,
)
from mailer.ledger.importlock import BatchCommits, ImportLocks
from mailer.ledger.models import Customer, Invoice, InvoiceStatus
from mailer.ledger.money import from_minor
from mailer.tenants import Tenants

_METHOD = "Bank transfer"


@dataclass
class BankImportReport:
    """What one statement import did: counts, and each line with what became of it."""

    matched: int = 0
    unmatched: int = 0
    ignored: int = 0
    already_imported: int = 0
    lines: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.matched} matched, {self.unmatched} unmatched (in the queue), "
            f"{self.ignored} ignored, {self.already_imported} already imported"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "matched": self.matched,
            "unmatched": self.unmatched,
            "ignored": self.ignored,
            "already_imported": self.already_imported,
            "lines": self.lines,
        }


class BankService:
    """Imports bank statements of a tenant and works its queue of unmatched lines."""

    def __init__(
        self, engine: Engine, *, clock: Clock, tenants: Tenants, ledger: LedgerService
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.tenants = tenants
        self.ledger = ledger

    def import_statement(self, data: bytes, *, tenant: str | None) -> BankImportReport:
        """Read a camt.053/camt.054/MT940 file and match, record and queue each new line.

        Holds the tenant's import lock (an ERP import and a statement import allocate the same
        invoices) and commits in short batches like the ERP import (mailer/ledger/importlock.py),
        so the running engine keeps its turn at SQLite's one write lock. Each line is committed
        with its payment, so an import that dies is completed by running it again.
        """
        tenant_id = self.tenants.id(tenant)
        try:
            lines = parse_statement(data)
        except StatementError as exc:
            raise DocumentError("statement", str(exc)) from None
        self._check_account(tenant_id, lines)
        report = BankImportReport()
        db = self.ledger.config.database
        locks = ImportLocks(self.engine, lease=timedelta(seconds=db.import_lock_lease_seconds))
        with locks.held(tenant_id, wait=0.0) as lease, session_scope(self.engine) as session:
            commits = BatchCommits(
                session,
                renew=lambda: locks.renew(session, lease),
                records=db.import_batch_records,
                seconds=db.import_batch_seconds,
                pause_ratio=db.import_pause_ratio if self.engine.dialect.name == "sqlite" else 0,
            )
            names = bank_store.CustomerNames(session, tenant_id)
            for line in lines:
                if bank_store.find_line(session, tenant_id, line) is not None:
                    report.already_imported += 1
                    continue
                row = self._record(session, tenant_id, line, names)
                setattr(report, row.status.value, getattr(report, row.status.value) + 1)
                report.lines.append(_public(row))
                commits.step()
            commits.commit()
        return report

    def queue(self, *, tenant: str | None, everything: bool = False) -> list[dict[str, Any]]:
        """The unmatched lines, oldest first (``everything``: every line imported)."""
        tenant_id = self.tenants.id(tenant)
        states = list(BankLineStatus) if everything else [BankLineStatus.UNMATCHED]
        with session_scope(self.engine) as session:
            return [_public(r) for r in bank_store.queue(session, tenant_id, states)]

    def allocate(
        self, line_id: int, numbers: Sequence[str], *, tenant: str | None, by: str
    ) -> dict[str, Any]:
        """A clerk's decision: an unmatched credit pays these invoices (in this order, each up
        to its balance; the rest is credit on account), through the same payment path."""
        tenant_id = self.tenants.id(tenant)
        if not numbers:
            raise MailerError("name at least one invoice number")
        with session_scope(self.engine) as session:
            row = self._queued(session, tenant_id, line_id)
            invoices = [_invoice(session, tenant_id, n) for n in numbers]
            customers = {i.customer_id for i in invoices}
            if len(customers) > 1:
                raise MailerError("the invoices belong to more than one customer")
            left, allocations = row.amount_minor, []
            for invoice in invoices:
                if invoice.currency != row.currency:
                    raise MailerError(
                        f"invoice {invoice.number} is in {invoice.currency}, "
                        f"bank line {line_id} in {row.currency}"
                    )
                if invoice.status is not InvoiceStatus.OPEN or invoice.balance_minor <= 0:
                    raise MailerError(f"invoice {invoice.number} is {invoice.status.value}")
                take = min(left, invoice.balance_minor)
                if take:
                    allocations.append((int(invoice.id or 0), take))
                    left -= take
            decision = Decision(
                BankLineStatus.MATCHED,
                f"allocated by hand by {by} ({', '.join(numbers)})",
                customer_id=customers.pop(),
                allocations=tuple(allocations),
                credit_minor=left,
            )
            self._pay(session, tenant_id, row, decision)
            if row.status is not BankLineStatus.MATCHED:
                raise MailerError(f"bank line {line_id}: {row.reason}")  # rolled back
            row.resolved_by = by[:200]
            return _public(row)

    def ignore(self, line_id: int, *, tenant: str | None, by: str, note: str) -> dict[str, Any]:
        """Take a line out of the queue without a payment (not a customer's money)."""
        tenant_id = self.tenants.id(tenant)
        with session_scope(self.engine) as session:
            row = self._queued(session, tenant_id, line_id, credits_only=False)
            row.status = BankLineStatus.IGNORED
            row.reason = f"ignored by {by}: {note}"[:300]
            row.resolved_by = by[:200]
            return _public(row)

    # -- inside one import ---------------------------------------------------------------------

    def _record(
        self, session: Session, tenant_id: int, line: StatementLine, names: bank_store.CustomerNames
    ) -> BankLine:
        ctx = bank_store.load_context(session, tenant_id, line, names)
        decision = plan_match(line, ctx)
        row = BankLine(
            tenant_id=tenant_id,
            account=line.account[:70],
            entry_ref=line.entry_ref[:140],
            booked_on=line.booked_on,
            amount_minor=line.amount_minor,
            currency=line.currency,
            direction=line.direction.value,
            reversal=line.reversal,
            reference=decision.reference,
            remittance=line.remittance[:1000],
            debtor_name=line.debtor_name,
            debtor_iban=(line.debtor_iban or None) and line.debtor_iban[:34],
            end_to_end_id=(line.end_to_end_id or None) and line.end_to_end_id[:35],
            source=line.source,
            # MATCHED only once the payment is recorded (_pay)
            status=BankLineStatus.UNMATCHED
            if decision.status is BankLineStatus.MATCHED
            else decision.status,
            reason=decision.reason,
            confidence=decision.confidence.value if decision.confidence else None,
            customer_id=decision.customer_id,
            imported_at=self.clock.now(),
        )
        if (line.direction is Direction.DEBIT or line.reversal) and (
            decision.status is BankLineStatus.UNMATCHED
        ):
            earlier = bank_store.earlier_credit(session, tenant_id, line)
            if earlier is not None:
                row.customer_id = earlier.customer_id
                paid = f", payment BT-{earlier.id}" if earlier.payment_id else ""
                row.reason = f"{decision.reason}: gives back bank line {earlier.id}{paid}"[:300]
        session.add(row)
        session.flush()
        if decision.status is BankLineStatus.MATCHED:
            self._pay(session, tenant_id, row, decision)
        return row

    def _pay(self, session: Session, tenant_id: int, row: BankLine, decision: Decision) -> None:
        """Record the payment as the ERP import would (receipt, balances, reminders)."""
        customer = session.get_one(Customer, decision.customer_id)
        external_id = f"BT-{row.id}"
        record = {
            "id": external_id,
            "customer": customer.external_id,
            "amount": str(from_minor(row.amount_minor, row.currency)),
            "currency": row.currency,
            "received_at": row.booked_on.isoformat(),
            "method": _METHOD,
            "invoices": [
                {
                    "invoice": session.get_one(Invoice, invoice_id).external_id,
                    "amount": str(from_minor(amount, row.currency)),
                }
                for invoice_id, amount in decision.allocations
            ],
        }
        with session.begin_nested():
            result = self.ledger.import_into(session, {"payments": [record]}, tenant_id=tenant_id)
        if result.errors:
            row.status = BankLineStatus.UNMATCHED
            row.reason = f"could not record the payment: {result.errors[0].reason}"[:300]
            return
        row.status = BankLineStatus.MATCHED
        row.reason = decision.reason[:300]
        row.customer_id = decision.customer_id
        row.credit_minor = decision.credit_minor
        row.payment_id = bank_store.payment_id(session, tenant_id, external_id)

    def _queued(
        self, session: Session, tenant_id: int, line_id: int, *, credits_only: bool = True
    ) -> BankLine:
        row = session.exec(
            select(BankLine).where(
                col(BankLine.tenant_id) == tenant_id, col(BankLine.id) == line_id
            )
        ).first()
        if row is None:
            raise NotFoundError(f"no bank line {line_id}")
        if row.status is not BankLineStatus.UNMATCHED:
            raise MailerError(f"bank line {line_id} is {row.status.value}, not in the queue")
        if credits_only and (row.direction != Direction.CREDIT.value or row.reversal):
            raise MailerError(
                f"bank line {line_id} is money out or a reversal: nothing to allocate"
            )
        return row

    def _check_account(self, tenant_id: int, lines: Sequence[StatementLine]) -> None:
        """A statement of another account than the tenant's own ``[bank] iban`` is refused:
        its credits are some other business's money."""
        slug, config = self.tenants.config(tenant_id)
        if config.bank is None:
            return
        for line in lines:
            if line.account[:2].isalpha() and line.account != config.bank.iban:
                raise DocumentError(
                    "statement",
                    f"account {line.account} is not tenant {slug}'s [bank] iban",
                )


def _invoice(session: Session, tenant_id: int, number: str) -> Invoice:
    invoice = session.exec(
        select(Invoice).where(col(Invoice.tenant_id) == tenant_id, col(Invoice.number) == number)
    ).first()
    if invoice is None:
        raise NotFoundError(f"no invoice numbered {number!r}")
    return invoice


def _public(row: BankLine) -> dict[str, Any]:
    """A line as the CLI and the JSON output show it."""
    return {
        "id": row.id,
        "booked_on": row.booked_on.isoformat(),
        "amount": str(from_minor(row.amount_minor, row.currency)),
        "currency": row.currency,
        "direction": row.direction,
        "status": row.status.value,
        "confidence": row.confidence,
        "reason": row.reason,
        "debtor": row.debtor_name,
        "debtor_iban": row.debtor_iban,
        "remittance": row.remittance,
        "reference": row.reference,
        "payment": f"BT-{row.id}" if row.payment_id else None,
        "credit_on_account": str(from_minor(row.credit_minor, row.currency)),
    }
