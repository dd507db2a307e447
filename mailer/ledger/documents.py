"""PURE: the ERP import document: record-by-record validation into minor units and aware UTC.

The wire format (field types, the pydantic ``*Record`` models) is in ``mailer.ledger.record`` and
the
money rules in ``mailer.ledger.money``; this module turns valid records into ``Parsed*`` values and
reports every invalid one at its position, without letting it stop the others.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal, localcontext
from typing import Any, ClassVar, TypeVar, get_args
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError

from mailer.errors import DocumentError
from mailer.ledger.models import (
    ContactRole,
    EstimateStatus,
    InvoiceStatus,
    PaymentPlanStatus,
    SubscriptionInterval,
    SubscriptionStatus,
)
from mailer.ledger.money import from_minor, round_minor, to_minor
from mailer.ledger.record import (
    AutopayFailureRecord,
    CreditNoteRecord,
    CustomerRecord,
    EstimateRecord,
    InvoiceRecord,
    LineRecord,
    PaymentPlanRecord,
    PaymentRecord,
    Record,
    RefundRecord,
    SubscriptionRecord,
)

# The document's sections, in import order: each may refer only to those before it.
SECTIONS = (
    "customers",
    "invoices",
    "credit_notes",
    "payments",
    "refunds",
    "autopay_failures",
    "subscriptions",
    "estimates",
    "payment_plans",  # after payments and credit notes: it shows its invoices' open balances
)
# Sections whose documents carry a number the tenant prints (unique per tenant), and their name.
_NUMBERED = {"invoices": "invoice", "estimates": "estimate"}
# Sections whose records have lines, and how many one may have (PDFConfig.max_lines' default).
_LINED = frozenset({"invoices", "credit_notes", "estimates"})
MAX_LINES = 1000


# -- parsed records: validated, in minor units and aware UTC -------------------------------------


@dataclass(frozen=True)
class ParsedContact:
    email: str
    name: str | None
    roles: tuple[ContactRole, ...]
    send_invoices: bool | None


@dataclass(frozen=True)
class ParsedCustomer:
    where: str
    external_id: str
    name: str
    locale: str | None
    time_zone: str | None
    chase: bool | None
    contacts: tuple[ParsedContact, ...] | None
    cadence: str | None = None  # None: keep; "": the tenant's default
    statements: str | None = None  # None: keep; "": the tenant's schedule


@dataclass(frozen=True)
class ParsedLine:
    """A line in minor units; ``as_json()`` is the shape stored in ``Invoice.lines``.

    ``net_minor`` is quantity x unit price rounded half-even to the minor unit, and
    ``tax_minor`` is ``net_minor`` x rate / 100, rounded the same way, line by line.
    """

    description: str
    quantity: Decimal
    unit_price_minor: int
    tax_rate: Decimal | None
    net_minor: int
    tax_minor: int

    @property
    def total_minor(self) -> int:
        return self.net_minor + self.tax_minor

    def content(self) -> dict[str, Any]:
        """The line as given (no derived totals), canonically spelled: the hash input."""
        return {
            "description": self.description,
            "quantity": _canonical(self.quantity),
            "unit_price_minor": self.unit_price_minor,
            "tax_rate": None if self.tax_rate is None else _canonical(self.tax_rate),
        }

    def as_json(self) -> dict[str, Any]:
        """The stored line: ``content()`` plus the rounded net, tax and total."""
        return {
            "description": self.description,
            "quantity": _canonical(self.quantity),
            "unit_price_minor": self.unit_price_minor,
            "tax_rate": None if self.tax_rate is None else _canonical(self.tax_rate),
            "net_minor": self.net_minor,
            "tax_minor": self.tax_minor,
            "total_minor": self.total_minor,
        }


class Priced:
    """What an invoice and an estimate share: totals of their lines, and the content hash.

    ``content_hash`` is the sha256 of what the customer sees; the status is left out, so
    open -> void is no new version. Only inputs go in (not the rounded totals), so a change of
    rounding rule would not re-version every document in the ledger. ``HASHED_DATES`` names
    the document's own dates beside ``issued_at`` (an invoice's due date, an estimate's expiry).
    """

    HASHED_DATES: ClassVar[tuple[str, ...]]
    number: str
    customer: str
    currency: str
    issued_at: datetime
    lines: tuple[ParsedLine, ...]

    @property
    def tax_minor(self) -> int:
        return sum(line.tax_minor for line in self.lines)

    @property
    def total_minor(self) -> int:
        return sum(line.total_minor for line in self.lines)

    @property
    def content_hash(self) -> str:
        dates = ("issued_at", *self.HASHED_DATES)
        return _digest(
            {
                "number": self.number,
                "customer": self.customer,
                "currency": self.currency,
                **{name: getattr(self, name).isoformat() for name in dates},
                "lines": [line.content() for line in self.lines],
            }
        )


@dataclass(frozen=True)
class ParsedInvoice(Priced):
    HASHED_DATES = ("due_at",)

    where: str
    external_id: str
    number: str
    customer: str
    currency: str
    issued_at: datetime
    due_at: datetime
    status: InvoiceStatus
    lines: tuple[ParsedLine, ...]


@dataclass(frozen=True)
class ParsedAllocation:
    where: str
    invoice: str
    amount_minor: int


@dataclass(frozen=True)
class ParsedPayment:
    where: str
    external_id: str
    customer: str
    amount_minor: int
    currency: str
    received_at: datetime
    allocations: tuple[ParsedAllocation, ...]
    method: str | None = None
    receipt_number: str | None = None  # None: the receipt shows the external id


@dataclass(frozen=True)
class ParsedCreditNote:
    where: str
    external_id: str
    number: str
    customer: str
    currency: str
    issued_at: datetime
    invoice: str | None
    lines: tuple[ParsedLine, ...]
    reason: str | None = None

    @property
    def amount_minor(self) -> int:
        return sum(line.total_minor for line in self.lines)


@dataclass(frozen=True)
class ParsedRefund:
    where: str
    external_id: str
    payment: str
    amount_minor: int
    currency: str
    refunded_at: datetime
    reason: str | None
    method: str | None
    receipt_number: str | None  # None: the receipt shows the external id


@dataclass(frozen=True)
class ParsedAutopayFailure:
    where: str
    external_id: str
    customer: str
    invoice: str | None
    amount_minor: int
    currency: str
    attempted_at: datetime
    decline_reason: str
    next_retry_at: datetime | None
    method: str | None


@dataclass(frozen=True)
class ParsedSubscription:
    where: str
    external_id: str
    customer: str
    plan: str
    amount_minor: int
    currency: str
    interval: SubscriptionInterval
    status: SubscriptionStatus
    started_at: datetime
    next_bill_at: datetime | None
    cancelled_at: datetime | None
    ends_at: datetime | None


@dataclass(frozen=True)
class ParsedEstimate(Priced):
    HASHED_DATES = ("valid_until",)

    where: str
    external_id: str
    number: str
    customer: str
    currency: str
    issued_at: datetime
    valid_until: datetime
    status: EstimateStatus
    lines: tuple[ParsedLine, ...]


@dataclass(frozen=True)
class ParsedInstallment:
    due_at: datetime
    amount_minor: int

    def as_json(self) -> dict[str, Any]:
        """The stored installment (``PaymentPlan.installments``), as the email shows it."""
        return {"due_at": self.due_at.isoformat(), "amount_minor": self.amount_minor}


@dataclass(frozen=True)
class ParsedPaymentPlan:
    where: str
    external_id: str
    number: str
    customer: str
    currency: str
    status: PaymentPlanStatus
    approve_by: datetime | None
    installments: tuple[ParsedInstallment, ...]
    invoices: tuple[str, ...]  # external ids, in the order given

    @property
    def total_minor(self) -> int:
        return sum(i.amount_minor for i in self.installments)


@dataclass
class ParsedDocument:
    """The valid records, the errors of the others, and the ids of the records refused."""

    customers: list[ParsedCustomer] = field(default_factory=list)
    invoices: list[ParsedInvoice] = field(default_factory=list)
    credit_notes: list[ParsedCreditNote] = field(default_factory=list)
    payments: list[ParsedPayment] = field(default_factory=list)
    refunds: list[ParsedRefund] = field(default_factory=list)
    autopay_failures: list[ParsedAutopayFailure] = field(default_factory=list)
    subscriptions: list[ParsedSubscription] = field(default_factory=list)
    estimates: list[ParsedEstimate] = field(default_factory=list)
    payment_plans: list[ParsedPaymentPlan] = field(default_factory=list)
    errors: list[DocumentError] = field(default_factory=list)
    rejected: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


# -- parsing ---------------------------------------------------------------------------------


class _Invalid(Exception):
    """Internal: a record failed; its errors are already collected."""


_R = TypeVar("_R", bound=Record)


def decode_document(raw: str | bytes) -> object:
    """Decode the JSON text of a document; a syntax error is one :class:`DocumentError` at ``$``."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DocumentError(
            "$", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except UnicodeDecodeError:
        raise DocumentError("$", "not valid JSON: the file is not UTF-8 text") from None


