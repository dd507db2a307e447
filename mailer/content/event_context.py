"""PURE: the kind's own part of an event's render context, built from ledger rows.

The ledger stores what these return on the ``Event`` row when it records the event, so the
email describes the record as it was imported; the scheduler pass adds tenant, customer,
branding, language and links. Each function returns exactly the keys ``mailer.content.shapes`` types
for its kind (``{"payment": PaymentData}``, ...): money in integer minor units, times as
ISO 8601 strings, as in ``mailer/content/context.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from mailer.content.shapes import (
    AutopayData,
    CreditNoteData,
    EstimateData,
    InstallmentData,
    InvoiceData,
    LineData,
    PaidInvoiceData,
    PaymentData,
    PaymentPlanData,
    RefundData,
    SubscriptionData,
)
from mailer.ledger.localtime import days_between
from mailer.ledger.models import (
    AutopayFailure,
    CreditNote,
    Estimate,
    Invoice,
    Payment,
    PaymentPlan,
    Refund,
    Subscription,
    SubscriptionStatus,
)


def payment_context(payment: Payment, allocations: Sequence[tuple[Invoice, int]]) -> dict[str, Any]:
    """``payment_receipt``: ``allocations`` are (invoice, amount) in the order given, each
    invoice as the payment left it (its balance after it): the receipt PDF shows each on a
    page of its own, so the snapshot carries the whole invoice, not only its number.

    What the allocations leave over is ``unapplied_minor``: kept on account, and said so.
    """
    invoices: list[PaidInvoiceData] = [
        {"number": invoice.number, "amount_minor": amount, "invoice": invoice_data(invoice)}
        for invoice, amount in allocations
    ]
    data: PaymentData = {
        "receipt_number": payment.receipt_number or payment.external_id,
        "amount_minor": payment.amount_minor,
        "currency": payment.currency,
        "received_at": payment.received_at.isoformat(),
        "method": payment.method,
        "invoices": invoices,
        "unapplied_minor": payment.amount_minor - sum(amount for _, amount in allocations),
    }
    return {"payment": data}


def refund_context(refund: Refund, payment: Payment) -> dict[str, Any]:
    """``refund``: the refund, and when the payment it gives money back on arrived."""
    data: RefundData = {
        "receipt_number": refund.receipt_number or refund.external_id,
        "amount_minor": refund.amount_minor,
        "currency": refund.currency,
        "refunded_at": refund.refunded_at.isoformat(),
        "method": refund.method,
        "reason": refund.reason,
        "payment_received_at": payment.received_at.isoformat(),
    }
    return {"refund": data}


def autopay_context(failure: AutopayFailure, invoice_number: str | None) -> dict[str, Any]:
    """``autopay_failed``: the declined attempt and the next one, if the provider retries."""
    data: AutopayData = {
        "decline_reason": failure.decline_reason,
        "next_retry_at": _iso(failure.next_retry_at),
        "amount_minor": failure.amount_minor,
        "currency": failure.currency,
        "attempted_at": failure.attempted_at.isoformat(),
        "invoice_number": invoice_number,
        "method": failure.method,
    }
    return {"autopay": data}


def credit_note_context(note: CreditNote, invoice_number: str | None) -> dict[str, Any]:
    """``credit_note``: the stored lines, with the tax they include summed."""
    lines: list[LineData] = [_line(line) for line in note.lines]
    data: CreditNoteData = {
        "number": note.number,
        "version": note.version,
        "currency": note.currency,
        "amount_minor": note.amount_minor,
        "tax_minor": sum(line["tax_minor"] for line in lines),
        "issued_at": note.issued_at.isoformat(),
        "invoice_number": invoice_number,
        "reason": note.reason,
        "lines": lines,
    }
    return {"credit_note": data}


def invoice_data(invoice: Invoice) -> InvoiceData:
    """An invoice version as every template reads it (``mailer.content.shapes.InvoiceData``).

    ``lines`` are passed on as stored (``ParsedLine.as_json()``), so the PDF render key of an
    unchanged version stays the same whichever email carries it.
    """
    return {
        "number": invoice.number,
        "version": invoice.version,
        "currency": invoice.currency,
        "total_minor": invoice.total_minor,
        "tax_minor": invoice.tax_minor,
        "balance_minor": invoice.balance_minor,
        "issued_at": invoice.issued_at.isoformat(),
        "due_at": invoice.due_at.isoformat(),
        "lines": invoice.lines,  # type: ignore[typeddict-item]  # stored as LineData
    }


def estimate_context(estimate: Estimate) -> dict[str, Any]:
    """``estimate``: the stored lines and totals of the version being sent."""
    data: EstimateData = {
        "number": estimate.number,
        "version": estimate.version,
        "currency": estimate.currency,
        "total_minor": estimate.total_minor,
        "tax_minor": estimate.tax_minor,
        "issued_at": estimate.issued_at.isoformat(),
        "valid_until": estimate.valid_until.isoformat(),
        "lines": [_line(line) for line in estimate.lines],
    }
    return {"estimate": data}


def payment_plan_context(plan: PaymentPlan, invoices: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """``payment_plan``: ``invoices`` are (number, open balance) of the invoices it covers."""
    installments: list[InstallmentData] = [
        {"due_at": str(item["due_at"]), "amount_minor": int(item["amount_minor"])}
        for item in plan.installments
    ]
    data: PaymentPlanData = {
        "number": plan.number,
        "currency": plan.currency,
        "total_minor": plan.total_minor,
        "approve_by": _iso(plan.approve_by),
        "installments": installments,
        "invoices": [{"number": number, "amount_minor": open_} for number, open_ in invoices],
    }
    return {"payment_plan": data}


def subscription_context(subscription: Subscription) -> dict[str, Any]:
    """``subscription_confirmation`` and ``subscription_cancelled``.

    A cancelled subscription has no next bill, whatever date the ERP still carries: the
    cancellation email promises that nothing more is billed.
    """
    return {"subscription": _subscription(subscription)}


def billed_soon_context(
    subscription: Subscription, *, due_at: datetime, zone: str
) -> dict[str, Any]:
    """``subscription_billed_soon``, with ``days_until_bill`` as seen when it is sent (``due_at``)
    in the customer's ``zone``.

    The subscription must have a ``next_bill_at`` (:func:`billed_soon_due` said when).
    """
    if subscription.next_bill_at is None:
        raise ValueError("a subscription without next_bill_at is not billed soon")
    return {
        "subscription": _subscription(subscription),
        "days_until_bill": days_until(subscription.next_bill_at, now=due_at, zone=zone),
    }


def billed_soon_due(next_bill_at: datetime, *, now: datetime, lead: timedelta) -> datetime | None:
    """When the "billed soon" notice of the bill at ``next_bill_at`` is due, or None.

    ``lead`` before the bill; if that moment has passed (the subscription or its new date
    arrived late), now; if the bill itself is not in the future, there is nothing to announce.
    """
    if next_bill_at <= now:
        return None
    return max(next_bill_at - lead, now)


def days_until(moment: datetime, *, now: datetime, zone: str) -> int:
    """Calendar days from ``now``'s day to ``moment``'s in the customer's ``zone`` (never below 1).

    The email says "renews in N days" beside "renews on <date>": both count the customer's
    calendar, so a bill on the 9th announced on the 2nd is "in 7 days" at any hour, a bill
    tomorrow evening is "in 1 day", and one the day after tomorrow "in 2 days". A bill later
    today (a late notice) still reads "in 1 day": the templates have no "today".
    """
    return max(1, days_between(now, moment, zone))


def _subscription(subscription: Subscription) -> SubscriptionData:
    cancelled = subscription.status is SubscriptionStatus.CANCELLED
    return {
        "plan": subscription.plan,
        "amount_minor": subscription.amount_minor,
        "currency": subscription.currency,
        "interval": subscription.interval.value,
        "started_at": subscription.started_at.isoformat(),
        "next_bill_at": None if cancelled else _iso(subscription.next_bill_at),
        "cancelled_at": _iso(subscription.cancelled_at),
        "ends_at": _iso(subscription.ends_at),
    }


def _line(line: dict[str, Any]) -> LineData:
    """A stored line (``ParsedLine.as_json()``) as the templates read it."""
    return {
        "description": str(line["description"]),
        "quantity": str(line["quantity"]),
        "unit_price_minor": int(line["unit_price_minor"]),
        "tax_rate": None if line["tax_rate"] is None else str(line["tax_rate"]),
        "net_minor": int(line["net_minor"]),
        "tax_minor": int(line["tax_minor"]),
        "total_minor": int(line["total_minor"]),
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
