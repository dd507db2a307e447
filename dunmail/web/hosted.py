"""PURE: what a customer's link shows: the hosted document page, and where Pay leads.

The page is built from the email's frozen context (``Message.context``), so it shows the
document version that was emailed, never one edited since. Amounts and dates go through the
emails' own Babel formatters (``mailer.content.formatting.format_money``/``format_day``) in the
customer's
locale, so the page says "1.234,50 €" where the email did, and every date is the customer's local
day (``mailer.ledger.localtime``), so the page and the email name the same due date. The page's own
words are English: the email catalogs translate whole email sentences, not these labels.

Everything here returns plain strings; the page templates (autoescaped) show them as text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from mailer.content.formatting import format_day, format_money, normalise_locale
from mailer.content.kinds import INVOICE_EMAILS, REMINDERS, Kind
from mailer.ledger.localtime import DEFAULT_ZONE, days_between, local_date

# The emails' default, and the only shape a colour may have: it goes into a <style> block.
DEFAULT_BRAND = "#1f6feb"
_HEX_COLOR = re.compile(r"#(?:[0-9a-fA-F]{3}){1,2}")

# Where each kind keeps its document's number in the context (a receipt's is its own field).
_NUMBERED = ("invoice", "credit_note", "estimate", "payment_plan")


@dataclass(frozen=True)
class Table:
    """A table of the page: column headings and rows of text (the last columns are numbers)."""

    columns: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    numeric_from: int  # columns at and after this index are right-aligned
    footer: list[tuple[str, str]] = field(default_factory=list)  # (label, amount) under it


@dataclass(frozen=True)
class BankTransfer:
    """How to pay by bank transfer, as the email showed it (``mailer/content/bank_transfer.py``):
    labelled rows of text, the reference among them, and the EPC QR code as a PNG data: URI."""

    rows: list[tuple[str, str]]
    reference: str
    qr: str | None = None


@dataclass(frozen=True)
class HostedDocument:
    """The page of one emailed document, ready for the template: every value is text."""

    title: str
    summary: list[tuple[str, str]]  # label -> value, the figures a customer looks for first
    table: Table | None = None
    notes: list[str] = field(default_factory=list)
    overdue: str | None = None  # "12 days overdue", shown prominently
    bank_transfer: BankTransfer | None = None  # where the tenant has [bank] and money is due


@dataclass(frozen=True)
class Branding:
    """How the page looks: the tenant's colour, logo, name, postal address and legal line."""

    name: str
    email: str
    brand_color: str
    logo_url: str | None
    address: list[str]
    footer: str | None


def build_branding(context: Mapping[str, Any], config: Mapping[str, Any]) -> Branding:
    """The tenant's branding as configured now (``BrandingConfig.as_context()``), over what the
    email's context carried; the colour is checked again because it goes into CSS."""
    tenant = context.get("tenant")
    tenant = tenant if isinstance(tenant, Mapping) else {}

    def pick(key: str) -> Any:
        value = config.get(key)
        return value if value not in (None, []) else tenant.get(key)

    color = pick("brand_color")
    logo = pick("logo_url")
    address = pick("address")
    footer = pick("footer")
    return Branding(
        name=str(tenant.get("name") or ""),
        email=str(tenant.get("email") or ""),
        brand_color=color
        if isinstance(color, str) and _HEX_COLOR.fullmatch(color)
        else DEFAULT_BRAND,
        logo_url=logo if isinstance(logo, str) and logo.startswith("https://") else None,
        address=[str(line) for line in address] if isinstance(address, list) else [],
        footer=str(footer) if footer else None,
    )


def document_number(context: Mapping[str, Any], fallback: str) -> str:
    """The number a person would quote for the document (``INV-1042``), else ``fallback``."""
    for key in _NUMBERED:
        body = context.get(key)
        if isinstance(body, Mapping) and body.get("number"):
            return str(body["number"])
    for key in ("payment", "refund"):
        body = context.get(key)
        if isinstance(body, Mapping) and body.get("receipt_number"):
            return str(body["receipt_number"])
    autopay = context.get("autopay")
    if isinstance(autopay, Mapping) and autopay.get("invoice_number"):
        return str(autopay["invoice_number"])
    return fallback


def payment_target(template: str | None, **values: str) -> str | None:
    """The tenant's payment URL with ``{number}``, ``{document}`` and ``{customer}`` filled in,
    each URL-encoded as one path segment; None without a template.

    The target comes only from the configured template, never from the request, so a link
    cannot become an open redirect. A placeholder in the scheme or host is refused (a document
    number must not pick the host), and the result must keep the template's scheme and host.
    """
    if not template:
        return None
    parts = urlsplit(template)
    if "{" in parts.scheme or "{" in parts.netloc:
        return None
    try:
        filled = template.format(**{k: quote(v, safe="") for k, v in values.items()})
    except (KeyError, IndexError, ValueError):
        return None
    result = urlsplit(filled)
    if (result.scheme, result.netloc) != (parts.scheme, parts.netloc):
        return None
    return filled


