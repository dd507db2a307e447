"""PURE: the ERP import document: its wire format, record-by-record validation, minor units."""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from email.headerregistry import Address
from email.utils import parseaddr
from functools import cache
from typing import Annotated, Any, TypeVar, get_args
from zoneinfo import ZoneInfo, available_timezones

from babel import Locale, UnknownLocaleError
from babel.numbers import get_currency_precision, list_currencies
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StringConstraints,
    ValidationError,
)

from mailer.compose import make_address
from mailer.errors import AddressError, DocumentError
from mailer.models import ContactRole, InvoiceStatus

SECTIONS = ("customers", "invoices", "credit_notes", "payments")
MAX_MINOR = 10**15  # far above any real invoice, and safe in a BIGINT and in JSON
_DECIMAL = re.compile(r"[+-]?[0-9]{1,18}(\.[0-9]{1,18})?")
_DATE_ONLY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DOMAIN = re.compile(
    r"(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,63}|xn--[a-z0-9-]{1,59})"
)
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


# -- money ------------------------------------------------------------------------------------


def parse_decimal(value: object) -> Decimal:
    """Read a decimal string ("12.50", "-3", JSON integers too) exactly.

    JSON numbers with a fraction are refused: they arrive as binary floats, so 0.1 + 0.2 cents
    would already be wrong before we see them. Exponents, NaN and thousands separators are
    refused too, so one spelling means one value.
    """
    if isinstance(value, bool):
        raise ValueError('must be a decimal string such as "12.50", not true/false')
    if isinstance(value, int):
        value = str(value)
    elif isinstance(value, float):
        raise ValueError(
            f'must be a decimal string such as "12.50", not the JSON number {value!r} '
            "(floating point loses cents)"
        )
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        raise ValueError(f'must be a decimal string such as "12.50", got {value!r}')
    return Decimal(value)


def to_minor(amount: str | Decimal, currency: str) -> int:
    """Convert an exact amount to integer minor units of ``currency`` (cents, yen, fils).

    The precision is ISO 4217's as Babel knows it (JPY 0, EUR 2, KWD 3). More significant
    decimals than that is an error, never rounded: "100.5" JPY is refused, while trailing zeros
    ("100.00" JPY) are fine because they do not change the value.
    """
    value = parse_decimal(amount) if isinstance(amount, str) else amount
    minor = value.scaleb(get_currency_precision(currency))
    if minor != minor.to_integral_value():
        places = get_currency_precision(currency)
        raise ValueError(
            f"{currency} has {places} decimal place{'s' if places != 1 else ''}; "
            f"{value} cannot be represented exactly"
        )
    return _bounded(int(minor))


def from_minor(amount_minor: int, currency: str) -> Decimal:
    """The inverse of :func:`to_minor`, for messages and rendering ("1250" EUR -> 12.50)."""
    return Decimal(amount_minor).scaleb(-get_currency_precision(currency))


def _bounded(amount_minor: int) -> int:
    if abs(amount_minor) >= MAX_MINOR:
        raise ValueError(f"amount is implausibly large ({amount_minor} minor units)")
    return amount_minor


def _round_minor(value: Decimal) -> int:
    return _bounded(int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN)))


# -- field types --------------------------------------------------------------------------------


