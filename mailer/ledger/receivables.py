"""SERVICE: the ledger's own import sections: customers with their contacts, invoices,
credit notes and payments, each upserted (``mailer.ledger.upsert``) with the events it calls for.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from mailer.content.event_context import credit_note_context, payment_context
from mailer.content.kinds import Kind
from mailer.errors import DocumentError
from mailer.ledger.contacts import KeptCorrection, sync_contacts
from mailer.ledger.eventlog import EventLog, EventSpec, assign
from mailer.ledger.grace import grace_ends
from mailer.ledger.holds import touch_customer_invoices
from mailer.ledger.models import (
    CreditNote,
    Customer,
    Invoice,
    Payment,
)
from mailer.ledger.parsed import (
    ParsedCreditNote,
    ParsedCustomer,
    ParsedInvoice,
    ParsedPayment,
)
from mailer.ledger.settlement import Settlement, Want, settled_status
from mailer.ledger.upsert import Outcome, row_id


class LedgerImport(Settlement):
    """The ledger's own sections of one import (customers, invoices, credit notes, payments),
    and the scope (one tenant, one ``now``) billing's and agreements' sections run in."""

    def __init__(
        self,
        session: Session,
        tenant_id: int,
        now: datetime,
        cadences: Collection[str] | None = None,
        *,
        grace: timedelta = timedelta(minutes=5),
        notice_max_age: timedelta | None = None,
    ) -> None:
        events = EventLog(session, tenant_id, now, max_age=notice_max_age)
        super().__init__(session, tenant_id, now, events)
        self.cadences = cadences
        self.grace = grace
        self._zones: dict[str, str | None] = {}
        self.corrections_kept: list[KeptCorrection] = []

    # -- lookups ---------------------------------------------------------------------------

    def zone_of(self, external_id: str) -> str | None:
        """A ledger customer's time zone, for dates of records whose customer is not in the doc."""
        if external_id not in self._zones:
            customer = self.find(Customer, external_id)
            self._zones[external_id] = customer.time_zone if customer else None
        return self._zones[external_id]

    def payment_customer(self, external_id: str) -> str | None:
        """The customer (external id) of a ledger payment: a refund's dates are in its zone."""
        query = (
            select(Customer.external_id)
            .join(Payment, col(Payment.customer_id) == col(Customer.id))
            .where(
                col(Payment.tenant_id) == self.tenant_id, col(Payment.external_id) == external_id
            )
        )
        return self.session.exec(query).first()

    # -- customers -------------------------------------------------------------------------

    def customer(self, rec: ParsedCustomer) -> Outcome:
        values: dict[str, Any] = {"name": rec.name, "locale": rec.locale}
        values["time_zone"] = rec.time_zone
        if rec.chase is not None:
            values["chase"] = rec.chase
        if rec.cadence is not None:
            if rec.cadence and self.cadences is not None and rec.cadence not in self.cadences:
                raise DocumentError(
                    f"{rec.where}.cadence",
                    f"unknown cadence {rec.cadence!r}; this tenant has "
                    f"{', '.join(sorted(self.cadences)) or 'none'}",
                )
            values["cadence"] = rec.cadence or None
        if rec.statements is not None:
            values["statement_schedule"] = rec.statements or None
        if rec.billing_address is not None:
            values["billing_address"] = list(rec.billing_address) or None
        if rec.tax_id is not None:
            values["tax_id"] = rec.tax_id or None

        def rescheduled(row: Customer) -> None:
            if values.get("statement_schedule", row.statement_schedule) != row.statement_schedule:
                values["next_statement_at"] = None  # the statement pass schedules it anew
            if row.chosen_locale is not None and rec.locale != row.locale:
                # The customer's language stood in for the ERP's; the ERP now says another.
                values["chosen_locale"] = None

        upserted = self.upsert(Customer, rec.external_id, values, before_update=rescheduled)
        row, outcome = upserted.row, upserted.outcome
        self.session.flush()
        if rec.contacts is not None and sync_contacts(
            self.session, row, rec.contacts, self.corrections_kept, now=self.now
        ):
            outcome = "updated" if outcome == "unchanged" else outcome
        if outcome == "updated":
            row.updated_at = self.now
            # Zone, cadence, chase switch or contacts changed: the scheduler looks again.
            touch_customer_invoices(self.session, row_id(row), self.now)
        return outcome

    # -- invoices --------------------------------------------------------------------------

    def invoice(self, rec: ParsedInvoice) -> Outcome:
        customer = self.ref(Customer, rec.customer, f"{rec.where}.customer")
        self.claim_number(Invoice, rec.number, rec.where, rec.external_id)
        content: dict[str, Any] = {
            "customer_id": customer.id,
            "number": rec.number,
            "currency": rec.currency,
            "issued_at": rec.issued_at,
            "due_at": rec.due_at,
            "lines": [line.as_json() for line in rec.lines],
            "total_minor": rec.total_minor,
            "tax_minor": rec.tax_minor,
            "content_hash": rec.content_hash,
        }

        def same_currency(row: Invoice) -> None:
            if row.currency != rec.currency and self._allocated(row.id):
                raise DocumentError(
                    f"{rec.where}.currency",
                    "cannot change: payments or credit notes are allocated to this invoice",
                )

        upserted = self.upsert(
            Invoice,
            rec.external_id,
            content,
            new={"status": rec.status},
            versioned=True,
            before_update=same_currency,
        )
        row, outcome = upserted.row, upserted.outcome
        self._declared[row_id(row)] = rec.status
        balance = row.total_minor - self._allocated(row_id(row))
        if assign(row, balance_minor=balance, status=settled_status(rec.status, balance)):
            outcome = "updated" if outcome == "unchanged" else outcome
        if outcome != "unchanged":
            row.updated_at = self.now
            row.next_action_at = self.now
        return outcome

    # -- credit notes ----------------------------------------------------------------------

    def credit_note(self, rec: ParsedCreditNote) -> Outcome:
        customer = self.ref(Customer, rec.customer, f"{rec.where}.customer")
        wanted = []
        if rec.invoice is not None:
            at = f"{rec.where}.invoice"
            wanted.append(Want(self.ref(Invoice, rec.invoice, at), rec.amount_minor, at, at))
        values: dict[str, Any] = {
            "customer_id": customer.id,
            "number": rec.number,
            "currency": rec.currency,
            "amount_minor": rec.amount_minor,
            "issued_at": rec.issued_at,
            "lines": [line.as_json() for line in rec.lines],
            "reason": rec.reason,
        }
        upserted = self.upsert(CreditNote, rec.external_id, values)
        row, created = upserted.row, upserted.created
        outcome = self._settle(upserted, wanted, customer=customer, credit_note_id=row.id)
        if outcome == "unchanged":
            return outcome
        if outcome == "updated":
            row.version += 1  # its PDF is a new document version
        invoice = wanted[0].invoice if wanted else None
        spec = EventSpec(
            kind=Kind.CREDIT_NOTE,
            key=f"credit_note:{row.external_id}",
            customer_id=row_id(customer),
            document=f"credit_note:{row_id(row)}",
            context=credit_note_context(row, invoice.number if invoice else None),
            # Like a new invoice: sent once the ERP has stopped editing it for a grace period.
            due_at=grace_ends(self.now, self.grace, issued_at=row.issued_at),
            version=row.version,
            invoice_id=row_id(invoice) if invoice else None,
            happened_at=row.issued_at,
        )
        self.events.announce(spec, new=created, restart=True)
        return outcome

    # -- payments --------------------------------------------------------------------------

    def payment(self, rec: ParsedPayment) -> Outcome:
        customer = self.ref(Customer, rec.customer, f"{rec.where}.customer")
        wanted = [
            Want(
                self.ref(Invoice, a.invoice, f"{a.where}.invoice"),
                a.amount_minor,
                f"{a.where}.invoice",
                f"{a.where}.amount",
            )
            for a in rec.allocations
        ]
        values: dict[str, Any] = {
            "customer_id": customer.id,
            "amount_minor": rec.amount_minor,
            "currency": rec.currency,
            "received_at": rec.received_at,
            "method": rec.method,
            "receipt_number": rec.receipt_number,
        }
        upserted = self.upsert(Payment, rec.external_id, values)
        row, created = upserted.row, upserted.created
        outcome = self._settle(upserted, wanted, customer=customer, payment_id=row.id)
        if outcome == "unchanged":
            return outcome
        only = wanted[0].invoice if len(wanted) == 1 else None
        spec = EventSpec(
            kind=Kind.PAYMENT_RECEIPT,
            key=f"payment:{row.external_id}",
            customer_id=row_id(customer),
            document=f"payment:{row_id(row)}",
            context=payment_context(row, [(w.invoice, w.amount_minor) for w in wanted]),
            due_at=self.now,  # a receipt goes at once
            invoice_id=row_id(only) if only else None,
            happened_at=row.received_at,
        )
        self.events.announce(spec, new=created)
        return outcome
