"""SERVICE: the import sections a billing system sends: refunds, failed autopays, subscriptions.

Each record is upserted like the ledger's own (``mailer.ledger.upsert``; ``mailer.ledger.imports``
runs them, each in its SAVEPOINT, after the payments and invoices they refer to) and records the
events it calls for:
a refund notice and a failed-autopay notice at once; for a subscription, a confirmation when
first seen active, a notice when it becomes cancelled, and a "billed soon" reminder ahead of
every bill date, retired (skipped, with a note) when the date moves or the plan is cancelled.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import col

from mailer.content.event_context import (
    autopay_context,
    billed_soon_context,
    billed_soon_due,
    refund_context,
    subscription_context,
)
from mailer.content.kinds import Kind
from mailer.errors import DocumentError
from mailer.ledger.eventlog import EventSpec
from mailer.ledger.localtime import customer_zone, local_date
from mailer.ledger.models import (
    AutopayFailure,
    Customer,
    Invoice,
    Payment,
    Refund,
    Subscription,
    SubscriptionStatus,
)
from mailer.ledger.money import from_minor
from mailer.ledger.parsed import ParsedAutopayFailure, ParsedRefund, ParsedSubscription
from mailer.ledger.upsert import LedgerScope, Outcome, Section, row_id


class BillingImport(Section):
    """Refunds, autopay failures and subscriptions, applied within one ledger import.

    ``billed_soon`` is how long before a bill its reminder is due; ``tenant_zone`` dates the
    bills of customers without a zone of their own.
    """

    def __init__(self, scope: LedgerScope, *, billed_soon: timedelta, tenant_zone: str) -> None:
        super().__init__(scope)
        self.billed_soon = billed_soon
        self.tenant_zone = tenant_zone

    # -- refunds ---------------------------------------------------------------------------

    def refund(self, rec: ParsedRefund) -> Outcome:
        payment = self.scope.ref(Payment, rec.payment, f"{rec.where}.payment")
        values: dict[str, Any] = {
            "payment_id": row_id(payment),
            "customer_id": payment.customer_id,
            "amount_minor": rec.amount_minor,
            "currency": rec.currency,
            "refunded_at": rec.refunded_at,
            "reason": rec.reason,
            "method": rec.method,
            "receipt_number": rec.receipt_number,
        }
        upserted = self.scope.upsert(Refund, rec.external_id, values)
        if upserted.outcome == "unchanged":
            return "unchanged"  # nothing checked: the ledger already holds it (see payments)
        if payment.currency != rec.currency:
            raise DocumentError(
                f"{rec.where}.currency",
                f"payment {payment.external_id!r} is in {payment.currency}, not {rec.currency}",
            )
        others = sa.select(sa.func.coalesce(sa.func.sum(Refund.amount_minor), 0)).where(
            col(Refund.tenant_id) == self.tenant_id,
            col(Refund.payment_id) == payment.id,
            col(Refund.external_id) != rec.external_id,
        )
        total = int(self.session.scalar(others) or 0) + rec.amount_minor
        if total > payment.amount_minor:
            cur = payment.currency
            raise DocumentError(
                f"{rec.where}.amount",
                f"refunds of payment {payment.external_id!r} would total "
                f"{from_minor(total, cur)} {cur}, more than the payment's "
                f"{from_minor(payment.amount_minor, cur)} {cur}",
            )
        row = upserted.row
        self.session.flush()
        spec = EventSpec(
            kind=Kind.REFUND,
            key=f"refund:{row.external_id}",
            customer_id=payment.customer_id,
            document=f"refund:{row_id(row)}",
            context=refund_context(row, payment),
            due_at=self.now,
            happened_at=row.refunded_at,
        )
        self.events.announce(spec, new=upserted.created)
        return upserted.outcome

    # -- autopay failures ------------------------------------------------------------------

    def autopay_failure(self, rec: ParsedAutopayFailure) -> Outcome:
        customer = self.scope.ref(Customer, rec.customer, f"{rec.where}.customer")
        invoice = None
        if rec.invoice is not None:
            at = f"{rec.where}.invoice"
            invoice = self.scope.ref(Invoice, rec.invoice, at)
            if invoice.customer_id != customer.id:
                raise DocumentError(at, f"invoice {rec.invoice!r} belongs to another customer")
            if invoice.currency != rec.currency:
                raise DocumentError(
                    at, f"invoice {rec.invoice!r} is in {invoice.currency}, not {rec.currency}"
                )
        values: dict[str, Any] = {
            "customer_id": row_id(customer),
            "invoice_id": row_id(invoice) if invoice else None,
            "amount_minor": rec.amount_minor,
            "currency": rec.currency,
            "attempted_at": rec.attempted_at,
            "decline_reason": rec.decline_reason,
            "next_retry_at": rec.next_retry_at,
            "method": rec.method,
        }
        upserted = self.scope.upsert(AutopayFailure, rec.external_id, values)
        if upserted.outcome == "unchanged":
            return "unchanged"
        row = upserted.row
        self.session.flush()
        spec = EventSpec(
            kind=Kind.AUTOPAY_FAILED,
            key=f"autopay:{row.external_id}",
            customer_id=row_id(customer),
            document=f"autopay:{row_id(row)}",
            context=autopay_context(row, invoice.number if invoice else None),
            due_at=self.now,  # the customer should fix the card before the next attempt
            invoice_id=values["invoice_id"],
            happened_at=row.attempted_at,
        )
        self.events.announce(spec, new=upserted.created)
        return upserted.outcome

    # -- subscriptions ---------------------------------------------------------------------

    def subscription(self, rec: ParsedSubscription) -> Outcome:
        customer = self.scope.ref(Customer, rec.customer, f"{rec.where}.customer")
        values: dict[str, Any] = {
            "customer_id": row_id(customer),
            "plan": rec.plan,
            "amount_minor": rec.amount_minor,
            "currency": rec.currency,
            "interval": rec.interval,
            "status": rec.status,
            "started_at": rec.started_at,
            "next_bill_at": rec.next_bill_at,
            "cancelled_at": rec.cancelled_at,
            "ends_at": rec.ends_at,
        }
        upserted = self.scope.upsert(Subscription, rec.external_id, values)
        if upserted.outcome == "unchanged":
            return "unchanged"
        self.session.flush()
        was = None if upserted.created else upserted.previous["status"]
        self._subscription_events(upserted.row, customer, was=was)
        return upserted.outcome

    def _subscription_events(
        self, row: Subscription, customer: Customer, *, was: SubscriptionStatus | None
    ) -> None:
        """A confirmation when first seen active, a notice when it becomes cancelled.

        A subscription first seen already cancelled records nothing: that is history, not news.
        A confirmation still pending when the cancellation arrives is skipped: the customer
        needs one email, and "cancelled" is the one that is still true.
        """
        document = f"subscription:{row_id(row)}"
        context = subscription_context(row)
        if row.status is SubscriptionStatus.ACTIVE:
            kind, occasion, new = Kind.SUBSCRIPTION_CONFIRMATION, "confirmed", was is None
        else:
            for event in self.events.pending(
                kind=Kind.SUBSCRIPTION_CONFIRMATION, document=document
            ):
                self.events.skip(event, "cancelled before the confirmation was sent")
            kind, occasion = Kind.SUBSCRIPTION_CANCELLED, "cancelled"
            new = was is SubscriptionStatus.ACTIVE
        key = f"subscription:{row.external_id}:{occasion}"
        happened = row.started_at if occasion == "confirmed" else row.cancelled_at
        spec = EventSpec(
            kind, key, row_id(customer), document, context, self.now, happened_at=happened
        )
        self.events.announce(spec, new=new)
        self._billed_soon(row, customer, document=document)

    def _billed_soon(self, row: Subscription, customer: Customer, *, document: str) -> None:
        """One "billed soon" notice per bill date; a pending one for another date is retired.

        The key names the bill's date as the customer reads it (in their zone), so a renewal
        that moves ``next_bill_at`` asks for a new notice, while a re-import that only changes
        the plan or the amount updates the pending one.
        """
        wanted = None
        bill_at = row.next_bill_at if row.status is SubscriptionStatus.ACTIVE else None
        due = billed_soon_due(bill_at, now=self.now, lead=self.billed_soon) if bill_at else None
        if bill_at is not None and due is not None:
            zone = customer_zone(customer.time_zone, self.tenant_zone)
            day = local_date(bill_at, zone)
            wanted = EventSpec(
                kind=Kind.SUBSCRIPTION_BILLED_SOON,
                key=f"subscription:{row.external_id}:billed:{day.isoformat()}",
                customer_id=row_id(customer),
                document=document,
                context=billed_soon_context(row, due_at=due, zone=zone),
                due_at=due,
            )
        for event in self.events.pending(kind=Kind.SUBSCRIPTION_BILLED_SOON, document=document):
            if wanted is None or event.key != wanted.key:
                self.events.skip(event, _stale_bill_note(row, self.now))
        if wanted is not None:
            self.events.record_or_refresh(wanted)


def _stale_bill_note(row: Subscription, now: datetime) -> str:
    """Why a pending "billed soon" notice no longer applies."""
    if row.status is SubscriptionStatus.CANCELLED:
        return "the subscription was cancelled"
    if row.next_bill_at is None:
        return "the subscription has no next bill date any more"
    if row.next_bill_at <= now:
        return "the bill date has passed"
    return f"the next bill moved to {row.next_bill_at.isoformat()}"
