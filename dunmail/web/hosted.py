"""PURE: what a customer's link shows: the hosted document page, and where Pay leads.

The page is built from the email's frozen context (``Message.context``), so it shows the
document version that was emailed, never one edited since. Amounts and dates go through the
emails' own Babel formatters (``mailer.content.formatting.format_money``/``format_day``) in the
customer's
locale, so the page says "1.234,50 €" where the email did, and every date is the customer's local
day (``mailer.ledger.localtime``), so the page and the email name the same due date. The page's own
words are in the customer-facing pages' ``portal`` catalogs (``dunmail/portal_words.py``), in the
language the email was written in (``words``; ``fmt.gettext`` marks them for extraction).

Everything here returns plain strings; the page templates (autoescaped) show them as text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from gettext import NullTranslations
from typing import Any
from urllib.parse import quote, urlsplit

from dunmail.web.hosted_format import PageFormat
from mailer.content.kinds import INVOICE_EMAILS, REMINDERS, Kind
from mailer.ledger.localtime import days_between

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


def build_document(
    kind: str,
    context: Mapping[str, Any],
    *,
    sent_at: datetime,
    now: datetime,
    words: NullTranslations | None = None,
) -> HostedDocument:
    """The hosted page of an email of ``kind``: invoice, credit note, statement, estimate,
    payment plan, overdue summary, receipt; a short generic page for any other kind (or for
    a context of an unexpected shape). ``words``: the page's catalog (English without)."""
    fmt = PageFormat(context.get("locale"), context.get("time_zone"), words or NullTranslations())
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


def _bank_transfer(data: object, fmt: PageFormat) -> BankTransfer | None:
    """The email's ``bank_transfer`` block as the page shows it, or None without one."""
    if not isinstance(data, Mapping):
        return None
    holder = (fmt.gettext("Account holder"), str(data["account_name"]))
    rows = [holder, ("IBAN", str(data["iban_display"]))]
    if data.get("bic"):
        rows.append(("BIC", str(data["bic"])))
    rows.append((fmt.gettext("Amount"), fmt.money(data["amount_minor"], data["currency"])))
    qr = data.get("qr")
    shown_qr = qr if isinstance(qr, str) and qr.startswith("data:image/png;base64,") else None
    return BankTransfer(rows, str(data["reference_display"]), shown_qr)


def _lines(lines: object, currency: str, fmt: PageFormat) -> Table:
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
    columns = (fmt.gettext("Description"), fmt.gettext("Quantity"), fmt.gettext("Unit price"))
    return Table((*columns, fmt.gettext("Tax"), fmt.gettext("Amount")), rows, numeric_from=1)


def _invoice(
    kind: str, invoice: Mapping[str, Any], fmt: PageFormat, *, sent_at: datetime, now: datetime
) -> HostedDocument:
    currency = invoice["currency"]
    total, tax, balance = invoice["total_minor"], invoice["tax_minor"], invoice["balance_minor"]
    table = _lines(invoice.get("lines"), currency, fmt)
    table.footer.extend(
        [
            (fmt.gettext("Subtotal"), fmt.money(total - tax, currency)),
            (fmt.gettext("Tax"), fmt.money(tax, currency)),
            (fmt.gettext("Total"), fmt.money(total, currency)),
        ]
    )
    if total != balance:
        table.footer.append((fmt.gettext("Paid"), fmt.money(total - balance, currency)))
    as_of = fmt.gettext("Balance due (as of %(day)s)", day=fmt.day(sent_at.isoformat()))
    summary = [
        (fmt.gettext("Invoice"), str(invoice["number"])),
        (fmt.gettext("Issued"), fmt.day(invoice["issued_at"])),
        (fmt.gettext("Due"), fmt.day(invoice["due_at"])),
        (as_of, fmt.money(balance, currency)),
    ]
    overdue = None
    days = days_between(invoice["due_at"], now, fmt.zone)
    if kind in REMINDERS and balance > 0 and days > 0:
        overdue = fmt.ngettext("%(num)d day overdue", "%(num)d days overdue", days)
    paid = fmt.gettext("This invoice has been paid. Thank you.")
    notes = [paid] if kind == Kind.THANK_YOU else []
    return HostedDocument(
        title=fmt.gettext("Invoice %(number)s", number=invoice["number"]),
        summary=summary,
        table=table,
        notes=notes,
        overdue=overdue,
    )


def _credit_note(note: Mapping[str, Any], fmt: PageFormat) -> HostedDocument:
    currency = note["currency"]
    table = _lines(note.get("lines"), currency, fmt)
    table.footer.extend(
        [
            (fmt.gettext("Tax"), fmt.money(note["tax_minor"], currency)),
            (fmt.gettext("Credit"), fmt.money(note["amount_minor"], currency)),
        ]
    )
    summary = [
        (fmt.gettext("Credit note"), str(note["number"])),
        (fmt.gettext("Issued"), fmt.day(note["issued_at"])),
    ]
    if note.get("invoice_number"):
        summary.append((fmt.gettext("For invoice"), str(note["invoice_number"])))
    summary.append((fmt.gettext("Credit"), fmt.money(note["amount_minor"], currency)))
    reason = fmt.gettext("Reason: %(reason)s", reason=note.get("reason"))
    notes = [reason] if note.get("reason") else []
    title = fmt.gettext("Credit note %(number)s", number=note["number"])
    return HostedDocument(title, summary, table, notes)