def _currency(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError('must be an ISO 4217 currency code such as "EUR"')
    code = value.upper()  # Stripe and others export "eur"; ISO 4217 spells it "EUR"
    if len(code) != 3 or code not in list_currencies():
        raise ValueError(f'unknown currency {value!r} (expected an ISO 4217 code such as "EUR")')
    return code


def _locale(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError('must be a locale such as "en" or "fr_CA"')
    try:
        return str(Locale.parse(value, sep="-" if "-" in value else "_"))
    except (ValueError, UnknownLocaleError):
        raise ValueError(f"unknown locale {value!r}") from None


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_ZONES


def _zone(value: object) -> str:
    if not isinstance(value, str) or value not in _zones():
        raise ValueError(
            f'unknown time zone {value!r} (expected an IANA name such as "Europe/Paris")'
        )
    return value


def _email(value: object) -> str:
    """A bare ``local@domain``, the domain lower-cased (IDNs as A-labels, "xn--...").

    Display names are not accepted. A-labels need no SMTPUTF8 (RFC 6531) from the relay.

    Strict on purpose: CR/LF would be header injection (RFC 5322 s2.2) and spaces, commas or
    angle brackets mean someone pasted a list or a display name into the field.
    """
    if not isinstance(value, str):
        raise ValueError("must be an email address as a string")
    if any(ch.isspace() or ord(ch) < 32 or ch in '<>,;"()[]\\' for ch in value):
        raise ValueError(f"not a single bare email address: {value!r}")
    local, at, domain = value.rpartition("@")
    if not at or not local or "@" in local:
        raise ValueError(f"not an email address (needs exactly one @): {value!r}")
    try:
        domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError(f"not an email address (bad domain {domain!r}): {value!r}") from None
    if not _DOMAIN.fullmatch(domain):
        raise ValueError(f"not an email address (bad domain {domain!r}): {value!r}")
    spec = f"{local}@{domain}"
    try:
        parsed = Address(addr_spec=spec)
        make_address(spec)  # whatever we store must also be sendable by compose.py
    except (ValueError, IndexError, AddressError):
        raise ValueError(f"not an email address: {value!r}") from None
    if parsed.addr_spec != spec or parseaddr(spec)[1] != spec:
        raise ValueError(f"not an email address: {value!r}")
    return spec


def _stamp(value: object) -> date | datetime:
    """An ISO 8601 date or date-time; naive ones are placed in a zone later."""
    if isinstance(value, str):
        try:
            if _DATE_ONLY.fullmatch(value):
                return date.fromisoformat(value)
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f'must be an ISO 8601 date or date-time such as "2026-03-01", got {value!r}')


Text = Annotated[str, StringConstraints(strict=True, max_length=1000)]
Name = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=300)]
ExternalId = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=100)]
Amount = Annotated[Decimal, PlainValidator(parse_decimal)]
Currency = Annotated[str, PlainValidator(_currency)]
LocaleName = Annotated[str, PlainValidator(_locale)]
ZoneName = Annotated[str, PlainValidator(_zone)]
Email = Annotated[str, PlainValidator(_email)]
Stamp = Annotated[date | datetime, PlainValidator(_stamp)]


# -- wire models: the document exactly as the ERP sends it ---------------------------------------


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContactRecord(_Record):
    """A person to email. ``send_invoices`` absent keeps the ledger's value (true when new)."""

    email: Email
    name: Annotated[str, StringConstraints(strict=True, max_length=300)] | None = None
    roles: list[ContactRole] = Field(default_factory=list)
    send_invoices: StrictBool | None = None


class CustomerRecord(_Record):
    """A customer; ``contacts`` absent leaves its contacts alone, ``[]`` removes them all."""

    id: ExternalId
    name: Name
    locale: LocaleName | None = None
    time_zone: ZoneName | None = None
    chase: StrictBool | None = None  # absent keeps the AR team's own switch
    contacts: list[ContactRecord] | None = None


class LineRecord(_Record):
    """One invoice or credit-note line; ``tax_rate`` is a percentage ("20" is 20 %)."""

    description: Text
    quantity: Amount
    unit_price: Amount
    tax_rate: Amount | None = None


class InvoiceRecord(_Record):
    id: ExternalId
    number: ExternalId
    customer: ExternalId
    currency: Currency
    issued_at: Stamp
    due_at: Stamp
    status: InvoiceStatus = InvoiceStatus.OPEN
    lines: list[LineRecord] = Field(min_length=1)


class AllocationRecord(_Record):
    invoice: ExternalId
    amount: Amount


class PaymentRecord(_Record):
    id: ExternalId
    customer: ExternalId
    amount: Amount
    currency: Currency
    received_at: Stamp
    invoices: list[AllocationRecord] = Field(default_factory=list)


class CreditNoteRecord(_Record):
    id: ExternalId
    number: ExternalId
    customer: ExternalId
    currency: Currency
    issued_at: Stamp
    invoice: ExternalId | None = None
    lines: list[LineRecord] = Field(min_length=1)


_MODELS: dict[str, type[_Record]] = {
    "customers": CustomerRecord,
    "invoices": InvoiceRecord,
    "credit_notes": CreditNoteRecord,
    "payments": PaymentRecord,
}


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


@dataclass(frozen=True)
class ParsedInvoice:
    where: str
    external_id: str
    number: str
    customer: str
    currency: str
    issued_at: datetime
    due_at: datetime
    status: InvoiceStatus
    lines: tuple[ParsedLine, ...]

    @property
    def tax_minor(self) -> int:
        return sum(line.tax_minor for line in self.lines)

    @property
    def total_minor(self) -> int:
        return sum(line.total_minor for line in self.lines)

    @property
    def content_hash(self) -> str:
        """sha256 of what the customer sees; status is left out so open->void is no new version.

        Only inputs go in (not the rounded totals), so a change of rounding rule would not
        re-version every invoice in the ledger.
        """
        content = {
            "number": self.number,
            "customer": self.customer,
            "currency": self.currency,
            "issued_at": self.issued_at.isoformat(),
            "due_at": self.due_at.isoformat(),
            "lines": [line.content() for line in self.lines],
        }
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


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

    @property
    def amount_minor(self) -> int:
        return sum(line.total_minor for line in self.lines)


