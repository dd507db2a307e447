"""SERVICE: the import sections that ask for the customer's agreement: estimates, payment plans.

Run by ``mailer.ledger.imports`` like ``mailer.ledger.billing``'s sections (each record in its
SAVEPOINT, upserted by ``mailer.ledger.upsert``), after the invoices a plan covers and the
payments and credit notes that settle them. Each version of an estimate that is ``sent`` is
emailed once, ``grace`` after the ERP's last edit; so is a proposed payment plan. An active plan
puts each invoice it covers on a dunning hold (one ``Hold`` per invoice,
``Hold.payment_plan_id``); when it ends or drops an invoice, the hold is lifted and chasing
resumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlmodel import col, select

from mailer.content.event_context import estimate_context, payment_plan_context
from mailer.content.kinds import Kind
from mailer.errors import DocumentError
from mailer.ledger import holds
from mailer.ledger.eventlog import EventSpec, assign
from mailer.ledger.grace import grace_ends
from mailer.ledger.models import (
    Customer,
    Estimate,
    EstimateStatus,
    Hold,
    HoldReason,
    Invoice,
    InvoiceStatus,
    PaymentPlan,
    PaymentPlanStatus,
)
from mailer.ledger.parsed import ParsedEstimate, ParsedPaymentPlan
from mailer.ledger.upsert import LedgerScope, Outcome, Section, row_id

# A plan still to be kept may not cover an invoice that is not owed (void) or not yet sent.
_LIVE_PLANS = (PaymentPlanStatus.PROPOSED, PaymentPlanStatus.ACTIVE)
_UNOWED = (InvoiceStatus.DRAFT, InvoiceStatus.VOID)
# Why a waiting estimate email is retired, by the status the estimate moved to.
_BEFORE_SENT = {
    EstimateStatus.DRAFT: "went back to draft",
    EstimateStatus.ACCEPTED: "was accepted",
    EstimateStatus.DECLINED: "was declined",
    EstimateStatus.EXPIRED: "expired",
}


class AgreementImport(Section):
    """Estimates and payment plans, applied within one ledger import.

    ``grace`` is how long after the last edit a sent estimate or a proposed plan is emailed,
    as for a new invoice or a credit note.
    """

    def __init__(self, scope: LedgerScope, *, grace: timedelta) -> None:
        super().__init__(scope)
        self.grace = grace

    # -- estimates -------------------------------------------------------------------------

    def estimate(self, rec: ParsedEstimate) -> Outcome:
        customer = self.scope.ref(Customer, rec.customer, f"{rec.where}.customer")
        self.scope.claim_number(Estimate, rec.number, rec.where, rec.external_id)
        content: dict[str, Any] = {
            "customer_id": row_id(customer),
            "number": rec.number,
            "currency": rec.currency,
            "issued_at": rec.issued_at,
            "valid_until": rec.valid_until,
            "lines": [line.as_json() for line in rec.lines],
            "total_minor": rec.total_minor,
            "tax_minor": rec.tax_minor,
            "content_hash": rec.content_hash,
        }
        # A new content hash is a new document version: its own email and its own PDF.
        upserted = self.scope.upsert(
            Estimate, rec.external_id, content, new={"status": rec.status}, versioned=True
        )
        row, outcome = upserted.row, upserted.outcome
        if assign(row, status=rec.status) and outcome == "unchanged":
            outcome = "updated"
        if outcome == "unchanged":
            return outcome
        row.updated_at = self.now
        self.session.flush()
        self._estimate_event(row, customer)
        return outcome

    def _estimate_event(self, row: Estimate, customer: Customer) -> None:
        """One email per version that is ``sent``; an edit while it waits replaces it.

        The key names the version (``estimate:E-1:v2``), so a revision of an estimate already
        emailed is emailed again, while re-importing the same version never is. An estimate
        that is no longer ``sent`` when its email is still waiting retires it, with a note.
        """
        document = f"estimate:{row_id(row)}"
        pending = self.events.pending(kind=Kind.ESTIMATE, document=document)
        if row.status is not EstimateStatus.SENT:
            for event in pending:
                self.events.skip(
                    event, f"the estimate {_BEFORE_SENT[row.status]} before it was sent"
                )
            return
        spec = EventSpec(
            kind=Kind.ESTIMATE,
            key=f"estimate:{row.external_id}:v{row.version}",
            customer_id=row_id(customer),
            document=document,
            context=estimate_context(row),
            # Like a new invoice: sent once the ERP has stopped editing it for a grace period.
            due_at=grace_ends(self.now, self.grace, issued_at=row.issued_at),
            version=row.version,
        )
        if not pending:
            self.events.record(spec)
            return
        self.events.revise(pending[0], spec, restart=True)
        for extra in pending[1:]:  # never more than one; kept from sending twice if there were
            self.events.skip(extra, f"replaced by version {row.version}")

    # -- payment plans ---------------------------------------------------------------------

    def payment_plan(self, rec: ParsedPaymentPlan) -> Outcome:
        customer = self.scope.ref(Customer, rec.customer, f"{rec.where}.customer")
        invoices = [
            self.scope.ref(Invoice, external_id, f"{rec.where}.invoices[{j}]")
            for j, external_id in enumerate(rec.invoices)
        ]
        values: dict[str, Any] = {
            "customer_id": row_id(customer),
            "number": rec.number,
            "currency": rec.currency,
            "total_minor": rec.total_minor,
            "status": rec.status,
            "approve_by": rec.approve_by,
            "installments": [item.as_json() for item in rec.installments],
            "invoice_ids": [row_id(invoice) for invoice in invoices],
        }
        upserted = self.scope.upsert(PaymentPlan, rec.external_id, values)
        if upserted.outcome == "unchanged":
            return "unchanged"  # nothing checked: the ledger already holds it (see payments)
        was = upserted.previous.get("status")
        held_before = upserted.previous["invoice_ids"] if was is PaymentPlanStatus.ACTIVE else []
        self._check_invoices(rec, invoices, customer=customer)
        self.session.flush()
        self._plan_holds(upserted.row, invoices, held_before=held_before)
        self._plan_event(upserted.row, customer, invoices)
        return upserted.outcome

    def _check_invoices(
        self, rec: ParsedPaymentPlan, invoices: Sequence[Invoice], *, customer: Customer
    ) -> None:
        """The customer's invoices, in the plan's currency; a live plan's must be owed."""
        for j, invoice in enumerate(invoices):
            at, name = f"{rec.where}.invoices[{j}]", invoice.external_id
            if invoice.customer_id != customer.id:
                raise DocumentError(at, f"invoice {name!r} belongs to another customer")
            if invoice.currency != rec.currency:
                raise DocumentError(
                    at, f"invoice {name!r} is in {invoice.currency}, not {rec.currency}"
                )
            if rec.status in _LIVE_PLANS and invoice.status in _UNOWED:
                raise DocumentError(at, f"invoice {name!r} is {invoice.status.value}")

    def _plan_holds(
        self, row: PaymentPlan, invoices: Sequence[Invoice], *, held_before: Sequence[int]
    ) -> None:
        """While the plan is active, one hold per invoice it covers; lift the others.

        A hold is placed when the plan becomes active or an invoice joins it, so a hold the AR
        team lifted by hand stays lifted through later edits of the plan. Every invoice whose
        hold is placed or lifted is looked at again by the next scheduler pass.
        """
        note = f"payment plan {row.number}"
        current = self.session.exec(
            select(Hold).where(
                col(Hold.tenant_id) == self.tenant_id,
                col(Hold.payment_plan_id) == row.id,
                col(Hold.lifted_at).is_(None),
            )
        ).all()
        active = row.status is PaymentPlanStatus.ACTIVE
        covered = {row_id(invoice): invoice for invoice in invoices} if active else {}
        for hold in current:
            if hold.invoice_id in covered:
                hold.note = note  # the plan's number may have changed
                continue
            holds.lift(self.session, hold, self.now)
        held = {hold.invoice_id for hold in current}
        for invoice_id, invoice in covered.items():
            if invoice_id in held or invoice_id in held_before:
                continue
            holds.place(
                self.session,
                tenant_id=self.tenant_id,
                customer_id=invoice.customer_id,
                invoice_id=invoice_id,
                reason=HoldReason.PAYMENT_PLAN,
                note=note,
                by="import",
                now=self.now,
                payment_plan_id=row.id,
            )
        self.session.flush()

    def _plan_event(
        self, row: PaymentPlan, customer: Customer, invoices: Sequence[Invoice]
    ) -> None:
        """A proposed plan is emailed for approval, ``grace`` after its last edit.

        A proposal still waiting when the plan becomes active, completed or cancelled is
        retired with a note: the customer has answered, or there is nothing left to approve.
        """
        document = f"payment_plan:{row_id(row)}"
        if row.status is not PaymentPlanStatus.PROPOSED:
            for event in self.events.pending(kind=Kind.PAYMENT_PLAN, document=document):
                note = f"the plan became {row.status.value} before the proposal was sent"
                self.events.skip(event, note)
            return
        balances = [(invoice.number, invoice.balance_minor) for invoice in invoices]
        spec = EventSpec(
            kind=Kind.PAYMENT_PLAN,
            key=f"payment_plan:{row.external_id}",
            customer_id=row_id(customer),
            document=document,
            context=payment_plan_context(row, balances),
            due_at=grace_ends(self.now, self.grace),
        )
        self.events.record_or_refresh(spec)