def parse_document(
    data: object,
    *,
    tenant_zone: str,
    customer_zone: Callable[[str], str | None] | None = None,
    payment_customer: Callable[[str], str | None] | None = None,
    max_lines: int = MAX_LINES,
) -> ParsedDocument:
    """Validate ``data`` (the decoded JSON) record by record.

    One bad record never stops the others: it becomes a :class:`DocumentError` whose ``where``
    names the field (``invoices[3].lines[1].unit_price``), and the rest are returned parsed.
    Dates without an offset are wall-clock times of the record's customer: its ``time_zone`` in
    this document, else ``customer_zone(external_id)`` (the ledger's, for customers not in the
    document), else ``tenant_zone``. A refund has no customer of its own: its payment's is
    used, from this document, else ``payment_customer(payment external id)`` (the ledger's).

    An invoice, credit note or estimate with more than ``max_lines`` lines is refused before
    it is validated (``[pdf] max_lines``): its PDF would take minutes and a gigabyte to render,
    and hold up every other tenant's mail meanwhile.
    """
    doc = ParsedDocument()
    if not isinstance(data, Mapping):
        doc.errors.append(DocumentError("$", "the document must be a JSON object"))
        return doc
    for key in data:
        if key not in SECTIONS:
            doc.errors.append(
                DocumentError("$", f"unknown field {key!r} (allowed: {', '.join(SECTIONS)})")
            )
    sections: dict[str, list[Any]] = {}
    for name in SECTIONS:
        raw = data.get(name, [])
        if isinstance(raw, list):
            sections[name] = raw
        else:
            doc.errors.append(DocumentError("$", f"{name!r} must be a list of records"))
            sections[name] = []

    duplicates = _duplicates(sections, doc)
    zones: dict[str, str | None] = {}
    for i, raw in enumerate(sections["customers"]):
        where = f"customers[{i}]"
        try:
            customer = _customer(_validate(CustomerRecord, raw, where, doc), where, doc)
        except _Invalid:
            _reject(doc, "customers", raw)
            continue
        if where not in duplicates:
            zones[customer.external_id] = customer.time_zone
            doc.customers.append(customer)

    def zone_of(customer: str) -> ZoneInfo:
        if customer in zones:
            name = zones[customer]
        else:
            name = customer_zone(customer) if customer_zone else None
        return ZoneInfo(name or tenant_zone)

    paid_by: dict[str, str] = {}

    def payment_zone(payment: str) -> ZoneInfo:
        if not paid_by:  # payments are parsed before refunds
            paid_by.update((p.external_id, p.customer) for p in doc.payments)
        owner = paid_by.get(payment) or (payment_customer(payment) if payment_customer else None)
        return zone_of(owner) if owner else ZoneInfo(tenant_zone)

    parsers: dict[str, Callable[[Any, str, ParsedDocument], Any]] = {
        "invoices": lambda r, w, d: _invoice(_validate(InvoiceRecord, r, w, d), w, d, zone_of),
        "credit_notes": lambda r, w, d: _credit_note(
            _validate(CreditNoteRecord, r, w, d), w, d, zone_of
        ),
        "payments": lambda r, w, d: _payment(_validate(PaymentRecord, r, w, d), w, d, zone_of),
        "refunds": lambda r, w, d: _refund(_validate(RefundRecord, r, w, d), w, d, payment_zone),
        "autopay_failures": lambda r, w, d: _autopay_failure(
            _validate(AutopayFailureRecord, r, w, d), w, d, zone_of
        ),
        "subscriptions": lambda r, w, d: _subscription(
            _validate(SubscriptionRecord, r, w, d), w, d, zone_of
        ),
        "estimates": lambda r, w, d: _estimate(_validate(EstimateRecord, r, w, d), w, d, zone_of),
        "payment_plans": lambda r, w, d: _payment_plan(
            _validate(PaymentPlanRecord, r, w, d), w, d, zone_of
        ),
    }
    for name, parse in parsers.items():
        target: list[Any] = getattr(doc, name)
        for i, raw in enumerate(sections[name]):
            where = f"{name}[{i}]"
            if (too_long := _too_many_lines(name, raw, max_lines)) is not None:
                doc.errors.append(DocumentError(f"{where}.lines", too_long))
                _reject(doc, name, raw)
                continue
            try:
                record = parse(raw, where, doc)
            except _Invalid:
                _reject(doc, name, raw)
                continue
            if where not in duplicates:
                target.append(record)
    return doc