class _Format:
    """Money and dates in the customer's locale, the way the emails format them; dates are the
    day it is in the customer's zone (``time_zone``; UTC for an email queued without one)."""

    def __init__(self, locale: object, zone: object = None) -> None:
        self.locale = normalise_locale(locale if isinstance(locale, str) else None)
        self.zone = zone if isinstance(zone, str) and zone else DEFAULT_ZONE

    def money(self, amount_minor: object, currency: object) -> str:
        if not isinstance(amount_minor, int) or not isinstance(currency, str):
            return ""
        return format_money(amount_minor, currency, self.locale)

    def day(self, value: object) -> str:
        if not isinstance(value, str) or not value:
            return ""
        return format_day(local_date(value, self.zone), "medium", self.locale)


def build_document(
    kind: str, context: Mapping[str, Any], *, sent_at: datetime, now: datetime
) -> HostedDocument:
    """The hosted page of an email of ``kind``: invoice, credit note, statement, estimate,
    payment plan, overdue summary, receipt; a short generic page for any other kind (or for
    a context of an unexpected shape)."""
    fmt = _Format(context.get("locale"), context.get("time_zone"))
    try:
        if kind in INVOICE_EMAILS and isinstance(context.get("invoice"), Mapping):
            doc = _invoice(kind, context["invoice"], fmt, sent_at=sent_at, now=now)
            return replace(doc, bank_transfer=_bank_transfer(context.get("bank_transfer"), fmt))
        for key, builder in _BUILDERS.items():
            body = context.get(key)
            if isinstance(body, Mapping):
                transfer = _bank_transfer(context.get("bank_transfer"), fmt)
                return replace(builder(body, fmt), bank_transfer=transfer)
    except (KeyError, TypeError, ValueError, AttributeError):
        pass  # a context of another shape: the generic page still says who sent what
    return HostedDocument(title=kind.replace("_", " ").capitalize(), summary=[])


def _bank_transfer(data: object, fmt: _Format) -> BankTransfer | None:
    """The email's ``bank_transfer`` block as the page shows it, or None without one."""
    if not isinstance(data, Mapping):
        return None
    rows = [("Account holder", str(data["account_name"])), ("IBAN", str(data["iban_display"]))]
    if data.get("bic"):
        rows.append(("BIC", str(data["bic"])))
    rows.append(("Amount", fmt.money(data["amount_minor"], data["currency"])))
    qr = data.get("qr")
    shown_qr = qr if isinstance(qr, str) and qr.startswith("data:image/png;base64,") else None
    return BankTransfer(rows, str(data["reference_display"]), shown_qr)


def _lines(lines: object, currency: str, fmt: _Format) -> Table:
    rows = []
    for line in lines if isinstance(lines, Sequence) else []:
        tax = line.get("tax_rate")
        rows.append(
            (
                str(line.get("description", "")),
                str(line.get("quantity", "")),
                fmt.money(line.get("unit_price_minor"), currency),
                f"{tax} %" if tax not in (None, "") else "",
                fmt.money(line.get("net_minor"), currency),
            )
        )
    return Table(("Description", "Quantity", "Unit price", "Tax", "Amount"), rows, numeric_from=1)


def _invoice(
    kind: str, invoice: Mapping[str, Any], fmt: _Format, *, sent_at: datetime, now: datetime
) -> HostedDocument:
    currency = invoice["currency"]
    total, tax, balance = invoice["total_minor"], invoice["tax_minor"], invoice["balance_minor"]
    table = _lines(invoice.get("lines"), currency, fmt)
    table.footer.extend(
        [
            ("Subtotal", fmt.money(total - tax, currency)),
            ("Tax", fmt.money(tax, currency)),
            ("Total", fmt.money(total, currency)),
        ]
    )
    if total != balance:
        table.footer.append(("Paid", fmt.money(total - balance, currency)))
    summary = [
        ("Invoice", str(invoice["number"])),
        ("Issued", fmt.day(invoice["issued_at"])),
        ("Due", fmt.day(invoice["due_at"])),
        (f"Balance due (as of {fmt.day(sent_at.isoformat())})", fmt.money(balance, currency)),
    ]
    overdue = None
    days = days_between(invoice["due_at"], now, fmt.zone)
    if kind in REMINDERS and balance > 0 and days > 0:
        overdue = f"{days} day{'s' if days != 1 else ''} overdue"
    notes = ["This invoice has been paid. Thank you."] if kind == Kind.THANK_YOU else []
    return HostedDocument(
        title=f"Invoice {invoice['number']}",
        summary=summary,
        table=table,
        notes=notes,
        overdue=overdue,
    )