def _statement(statement: Mapping[str, Any], fmt: PageFormat) -> HostedDocument:
    currency = statement["currency"]
    open_item = statement.get("style") == "open_item"
    types = {
        "invoice": fmt.gettext("Invoice"),
        "payment": fmt.gettext("Payment"),
        "credit_note": fmt.gettext("Credit note"),
        "refund": fmt.gettext("Refund"),
        "adjustment": fmt.gettext("Adjustment"),
    }
    rows = [
        (
            fmt.day(item["date"]),
            f"{types.get(item['type'], item['type'])} {item['reference']}",
            fmt.day(item.get("due_at")),
            fmt.money(item["amount_minor"], currency),
            fmt.money(item["balance_minor"], currency),
        )
        for item in statement["items"]
    ]
    last = fmt.gettext("Open amount") if open_item else fmt.gettext("Balance")
    columns = (fmt.gettext("Date"), fmt.gettext("Document"), fmt.gettext("Due"))
    table = Table((*columns, fmt.gettext("Amount"), last), rows, numeric_from=3)
    period = f"{fmt.day(statement['period_start'])} – {fmt.day(statement['period_end'])}"
    summary = [(fmt.gettext("Period"), period)]
    if not open_item:
        opening = fmt.money(statement["opening_balance_minor"], currency)
        summary.append((fmt.gettext("Opening balance"), opening))
    summary += [
        (fmt.gettext("Closing balance"), fmt.money(statement["closing_balance_minor"], currency)),
        (fmt.gettext("Overdue"), fmt.money(statement["overdue_minor"], currency)),
    ]
    return HostedDocument(fmt.gettext("Account statement"), summary, table)


def _estimate(estimate: Mapping[str, Any], fmt: PageFormat) -> HostedDocument:
    currency = estimate["currency"]
    table = _lines(estimate.get("lines"), currency, fmt)
    table.footer.extend(
        [
            (fmt.gettext("Tax"), fmt.money(estimate["tax_minor"], currency)),
            (fmt.gettext("Total"), fmt.money(estimate["total_minor"], currency)),
        ]
    )
    summary = [
        (fmt.gettext("Estimate"), str(estimate["number"])),
        (fmt.gettext("Issued"), fmt.day(estimate["issued_at"])),
        (fmt.gettext("Valid until"), fmt.day(estimate["valid_until"])),
        (fmt.gettext("Total"), fmt.money(estimate["total_minor"], currency)),
    ]
    title = fmt.gettext("Estimate %(number)s", number=estimate["number"])
    return HostedDocument(title, summary, table)


def _payment_plan(plan: Mapping[str, Any], fmt: PageFormat) -> HostedDocument:
    currency = plan["currency"]
    rows = [
        (str(n), fmt.day(i["due_at"]), fmt.money(i["amount_minor"], currency))
        for n, i in enumerate(plan["installments"], start=1)
    ]
    columns = (fmt.gettext("Installment"), fmt.gettext("Due on"), fmt.gettext("Amount"))
    table = Table(columns, rows, numeric_from=2)
    table.footer.append((fmt.gettext("Total"), fmt.money(plan["total_minor"], currency)))
    summary = [(fmt.gettext("Payment plan"), str(plan["number"]))]
    invoices = ", ".join(str(i["number"]) for i in plan.get("invoices") or [])
    if invoices:
        summary.append((fmt.gettext("Invoices covered"), invoices))
    if plan.get("approve_by"):
        summary.append((fmt.gettext("Approve by"), fmt.day(plan["approve_by"])))
    notes = [fmt.gettext("Until the plan is approved, the original due dates still apply.")]
    title = fmt.gettext("Payment plan %(number)s", number=plan["number"])
    return HostedDocument(title, summary, table, notes)


def _overdue(overdue: Mapping[str, Any], fmt: PageFormat) -> HostedDocument:
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
    columns = (fmt.gettext("Invoice"), fmt.gettext("Due"), fmt.gettext("Days overdue"))
    table = Table((*columns, fmt.gettext("Balance")), rows, numeric_from=2)
    summary = [(fmt.gettext("Total overdue"), fmt.money(overdue["balance_minor"], currency))]
    return HostedDocument(fmt.gettext("Overdue invoices"), summary, table)


def _receipt(payment: Mapping[str, Any], fmt: PageFormat) -> HostedDocument:
    currency = payment["currency"]
    rows = [(str(a["number"]), fmt.money(a["amount_minor"], currency)) for a in payment["invoices"]]
    table = Table((fmt.gettext("Invoice"), fmt.gettext("Amount applied")), rows, numeric_from=1)
    summary = [
        (fmt.gettext("Receipt"), str(payment["receipt_number"])),
        (fmt.gettext("Received"), fmt.day(payment["received_at"])),
        (fmt.gettext("Amount"), fmt.money(payment["amount_minor"], currency)),
    ]
    if payment.get("method"):
        summary.append((fmt.gettext("Method"), str(payment["method"])))
    title = fmt.gettext("Receipt %(number)s", number=payment["receipt_number"])
    return HostedDocument(title, summary, table)


_BUILDERS = {
    "credit_note": _credit_note,
    "statement": _statement,
    "estimate": _estimate,
    "payment_plan": _payment_plan,
    "overdue": _overdue,
    "payment": _receipt,
}