def _too_many_lines(section: str, raw: object, limit: int) -> str | None:
    """Why a document's lines are refused before validation, or None: too many of them."""
    if section not in _LINED or not isinstance(raw, Mapping):
        return None
    lines = raw.get("lines")
    if not isinstance(lines, list) or len(lines) <= limit:
        return None
    return (
        f"{len(lines):,} lines; at most {limit:,} are accepted per document ([pdf] max_lines): "
        "split it into several documents"
    )


def _reject(doc: ParsedDocument, section: str, raw: object) -> None:
    if isinstance(raw, Mapping) and isinstance(raw.get("id"), str):
        doc.rejected[section].add(raw["id"])


def _duplicates(sections: Mapping[str, list[Any]], doc: ParsedDocument) -> set[str]:
    """Flag every record whose id (or invoice or estimate number) occurs twice in its section.

    All occurrences are refused, not just the later ones: two versions of one record in one
    export is an ERP fault, and guessing which is right would silently store the wrong one.
    """
    flagged: set[str] = set()
    for name, records in sections.items():
        for key in ("id", "number") if name in _NUMBERED else ("id",):
            seen: dict[str, list[int]] = defaultdict(list)
            for i, raw in enumerate(records):
                if isinstance(raw, Mapping) and isinstance(raw.get(key), str):
                    seen[raw[key]].append(i)
            for value, positions in seen.items():
                if len(positions) < 2:
                    continue
                for i in positions:
                    others = ", ".join(f"{name}[{j}]" for j in positions if j != i)
                    label = "id" if key == "id" else f"{_NUMBERED[name]} number"
                    where = f"{name}[{i}]"
                    doc.errors.append(
                        DocumentError(
                            f"{where}.{key}", f"duplicate {label} {value!r} (also at {others})"
                        )
                    )
                    flagged.add(where)
                    if key == "id":
                        doc.rejected[name].add(value)
    return flagged