def _credit_note(note: Mapping[str, Any], fmt: _Format) -> HostedDocument:
    currency = note["currency"]
    table = _lines(note.get("lines"), currency, fmt)
    table.footer.extend(
        [
            ("Tax", fmt.money(note["tax_minor"], currency)),
            ("Credit", fmt.money(note["amount_minor"], currency)),
        ]
    )
    summary = [("Credit note", str(note["number"])), ("Issued", fmt.day(note["issued_at"]))]
    if note.get("invoice_number"):
        summary.append(("For invoice", str(note["invoice_number"])))
    summary.append(("Credit", fmt.money(note["amount_minor"], currency)))
    notes = [f"Reason: {note['reason']}"] if note.get("reason") else []
    return HostedDocument(f"Credit note {note['number']}", summary, table, notes)


_ITEM_TYPES = {
    "invoice": "Invoice",
    "payment": "Payment",
    "credit_note": "Credit note",
    "refund": "Refund",
    "adjustment": "Adjustment",
}


def _statement(statement: Mapping[str, Any], fmt: _Format) -> HostedDocument:
    currency = statement["currency"]
    open_item = statement.get("style") == "open_item"
    rows = [
        (
            fmt.day(item["date"]),
            f"{_ITEM_TYPES.get(item['type'], item['type'])} {item['reference']}",
            fmt.day(item.get("due_at")),
            fmt.money(item["amount_minor"], currency),
            fmt.money(item["balance_minor"], currency),
        )
        for item in statement["items"]
    ]
    last = "Open amount" if open_item else "Balance"
    table = Table(("Date", "Document", "Due", "Amount", last), rows, numeric_from=3)
    summary = [
        ("Period", f"{fmt.day(statement['period_start'])} – {fmt.day(statement['period_end'])}"),
    ]
    if not open_item:
        summary.append(("Opening balance", fmt.money(statement["opening_balance_minor"], currency)))
    summary += [
        ("Closing balance", fmt.money(statement["closing_balance_minor"], currency)),
        ("Overdue", fmt.money(statement["overdue_minor"], currency)),
    ]
    return HostedDocument("Account statement", summary, table)


def _estimate(estimate: Mapping[str, Any], fmt: _Format) -> HostedDocument:
    currency = estimate["currency"]
    table = _lines(estimate.get("lines"), currency, fmt)
    table.footer.extend(
        [
            ("Tax", fmt.money(estimate["tax_minor"], currency)),
            ("Total", fmt.money(estimate["total_minor"], currency)),
        ]
    )
    summary = [
        ("Estimate", str(estimate["number"])),
        ("Issued", fmt.day(estimate["issued_at"])),
        ("Valid until", fmt.day(estimate["valid_until"])),
        ("Total", fmt.money(estimate["total_minor"], currency)),
    ]
    return HostedDocument(f"Estimate {estimate['number']}", summary, table)


def _payment_plan(plan: Mapping[str, Any], fmt: _Format) -> HostedDocument:
    currency = plan["currency"]
    rows = [
        (str(n), fmt.day(i["due_at"]), fmt.money(i["amount_minor"], currency))
        for n, i in enumerate(plan["installments"], start=1)
    ]
    table = Table(("Installment", "Due on", "Amount"), rows, numeric_from=2)
    table.footer.append(("Total", fmt.money(plan["total_minor"], currency)))
    summary = [("Payment plan", str(plan["number"]))]
    invoices = ", ".join(str(i["number"]) for i in plan.get("invoices") or [])
    if invoices:
        summary.append(("Invoices covered", invoices))
    if plan.get("approve_by"):
        summary.append(("Approve by", fmt.day(plan["approve_by"])))
    notes = ["Until the plan is approved, the original due dates still apply."]
    return HostedDocument(f"Payment plan {plan['number']}", summary, table, notes)


def _overdue(overdue: Mapping[str, Any], fmt: _Format) -> HostedDocument:
    currency = overdue["currency"]
    rows = [
        (
            str(i["number"]),
            fmt.day(i["due_at"]),
            str(i["days_overdue"]),
            fmt.money(i["balance_minor"], currency),
        )
        for i in overdue["items"]
    ]
    table = Table(("Invoice", "Due", "Days overdue", "Balance"), rows, numeric_from=2)
    summary = [("Total overdue", fmt.money(overdue["balance_minor"], currency))]
    return HostedDocument("Overdue invoices", summary, table)


def _receipt(payment: Mapping[str, Any], fmt: _Format) -> HostedDocument:
    currency = payment["currency"]
    rows = [(str(a["number"]), fmt.money(a["amount_minor"], currency)) for a in payment["invoices"]]
    table = Table(("Invoice", "Amount applied"), rows, numeric_from=1)
    summary = [
        ("Receipt", str(payment["receipt_number"])),
        ("Received", fmt.day(payment["received_at"])),
        ("Amount", fmt.money(payment["amount_minor"], currency)),
    ]
    if payment.get("method"):
        summary.append(("Method", str(payment["method"])))
    return HostedDocument(f"Receipt {payment['receipt_number']}", summary, table)


_BUILDERS = {
    "credit_note": _credit_note,
    "statement": _statement,
    "estimate": _estimate,
    "payment_plan": _payment_plan,
    "overdue": _overdue,
    "payment": _receipt,
}
