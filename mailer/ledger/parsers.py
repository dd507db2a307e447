"""PURE: each section's record, validated by its pydantic model, into its ``Parsed*`` value; what
is wrong goes into ``doc.errors`` and :class:`Invalid` refuses that record alone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import Decimal, localcontext
from zoneinfo import ZoneInfo

from mailer.errors import DocumentError
from mailer.ledger.models import (
    SubscriptionStatus,
)
from mailer.ledger.money import from_minor, round_minor, to_minor
from mailer.ledger.parsed import (
    ParsedAllocation,
    ParsedAutopayFailure,
    ParsedContact,
    ParsedCreditNote,
    ParsedCustomer,
    ParsedDocument,
    ParsedEstimate,
    ParsedInstallment,
    ParsedInvoice,
    ParsedLine,
    ParsedPayment,
    ParsedPaymentPlan,
    ParsedRefund,
    ParsedSubscription,
)
from mailer.ledger.record import (
    AutopayFailureRecord,
    CreditNoteRecord,
    CustomerRecord,
    EstimateRecord,
    InvoiceRecord,
    LineRecord,
    PaymentPlanRecord,
    PaymentRecord,
    RefundRecord,
    SubscriptionRecord,
)


class Invalid(Exception):
    """A record failed; its errors are already collected."""


def parse_customer(rec: CustomerRecord, where: str, doc: ParsedDocument) -> ParsedCustomer:
    contacts = None
    if rec.contacts is not None:
        seen: dict[str, int] = {}
        for j, c in enumerate(rec.contacts):
            if c.email in seen:
                doc.errors.append(
                    DocumentError(
                        f"{where}.contacts[{j}].email",
                        f"duplicate contact {c.email!r} (also at contacts[{seen[c.email]}])",
                    )
                )
                raise Invalid
            seen[c.email] = j
        contacts = tuple(
            ParsedContact(c.email, c.name, tuple(dict.fromkeys(c.roles)), c.send_invoices)
            for c in rec.contacts
        )
    return ParsedCustomer(
        where,
        rec.id,
        rec.name,
        rec.locale,
        rec.time_zone,
        rec.chase,
        contacts,
        rec.cadence,
        rec.statements,
        None if rec.billing_address is None else tuple(rec.billing_address),
        rec.tax_id,
    )


def _lines(
    records: list[LineRecord], currency: str, where: str, errors: list[DocumentError]
) -> tuple[ParsedLine, ...]:
    out = []
    for j, rec in enumerate(records):
        at = f"{where}.lines[{j}]"
        try:
            unit = to_minor(rec.unit_price, currency)
        except ValueError as exc:
            errors.append(DocumentError(f"{at}.unit_price", str(exc)))
            continue
        rate = rec.tax_rate
        if rate is not None and not Decimal(0) <= rate <= Decimal(100):
            errors.append(DocumentError(f"{at}.tax_rate", "must be a percentage from 0 to 100"))
            continue
        with localcontext() as ctx:
            ctx.prec = 60  # 18+18 digits each side: exact, so only the quantize rounds
            try:
                net = round_minor(rec.quantity * unit)
                tax = round_minor(net * rate / 100) if rate else 0
            except ValueError as exc:
                errors.append(DocumentError(at, str(exc)))
                continue
        out.append(ParsedLine(rec.description, rec.quantity, unit, rate, net, tax))
    return tuple(out)


def _instant(stamp: date | datetime, zone: ZoneInfo) -> datetime:
    """Aware UTC; a date is midnight and a naive time is wall-clock time, both in ``zone``."""
    if not isinstance(stamp, datetime):
        stamp = datetime.combine(stamp, time())
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=zone)
    return stamp.astimezone(UTC)


def parse_invoice(
    rec: InvoiceRecord, where: str, doc: ParsedDocument, zone_of: Callable[[str], ZoneInfo]
) -> ParsedInvoice:
    errors: list[DocumentError] = []
    lines = _lines(rec.lines, rec.currency, where, errors)
    zone = zone_of(rec.customer)
    issued_at, due_at = _instant(rec.issued_at, zone), _instant(rec.due_at, zone)
    if due_at < issued_at:
        errors.append(DocumentError(f"{where}.due_at", "is before issued_at"))
    if not errors and sum(line.total_minor for line in lines) < 0:
        errors.append(
            DocumentError(f"{where}.lines", "the invoice total is negative; send a credit note")
        )
    doc.errors.extend(errors)
    if errors:
        raise Invalid
    return ParsedInvoice(
        where, rec.id, rec.number, rec.customer, rec.currency, issued_at, due_at, rec.status, lines
    )


def parse_credit_note(
    rec: CreditNoteRecord, where: str, doc: ParsedDocument, zone_of: Callable[[str], ZoneInfo]
) -> ParsedCreditNote:
    errors: list[DocumentError] = []
    lines = _lines(rec.lines, rec.currency, where, errors)
    if not errors and sum(line.total_minor for line in lines) <= 0:
        errors.append(DocumentError(f"{where}.lines", "a credit note's total must be positive"))
    doc.errors.extend(errors)
    if errors:
        raise Invalid
    issued_at = _instant(rec.issued_at, zone_of(rec.customer))
    return ParsedCreditNote(
        where,
        rec.id,
        rec.number,
        rec.customer,
        rec.currency,
        issued_at,
        rec.invoice,
        lines,
        reason=rec.reason,
    )


def parse_payment(
    rec: PaymentRecord, where: str, doc: ParsedDocument, zone_of: Callable[[str], ZoneInfo]
) -> ParsedPayment:
    errors: list[DocumentError] = []

    def minor(value: Decimal, at: str) -> int:
        return _amount(value, rec.currency, at, errors)

    amount = minor(rec.amount, f"{where}.amount")
    allocations, seen = [], set()
    for j, alloc in enumerate(rec.invoices):
        at = f"{where}.invoices[{j}]"
        if alloc.invoice in seen:
            errors.append(
                DocumentError(f"{at}.invoice", f"invoice {alloc.invoice!r} is listed twice")
            )
        seen.add(alloc.invoice)
        allocations.append(ParsedAllocation(at, alloc.invoice, minor(alloc.amount, f"{at}.amount")))
    allocated = sum(a.amount_minor for a in allocations)
    if not errors and allocated > amount:
        errors.append(
            DocumentError(
                f"{where}.invoices",
                f"allocations total {from_minor(allocated, rec.currency)} {rec.currency}, "
                f"more than the payment's {from_minor(amount, rec.currency)}",
            )
        )
    doc.errors.extend(errors)
    if errors:
        raise Invalid
    received_at = _instant(rec.received_at, zone_of(rec.customer))
    return ParsedPayment(
        where,
        rec.id,
        rec.customer,
        amount,
        rec.currency,
        received_at,
        tuple(allocations),
        method=rec.method,
        receipt_number=rec.receipt_number,
    )


def parse_refund(
    rec: RefundRecord, where: str, doc: ParsedDocument, payment_zone: Callable[[str], ZoneInfo]
) -> ParsedRefund:
    errors: list[DocumentError] = []
    amount = _amount(rec.amount, rec.currency, f"{where}.amount", errors)
    doc.errors.extend(errors)
    if errors:
        raise Invalid
    return ParsedRefund(
        where,
        rec.id,
        rec.payment,
        amount,
        rec.currency,
        _instant(rec.refunded_at, payment_zone(rec.payment)),
        rec.reason,
        rec.method,
        rec.receipt_number,
    )


def parse_autopay_failure(
    rec: AutopayFailureRecord,
    where: str,
    doc: ParsedDocument,
    zone_of: Callable[[str], ZoneInfo],
) -> ParsedAutopayFailure:
    errors: list[DocumentError] = []
    amount = _amount(rec.amount, rec.currency, f"{where}.amount", errors)
    zone = zone_of(rec.customer)
    attempted_at = _instant(rec.attempted_at, zone)
    retry_at = _maybe_instant(rec.next_retry_at, zone)
    if retry_at is not None and retry_at <= attempted_at:
        errors.append(DocumentError(f"{where}.next_retry_at", "is not after attempted_at"))
    doc.errors.extend(errors)
    if errors:
        raise Invalid
    return ParsedAutopayFailure(
        where,
        rec.id,
        rec.customer,
        rec.invoice,
        amount,
        rec.currency,
        attempted_at,
        rec.decline_reason,
        retry_at,
        rec.method,
    )


def parse_subscription(
    rec: SubscriptionRecord, where: str, doc: ParsedDocument, zone_of: Callable[[str], ZoneInfo]
) -> ParsedSubscription:
    errors: list[DocumentError] = []
    # A free plan is a plan: zero is allowed, a negative price is not.
    amount = _amount(rec.amount, rec.currency, f"{where}.amount", errors, allow_zero=True)
    zone = zone_of(rec.customer)
    started_at = _instant(rec.started_at, zone)
    next_bill_at = _maybe_instant(rec.next_bill_at, zone)
    cancelled_at = _maybe_instant(rec.cancelled_at, zone)
    ends_at = _maybe_instant(rec.ends_at, zone)
    for name, value in (("next_bill_at", next_bill_at), ("cancelled_at", cancelled_at)):
        if value is not None and value < started_at:
            errors.append(DocumentError(f"{where}.{name}", "is before started_at"))
    if ends_at is not None and ends_at < (cancelled_at or started_at):
        after = "cancelled_at" if cancelled_at else "started_at"
        errors.append(DocumentError(f"{where}.ends_at", f"is before {after}"))
    if rec.status is SubscriptionStatus.CANCELLED and cancelled_at is None:
        errors.append(
            DocumentError(f"{where}.cancelled_at", "required when the status is cancelled")
        )
    doc.errors.extend(errors)
    if errors:
        raise Invalid
    return ParsedSubscription(
        where,
        rec.id,
        rec.customer,
        rec.plan,
        amount,
        rec.currency,
        rec.interval,
        rec.status,
        started_at,
        next_bill_at,
        cancelled_at,
        ends_at,
    )


def parse_estimate(
    rec: EstimateRecord, where: str, doc: ParsedDocument, zone_of: Callable[[str], ZoneInfo]
) -> ParsedEstimate:
    errors: list[DocumentError] = []
    lines = _lines(rec.lines, rec.currency, where, errors)
    zone = zone_of(rec.customer)
    issued_at, valid_until = _instant(rec.issued_at, zone), _instant(rec.valid_until, zone)
    if valid_until < issued_at:
        errors.append(DocumentError(f"{where}.valid_until", "is before issued_at"))
    if not errors and sum(line.total_minor for line in lines) < 0:
        errors.append(DocumentError(f"{where}.lines", "the estimate total is negative"))
    doc.errors.extend(errors)
    if errors:
        raise Invalid
    return ParsedEstimate(
        where,
        rec.id,
        rec.number,
        rec.customer,
        rec.currency,
        issued_at,
        valid_until,
        rec.status,
        lines,
    )


def parse_payment_plan(
    rec: PaymentPlanRecord, where: str, doc: ParsedDocument, zone_of: Callable[[str], ZoneInfo]
) -> ParsedPaymentPlan:
    """Installments positive and in date order, approval due by the first one, no invoice twice.

    Whether the invoices exist and are the customer's, in the plan's currency, is the ledger's
    to say (``mailer.ledger.agreements``): they may be in the ledger rather than in this document.
    """
    errors: list[DocumentError] = []
    zone = zone_of(rec.customer)
    installments: list[ParsedInstallment] = []
    for j, item in enumerate(rec.installments):
        at = f"{where}.installments[{j}]"
        amount = _amount(item.amount, rec.currency, f"{at}.amount", errors)
        due_at = _instant(item.due_at, zone)
        if installments and due_at <= installments[-1].due_at:
            errors.append(
                DocumentError(f"{at}.due_at", f"is not after installments[{j - 1}].due_at")
            )
        installments.append(ParsedInstallment(due_at, amount))
    approve_by = _maybe_instant(rec.approve_by, zone)
    if approve_by is not None and installments and approve_by > installments[0].due_at:
        errors.append(
            DocumentError(f"{where}.approve_by", "is after the first installment's due_at")
        )
    seen: dict[str, int] = {}
    for j, invoice in enumerate(rec.invoices):
        if invoice in seen:
            errors.append(
                DocumentError(
                    f"{where}.invoices[{j}]",
                    f"invoice {invoice!r} is listed twice (also at invoices[{seen[invoice]}])",
                )
            )
        seen.setdefault(invoice, j)
    doc.errors.extend(errors)
    if errors:
        raise Invalid
    return ParsedPaymentPlan(
        where,
        rec.id,
        rec.number,
        rec.customer,
        rec.currency,
        rec.status,
        approve_by,
        tuple(installments),
        tuple(rec.invoices),
    )


def _amount(
    value: Decimal,
    currency: str,
    at: str,
    errors: list[DocumentError],
    *,
    allow_zero: bool = False,
) -> int:
    """``value`` in minor units of ``currency``; a problem goes to ``errors`` (0 returned)."""
    try:
        amount = to_minor(value, currency)
    except ValueError as exc:
        errors.append(DocumentError(at, str(exc)))
        return 0
    if amount < 0 or (amount == 0 and not allow_zero):
        errors.append(
            DocumentError(at, "must not be negative" if allow_zero else "must be positive")
        )
    return amount


def _maybe_instant(stamp: date | datetime | None, zone: ZoneInfo) -> datetime | None:
    return None if stamp is None else _instant(stamp, zone)
