"""PURE: complete sample contexts for every PDF document, for tests and bench/render.py.

Amounts are computed like the ledger's, so the totals add up; :func:`mailer.pdf.warm` renders one
to warm a process.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from mailer.errors import TemplateError
from mailer.money import round_minor
from mailer.pdf_html import DOCUMENTS


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
    """A complete, JSON-safe context for ``document``: the shape the templates expect.

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
        },
        "customer": {"name": customer_name, "id": "C-1001"},
    }
    if document in ("invoice", "credit_note", "estimate"):
        body = _sample_invoice(f"{document[:3].upper()}-2026-0042", currency, lines, 0)
        if document == "credit_note":
            body["invoice_number"] = "INV-2026-0017"
            del body["due_at"], body["balance_minor"]
        if document == "estimate":
            body["valid_until"] = "2026-04-01T00:00:00+00:00"
            del body["due_at"], body["balance_minor"]
        context[document] = body
    elif document == "receipt":
        invoices = [
            {**_sample_invoice(f"INV-2026-{40 + i:04d}", currency, lines, i), "balance_minor": 0}
            for i in range(paid)
        ]
        context["payment"] = {
            "reference": "PAY-2026-0007",
            "amount_minor": sum(inv["total_minor"] for inv in invoices),
            "currency": currency,
            "received_at": "2026-03-20T10:30:00+00:00",
            "invoices": invoices,
        }
    elif document == "statement":
        context["statement"] = _sample_statement(currency, mode)
    else:
        raise TemplateError(f"no PDF template for {document!r} (one of {', '.join(DOCUMENTS)})")
    return context


def _sample_invoice(number: str, currency: str, lines: int, seed: int) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for i in range(lines):
        quantity = Decimal((i + seed) % 4 + 1) / (2 if i % 3 == 2 else 1)
        unit_price_minor = 1250 + 375 * ((i * 7 + seed) % 11)
        rate = Decimal(19 if i % 5 else 7)
        net = round_minor(quantity * unit_price_minor)
        tax = round_minor(net * rate / 100)
        rows.append(
            {
                "description": f"Consulting services, work package {i + 1}",
                "quantity": str(quantity.normalize()),
                "unit_price_minor": unit_price_minor,
                "tax_rate": str(rate),
                "net_minor": net,
                "tax_minor": tax,
                "total_minor": net + tax,
            }
        )
    total = sum(row["total_minor"] for row in rows)
    return {
        "number": number,
        "version": 1,
        "currency": currency,
        "total_minor": total,
        "tax_minor": sum(row["tax_minor"] for row in rows),
        "balance_minor": total,
        "issued_at": f"2026-03-{2 + seed:02d}T09:00:00+00:00",
        "due_at": f"2026-04-{1 + seed:02d}T00:00:00+00:00",
        "lines": rows,
    }


def _sample_statement(currency: str, mode: str) -> dict[str, Any]:
    moves = [
        ("2026-02-03", "invoice", "INV-2026-0031", 125000),
        ("2026-02-10", "payment", "PAY-2026-0004", -60000),
        ("2026-02-17", "invoice", "INV-2026-0035", 48050),
        ("2026-02-20", "credit_note", "CRE-2026-0003", -12000),
        ("2026-02-26", "invoice", "INV-2026-0039", 99900),
    ]
    opening = 30000 if mode == "balance_forward" else 0
    balance = opening
    items: list[dict[str, Any]] = []
    for day, kind, number, amount in moves:
        balance += amount
        items.append(
            {
                "date": f"{day}T00:00:00+00:00",
                "type": kind,
                "reference": number,
                "due_at": None,
                "amount_minor": amount,
                "balance_minor": balance if mode == "balance_forward" else amount,
            }
        )
    if mode == "open_item":  # only what is still open, each with its open amount
        items = [item for item in items if item["type"] == "invoice"]
        items[0]["balance_minor"] = 125000 - 60000 - 12000
        balance = sum(item["balance_minor"] for item in items)
    return {
        "style": mode,
        "period_start": "2026-02-01T00:00:00+00:00",
        "period_end": "2026-02-28T00:00:00+00:00",
        "currency": currency,
        "opening_balance_minor": opening,
        "closing_balance_minor": balance,
        "overdue_minor": 0,
        "items": items,
    }
