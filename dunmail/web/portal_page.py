"""PURE: the customer's account page and the hand-off page, as text ready for the templates.

Amounts and dates go through the emails' own Babel formatters
(``mailer.content.formatting.format_money``/``format_day``) in the locale the customer's emails
format with, and every date is the customer's local day (``mailer.ledger.localtime``), so the
page, the email and the PDF write "1.234,50 €" and the due date the same way. The page's labels
are the ``portal`` gettext domain's (``dunmail/portal_words.py``): ``words.gettext`` here, ``_``
in the templates. Open invoices are grouped per currency (they are paid per currency), then
overdue, due soon (within :data:`DUE_SOON_DAYS` local days) and open.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from gettext import NullTranslations

from dunmail.services.handoff import Selection
from dunmail.services.portal import Account, OpenInvoice
from mailer.content.formatting import format_day, format_money
from mailer.ledger.localtime import days_between, local_date

DUE_SOON_DAYS = 7
DATE_FORMAT = "medium"  # the emails' ``date`` filter's default


@dataclass(frozen=True)
class InvoiceRow:
    id: int
    number: str
    issued: str
    due: str
    total: str
    balance: str
    state: str  # "12 days overdue", "Due in 3 days", "Due today"
    pdf_url: str | None


@dataclass(frozen=True)
class Group:
    key: str  # "overdue", "due_soon", "open": also its CSS class
    title: str
    rows: list[InvoiceRow]


@dataclass(frozen=True)
class CurrencyBlock:
    """One currency's open invoices: one form, paid separately from the others."""

    currency: str
    total: str  # the open balance in this currency
    overdue_total: str | None  # None: nothing overdue, no "pay all overdue" button
    groups: list[Group]


@dataclass(frozen=True)
class AccountPage:
    customer_name: str
    tenant_name: str
    lang: str
    blocks: list[CurrencyBlock]
    credits: list[tuple[str, str, str]]  # number, issued, amount
    payments: list[tuple[str, str, str, str]]  # reference, received, method, amount
    can_pay: bool


def _day(value: datetime, account: Account) -> str:
    return format_day(local_date(value, account.time_zone), DATE_FORMAT, account.locale)


def _state(invoice: OpenInvoice, account: Account, now: datetime, words: NullTranslations) -> str:
    late = days_between(invoice.due_at, now, account.time_zone)
    if late > 0:
        return words.ngettext("%(num)d day overdue", "%(num)d days overdue", late) % {"num": late}
    if late == 0:
        return words.gettext("Due today")
    return words.ngettext("Due in %(num)d day", "Due in %(num)d days", -late) % {"num": -late}


def _group_of(invoice: OpenInvoice, account: Account, now: datetime) -> str:
    late = days_between(invoice.due_at, now, account.time_zone)
    if late > 0:
        return "overdue"
    return "due_soon" if -late <= DUE_SOON_DAYS else "open"


def build_account(account: Account, *, now: datetime, words: NullTranslations) -> AccountPage:
    """The account page of ``account`` as the customer reads it at ``now``."""
    titles = {
        "overdue": words.gettext("Overdue"),
        "due_soon": words.gettext("Due soon"),
        "open": words.gettext("Open"),
    }
    blocks = []
    for currency in sorted({i.currency for i in account.invoices}):
        mine = [i for i in account.invoices if i.currency == currency]
        grouped: dict[str, list[InvoiceRow]] = {key: [] for key in titles}
        overdue_minor = 0
        for invoice in mine:
            key = _group_of(invoice, account, now)
            overdue_minor += invoice.balance_minor if key == "overdue" else 0
            grouped[key].append(
                InvoiceRow(
                    id=invoice.id,
                    number=invoice.number,
                    issued=_day(invoice.issued_at, account),
                    due=_day(invoice.due_at, account),
                    total=format_money(invoice.total_minor, currency, account.locale),
                    balance=format_money(invoice.balance_minor, currency, account.locale),
                    state=_state(invoice, account, now, words),
                    pdf_url=invoice.pdf_url,
                )
            )
        blocks.append(
            CurrencyBlock(
                currency=currency,
                total=format_money(sum(i.balance_minor for i in mine), currency, account.locale),
                overdue_total=format_money(overdue_minor, currency, account.locale)
                if overdue_minor
                else None,
                groups=[Group(k, titles[k], rows) for k, rows in grouped.items() if rows],
            )
        )
    return AccountPage(
        customer_name=account.customer_name,
        tenant_name=account.tenant_name,
        lang=account.locale.split("_")[0],
        blocks=blocks,
        credits=[
            (
                c.number,
                _day(c.issued_at, account),
                format_money(c.unallocated_minor, c.currency, account.locale),
            )
            for c in account.credits
        ],
        payments=[
            (
                p.reference,
                _day(p.received_at, account),
                p.method or "",
                format_money(p.amount_minor, p.currency, account.locale),
            )
            for p in account.payments
        ],
        can_pay=account.can_pay,
    )


@dataclass(frozen=True)
class HandoffPage:
    total: str
    lines: list[tuple[str, str]]  # invoice number, amount


def build_handoff(selection: Selection, account: Account) -> HandoffPage:
    """What the customer confirms before going to the provider: the server's total."""
    money = [
        (a.number, format_money(a.amount_minor, selection.currency, account.locale))
        for a in selection.allocations
    ]
    return HandoffPage(
        total=format_money(selection.total_minor, selection.currency, account.locale),
        lines=money,
    )


def selected_ids(values: Sequence[str]) -> list[int] | None:
    """The invoice ids of a posted form; None when one is not a plain row id."""
    ids = []
    for value in values:
        if not value.isascii() or not value.isdigit() or len(value) > 10:
            return None
        ids.append(int(value))
    return ids