def _validate(model: type[_R], raw: object, where: str, doc: ParsedDocument) -> _R:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            path = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
            doc.errors.append(DocumentError(path, _reason(model, err)))
        raise _Invalid from None


def _reason(model: type[BaseModel], err: Any) -> str:
    kind, loc = err["type"], err["loc"]
    if kind == "value_error":
        return str(err["ctx"]["error"])
    if kind == "missing":
        return "required field is missing"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty"
    if kind == "model_type":
        return "must be an object"
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        allowed = f" (allowed: {', '.join(owner.model_fields)})" if owner else ""
        return f"unknown field {loc[-1]!r}{allowed}"
    return str(err["msg"])


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The nested model class at ``loc``, to list its fields when an unknown one turns up."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        info = current.model_fields.get(part)
        current = None
        for arg in [info.annotation, *get_args(info.annotation)] if info else []:
            for candidate in [arg, *get_args(arg)]:
                if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                    current = candidate
    return current


def _customer(rec: CustomerRecord, where: str, doc: ParsedDocument) -> ParsedCustomer:
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
                raise _Invalid
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


def _invoice(
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
        raise _Invalid
    return ParsedInvoice(
        where, rec.id, rec.number, rec.customer, rec.currency, issued_at, due_at, rec.status, lines
    )


def _credit_note(
    rec: CreditNoteRecord, where: str, doc: ParsedDocument, zone_of: Callable[[str], ZoneInfo]
) -> ParsedCreditNote:
    errors: list[DocumentError] = []
    lines = _lines(rec.lines, rec.currency, where, errors)
    if not errors and sum(line.total_minor for line in lines) <= 0:
        errors.append(DocumentError(f"{where}.lines", "a credit note's total must be positive"))
    doc.errors.extend(errors)
    if errors:
        raise _Invalid
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


def _payment(
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
        raise _Invalid
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


def _refund(
    rec: RefundRecord, where: str, doc: ParsedDocument, payment_zone: Callable[[str], ZoneInfo]
) -> ParsedRefund:
    errors: list[DocumentError] = []
    amount = _amount(rec.amount, rec.currency, f"{where}.amount", errors)
    doc.errors.extend(errors)
    if errors:
        raise _Invalid
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


def _autopay_failure(
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
        raise _Invalid
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


def _subscription(
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
        raise _Invalid
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


def _estimate(
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
        raise _Invalid
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


def _payment_plan(
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
        raise _Invalid
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


def _digest(content: dict[str, Any]) -> str:
    """sha256 of ``content`` as canonical JSON: sorted keys, no spaces, UTF-8."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _canonical(value: Decimal) -> str:
    """One spelling per value: "2.50" and "2.5" hash the same."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text
