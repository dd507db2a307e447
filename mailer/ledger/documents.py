"""PURE: the ERP import document: record-by-record validation into minor units and aware UTC.

The wire format (field types, the pydantic ``*Record`` models) is in ``mailer.ledger.record``, the
money rules in ``mailer.ledger.money``, each section's parser in ``mailer.ledger.parsers`` and the
``Parsed*`` values in ``mailer.ledger.parsed``; this module runs them over a document and reports
every invalid record at its position, without letting it stop the others.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, get_args
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError

from mailer.errors import DocumentError
from mailer.ledger import parsers
from mailer.ledger.parsed import ParsedDocument
from mailer.ledger.record import (
    AutopayFailureRecord,
    CreditNoteRecord,
    CustomerRecord,
    EstimateRecord,
    InvoiceRecord,
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


# -- parsing ---------------------------------------------------------------------------------


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
            customer = parsers.parse_customer(
                _validate(CustomerRecord, raw, where, doc), where, doc
            )
        except parsers.Invalid:
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

    by_section: dict[str, Callable[[Any, str, ParsedDocument], Any]] = {
        "invoices": lambda r, w, d: parsers.parse_invoice(
            _validate(InvoiceRecord, r, w, d), w, d, zone_of
        ),
        "credit_notes": lambda r, w, d: parsers.parse_credit_note(
            _validate(CreditNoteRecord, r, w, d), w, d, zone_of
        ),
        "payments": lambda r, w, d: parsers.parse_payment(
            _validate(PaymentRecord, r, w, d), w, d, zone_of
        ),
        "refunds": lambda r, w, d: parsers.parse_refund(
            _validate(RefundRecord, r, w, d), w, d, payment_zone
        ),
        "autopay_failures": lambda r, w, d: parsers.parse_autopay_failure(
            _validate(AutopayFailureRecord, r, w, d), w, d, zone_of
        ),
        "subscriptions": lambda r, w, d: parsers.parse_subscription(
            _validate(SubscriptionRecord, r, w, d), w, d, zone_of
        ),
        "estimates": lambda r, w, d: parsers.parse_estimate(
            _validate(EstimateRecord, r, w, d), w, d, zone_of
        ),
        "payment_plans": lambda r, w, d: parsers.parse_payment_plan(
            _validate(PaymentPlanRecord, r, w, d), w, d, zone_of
        ),
    }
    for name, parse in by_section.items():
        target: list[Any] = getattr(doc, name)
        for i, raw in enumerate(sections[name]):
            where = f"{name}[{i}]"
            if (too_long := _too_many_lines(name, raw, max_lines)) is not None:
                doc.errors.append(DocumentError(f"{where}.lines", too_long))
                _reject(doc, name, raw)
                continue
            try:
                record = parse(raw, where, doc)
            except parsers.Invalid:
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
        raise parsers.Invalid from None


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
