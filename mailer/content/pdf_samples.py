"""PURE: complete sample contexts for every PDF document, for tests and bench/render.py.

Each document's part is built by the very function the outbox's context comes from
(:func:`mailer.content.event_context.invoice_data`, ``credit_note_context``, ``payment_context``,
``refund_context``, ``estimate_context``, :func:`mailer.content.statement.statement`) on ledger rows
made here, so a template that passes with a sample passes with a real email: hand-written
samples once carried keys no real context has, and every receipt and credit note failed.
Amounts are computed like the ledger's, so the totals add up; :func:`mailer.content.pdf.warm`
renders
one to warm a process.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from mailer.content.event_context import (
    credit_note_context,
    estimate_context,
    invoice_data,
    payment_context,
    refund_context,
)
from mailer.content.pdf_html import DOCUMENTS
from mailer.content.statement import Transaction, statement
from mailer.errors import TemplateError
from mailer.ledger.models import CreditNote, Estimate, EstimateStatus, Invoice, Payment, Refund
from mailer.ledger.money import round_minor
from mailer.ledger.parsed import ParsedLine

_MARCH = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def sample_pdf_context(
    document: str,
    *,
    locale: str = "en",
    currency: str = "EUR",
    lines: int = 8,
    customer_name: str = "Müller & Söhne GmbH",
    paid: int = 2,
    mode: str = "open_item",
) -> dict[str, Any]:
    """A complete, JSON-safe context for ``document``: the shape the outbox gives the PDF
    (``mailer.content.pdfstore.build_pdf_context`` of an email's context).

    Amounts are computed like the ledger's (net = quantity x unit price, tax per line,
    half-even), so totals add up; ``paid`` is the number of invoices a receipt settles and
    ``mode`` the statement mode.
    """
    context: dict[str, Any] = {
        "locale": locale,
        "tenant": {
            "name": "Acme Supplies Ltd",
            "email": "accounts@acme.example",
            "address": ["12 Harbour Road", "Bristol BS1 4RN", "United Kingdom"],
            "logo_url": None,
            "brand_color": "#0b6e4f",
            "footer": "Acme Supplies Ltd · Registered in England 01234567 · VAT GB123456789",
            "tax_id": "GB123456789",
        },
        "customer": {
            "name": customer_name,
            "id": "C-1001",
            "billing_address": ["Königsallee 27", "40212 Düsseldorf", "Germany"],
            "tax_id": "DE811907980",
        },
    }
    if document == "invoice":
        context["invoice"] = invoice_data(_invoice("INV-2026-0042", currency, lines, 0))
    elif document == "credit_note":
        context.update(_credit_note(currency, lines))
    elif document == "estimate":
        context.update(_estimate(currency, lines))
    elif document == "receipt":
        context.update(_receipt(currency, lines, paid))
    elif document == "refund":
        context.update(_refund(currency))
    elif document == "statement":
        context.update(_statement(currency, mode))
    else:
        raise TemplateError(f"no PDF template for {document!r} (one of {', '.join(DOCUMENTS)})")
    return context


def _lines(lines: int, seed: int) -> list[dict[str, Any]]:
    """Stored lines (``ParsedLine.as_json()``), priced as the import prices them."""
    rows: list[dict[str, Any]] = []
    for i in range(lines):
        quantity = Decimal((i + seed) % 4 + 1) / (2 if i % 3 == 2 else 1)
        unit_price_minor = 1250 + 375 * ((i * 7 + seed) % 11)
        rate = Decimal(19 if i % 5 else 7)
        net = round_minor(quantity * unit_price_minor)
        tax = round_minor(net * rate / 100)
        line = ParsedLine(
            f"Consulting services, work package {i + 1}",
            quantity.normalize(),
            unit_price_minor,
            rate,
            net,
            tax,
        )
        rows.append(line.as_json())
    return rows


def _invoice(number: str, currency: str, lines: int, seed: int) -> Invoice:
    rows = _lines(lines, seed)
    total = sum(row["total_minor"] for row in rows)
    issued = _MARCH + timedelta(days=seed)
    return Invoice(
        tenant_id=1,
        customer_id=1,
        content_hash="sample",
        external_id=f"erp-{number}",
        number=number,
        currency=currency,
        issued_at=issued,
        due_at=issued + timedelta(days=30),
        total_minor=total,
        tax_minor=sum(row["tax_minor"] for row in rows),
        balance_minor=total,
        lines=rows,
    )


def _credit_note(currency: str, lines: int) -> dict[str, Any]:
    rows = _lines(lines, 0)
    note = CreditNote(
        tenant_id=1,
        customer_id=1,
        external_id="cn-42",
        number="CRE-2026-0042",
        currency=currency,
        amount_minor=sum(row["total_minor"] for row in rows),
        issued_at=_MARCH,
        lines=rows,
        reason="Goodwill for the late delivery",
    )
    return credit_note_context(note, "INV-2026-0017")


def _estimate(currency: str, lines: int) -> dict[str, Any]:
    rows = _lines(lines, 0)
    estimate = Estimate(
        tenant_id=1,
        customer_id=1,
        content_hash="sample",
        external_id="est-42",
        number="EST-2026-0042",
        currency=currency,
        issued_at=_MARCH,
        valid_until=_MARCH + timedelta(days=30),
        status=EstimateStatus.SENT,
        total_minor=sum(row["total_minor"] for row in rows),
        tax_minor=sum(row["tax_minor"] for row in rows),
        lines=rows,
    )
    return estimate_context(estimate)


def _receipt(currency: str, lines: int, paid: int) -> dict[str, Any]:
    """A payment that settles ``paid`` invoices in full, as the ledger leaves them: paid."""
    invoices = [_invoice(f"INV-2026-{40 + i:04d}", currency, lines, i) for i in range(paid)]
    allocations = [(invoice, invoice.total_minor) for invoice in invoices]
    for invoice in invoices:
        invoice.balance_minor = 0
    payment = Payment(
        tenant_id=1,
        customer_id=1,
        external_id="pay-7",
        amount_minor=sum(amount for _, amount in allocations),
        currency=currency,
        received_at=datetime(2026, 3, 20, 10, 30, tzinfo=UTC),
        method="Visa •••• 4242",
        receipt_number="PAY-2026-0007",
    )
    return payment_context(payment, allocations)


def _refund(currency: str) -> dict[str, Any]:
    payment = Payment(
        tenant_id=1,
        customer_id=1,
        external_id="pay-7",
        amount_minor=125000,
        currency=currency,
        received_at=datetime(2026, 3, 20, 10, 30, tzinfo=UTC),
    )
    refund = Refund(
        tenant_id=1,
        customer_id=1,
        payment_id=1,
        external_id="rf-3",
        amount_minor=12000,
        currency=currency,
        refunded_at=datetime(2026, 3, 24, 15, 0, tzinfo=UTC),
        method="Visa •••• 4242",
        reason="Duplicate charge",
        receipt_number="REF-2026-0003",
    )
    return refund_context(refund, payment)


def _statement(currency: str, mode: str) -> dict[str, Any]:
    """February's statement of a customer who also had a January invoice, now paid."""

    def day(text: str) -> datetime:
        return datetime.fromisoformat(f"{text}T00:00:00+00:00")

    moves = [
        Transaction(day("2026-01-20"), "invoice", "INV-2026-0020", currency, 30000),
        Transaction(day("2026-02-03"), "invoice", "INV-2026-0031", currency, 125000),
        Transaction(day("2026-02-10"), "payment", "PAY-2026-0004", currency, -60000),
        Transaction(day("2026-02-17"), "invoice", "INV-2026-0035", currency, 48050),
        Transaction(day("2026-02-20"), "credit_note", "CRE-2026-0003", currency, -12000),
        Transaction(day("2026-02-26"), "invoice", "INV-2026-0039", currency, 99900),
    ]
    open_minor = {"INV-2026-0031": 125000 - 60000 - 12000, "INV-2026-0035": 48050}
    open_minor["INV-2026-0039"] = 99900
    moves = [
        Transaction(
            t.at,
            t.type,
            t.reference,
            t.currency,
            t.amount_minor,
            due_at=t.at + timedelta(days=30) if t.type == "invoice" else None,
            open_minor=open_minor.get(t.reference, 0),
        )
        for t in moves
    ]
    if mode not in ("open_item", "balance_forward"):
        raise TemplateError(f"no statement style {mode!r}")
    style: Any = mode
    content = statement(
        style, moves, currency=currency, start=day("2026-02-01"), end=day("2026-02-28")
    )
    if content is None:  # never: these moves always leave something to say
        raise TemplateError("the sample statement is empty")
    return content