@dataclass
class ParsedDocument:
    """The valid records, the errors of the others, and the ids of the records refused."""

    customers: list[ParsedCustomer] = field(default_factory=list)
    invoices: list[ParsedInvoice] = field(default_factory=list)
    credit_notes: list[ParsedCreditNote] = field(default_factory=list)
    payments: list[ParsedPayment] = field(default_factory=list)
    errors: list[DocumentError] = field(default_factory=list)
    rejected: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


# -- parsing ---------------------------------------------------------------------------------


class _Invalid(Exception):
    """Internal: a record failed; its errors are already collected."""


_R = TypeVar("_R", bound=_Record)


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
) -> ParsedDocument:
    """Validate ``data`` (the decoded JSON) record by record.

    One bad record never stops the others: it becomes a :class:`DocumentError` whose ``where``
    names the field (``invoices[3].lines[1].unit_price``), and the rest are returned parsed.
    Dates without an offset are wall-clock times of the record's customer: its ``time_zone`` in
    this document, else ``customer_zone(external_id)`` (the ledger's, for customers not in the
    document), else ``tenant_zone``.
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

    parsers: dict[str, Callable[[Any, str, ParsedDocument], Any]] = {
        "invoices": lambda r, w, d: _invoice(_validate(InvoiceRecord, r, w, d), w, d, zone_of),
        "credit_notes": lambda r, w, d: _credit_note(
            _validate(CreditNoteRecord, r, w, d), w, d, zone_of
        ),
        "payments": lambda r, w, d: _payment(_validate(PaymentRecord, r, w, d), w, d, zone_of),
    }
    for name, parse in parsers.items():
        target: list[Any] = getattr(doc, name)
        for i, raw in enumerate(sections[name]):
            where = f"{name}[{i}]"
            try:
                record = parse(raw, where, doc)
            except _Invalid:
                _reject(doc, name, raw)
                continue
            if where not in duplicates:
                target.append(record)
    return doc


def _reject(doc: ParsedDocument, section: str, raw: object) -> None:
    if isinstance(raw, Mapping) and isinstance(raw.get("id"), str):
        doc.rejected[section].add(raw["id"])


def _duplicates(sections: Mapping[str, list[Any]], doc: ParsedDocument) -> set[str]:
    """Flag every record whose id (or invoice number) occurs twice in its section.

    All occurrences are refused, not just the later ones: two versions of one record in one
    export is an ERP fault, and guessing which is right would silently store the wrong one.
    """
    flagged: set[str] = set()
    for name, records in sections.items():
        for key in ("id", "number") if name == "invoices" else ("id",):
            seen: dict[str, list[int]] = defaultdict(list)
            for i, raw in enumerate(records):
                if isinstance(raw, Mapping) and isinstance(raw.get(key), str):
                    seen[raw[key]].append(i)
            for value, positions in seen.items():
                if len(positions) < 2:
                    continue
                for i in positions:
                    others = ", ".join(f"{name}[{j}]" for j in positions if j != i)
                    label = "id" if key == "id" else "invoice number"
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
    return ParsedCustomer(where, rec.id, rec.name, rec.locale, rec.time_zone, rec.chase, contacts)


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
                net = _round_minor(rec.quantity * unit)
                tax = _round_minor(net * rate / 100) if rate else 0
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
        where, rec.id, rec.number, rec.customer, rec.currency, issued_at, rec.invoice, lines
    )


def _payment(
    rec: PaymentRecord, where: str, doc: ParsedDocument, zone_of: Callable[[str], ZoneInfo]
) -> ParsedPayment:
    errors: list[DocumentError] = []

    def minor(value: Decimal, at: str) -> int:
        try:
            amount = to_minor(value, rec.currency)
        except ValueError as exc:
            errors.append(DocumentError(at, str(exc)))
            return 0
        if amount <= 0:
            errors.append(DocumentError(at, "must be positive"))
        return amount

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
        where, rec.id, rec.customer, amount, rec.currency, received_at, tuple(allocations)
    )


def _canonical(value: Decimal) -> str:
    """One spelling per value: "2.50" and "2.5" hash the same."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text
