"""PURE: the one registry of email kinds: what each is for, what it attaches, what it may show.

A kind's name is also its template folder (``templates/email/<kind>/``). The context each kind
renders with is a JSON-safe snapshot taken when the email is enqueued (see
``mailer/content/context.py``)
and is typed below as one ``TypedDict`` per document, so the shapes live in one place:

* every kind: ``locale``, ``tenant`` (:class:`TenantData`), ``customer`` (:class:`CustomerData`),
  ``links`` (purpose -> URL or None; a button is shown only for a URL), ``time_zone`` (the
  customer's IANA zone, else the tenant's: the ``date`` filters print each instant as the day
  it is there; a context queued before it existed has none and prints UTC days) and
  optionally ``fallback_locale`` (the tenant's default language, used when the customer's has
  no translation) and ``fresh_link`` (the copy a customer's request for a new link sends: it
  says only "here is your new link", in the shared ``_fresh_link*`` templates);
* ``new_invoice``, ``invoice_reminder``, ``late_payment_reminder``: ``invoice`` and
  ``days_overdue``; ``thank_you``: ``invoice`` and ``paid_at``;
* ``overdue_summary``: ``overdue`` (all of a customer's overdue invoices in one currency) and
  ``days_overdue`` (of the oldest); sent instead of one ``late_payment_reminder`` per invoice
  when a tenant's cadence chases per customer;
* ``payment_plan``: ``payment_plan``; ``credit_note``: ``credit_note``; ``payment_receipt``:
  ``payment``; ``refund``: ``refund``; ``autopay_failed``: ``autopay``; ``statement``:
  ``statement``; ``estimate``: ``estimate``;
* ``subscription_confirmation``, ``subscription_cancelled``: ``subscription``;
  ``subscription_billed_soon``: ``subscription`` and ``days_until_bill``.

Money is integer minor units plus an ISO 4217 ``currency``; times are ISO 8601 strings of UTC
instants (a date imported without a time is midnight in ``time_zone``), printed and counted in
days only through ``mailer.ledger.localtime``.
``KindSpec.variables`` is derived from these types, so the check of a tenant's template override
("may it use ``payment``?") cannot drift from what the engine actually passes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal, NotRequired, TypedDict

from mailer.errors import TemplateError


class Kind(StrEnum):
    """Every email kind the registry knows, named once: code writes ``Kind.STATEMENT``, never
    ``"statement"``. A member equals its string, so stored rows, JSON contexts, template folders
    and configuration keep the plain string."""

    NEW_INVOICE = "new_invoice"
    INVOICE_REMINDER = "invoice_reminder"
    LATE_PAYMENT_REMINDER = "late_payment_reminder"
    OVERDUE_SUMMARY = "overdue_summary"
    THANK_YOU = "thank_you"
    PAYMENT_PLAN = "payment_plan"
    CREDIT_NOTE = "credit_note"
    PAYMENT_RECEIPT = "payment_receipt"
    REFUND = "refund"
    AUTOPAY_FAILED = "autopay_failed"
    STATEMENT = "statement"
    ESTIMATE = "estimate"
    SUBSCRIPTION_CONFIRMATION = "subscription_confirmation"
    SUBSCRIPTION_BILLED_SOON = "subscription_billed_soon"
    SUBSCRIPTION_CANCELLED = "subscription_cancelled"


# The groups code asks about, each defined here only (tests/qa checks no module keeps a copy).
# The dunning cadence's reminders about one invoice: before it is due, and after.
REMINDERS: tuple[Kind, ...] = (Kind.INVOICE_REMINDER, Kind.LATE_PAYMENT_REMINDER)
# The emails that ask a customer to pay one invoice: pre-flight re-checks they are still due.
PAYMENT_REQUESTS: tuple[Kind, ...] = (Kind.NEW_INVOICE, *REMINDERS)
# Every email about one invoice (its context carries ``invoice``): the payment requests and the
# thank-you. These are the kinds a person may send, preview or open as an invoice page.
INVOICE_EMAILS: tuple[Kind, ...] = (*PAYMENT_REQUESTS, Kind.THANK_YOU)
# REMINDERS as a type for settings (``CadenceStep.kind``): strings, so a wrong name's error lists
# the names a person writes (a test checks it against REMINDERS).
ReminderKind = Literal["invoice_reminder", "late_payment_reminder"]


def reminder_for(*, overdue: bool) -> Kind:
    """The reminder an invoice calls for: before its due date a reminder, from then on a chase."""
    return Kind.LATE_PAYMENT_REMINDER if overdue else Kind.INVOICE_REMINDER


# A PDF document: a template in ``templates/pdf/`` reading one key of its kind's context
# (``mailer.content.pdf_html.DOCUMENTS``): a refund's receipt reads ``refund``, a payment's
# ``payment``.
Pdf = Literal["invoice", "credit_note", "receipt", "refund", "statement", "estimate"]
Button = Literal["view", "pay", "update_payment", "manage", "download"]


class TenantData(TypedDict):
    """The sender and its branding; every branding key is optional."""

    name: str
    email: str
    logo_url: NotRequired[str | None]  # https URL of the logo: the one external resource allowed
    brand_color: NotRequired[str | None]  # "#0b5cad"; anything else falls back to the default
    address: NotRequired[list[str]]  # postal address, one line each
    footer: NotRequired[str | None]  # legal line (company number, VAT id)
    css: NotRequired[str | None]  # extra CSS rules; sanitised, then inlined


class CustomerData(TypedDict):
    name: str
    id: str


class LineData(TypedDict):
    """One stored document line (``ParsedLine.as_json()``)."""

    description: str
    quantity: str
    unit_price_minor: int
    tax_rate: str | None
    net_minor: int
    tax_minor: int
    total_minor: int


class InvoiceData(TypedDict):
    number: str
    version: int
    currency: str
    total_minor: int
    tax_minor: int
    balance_minor: int
    issued_at: str
    due_at: str
    lines: list[LineData]


class CreditNoteData(TypedDict):
    number: str
    # Rises with every change, like an invoice's; absent from contexts queued before the PDF
    # showed it (the template reads it as 1).
    version: NotRequired[int]
    currency: str
    amount_minor: int  # the credit, tax included
    tax_minor: int
    issued_at: str
    invoice_number: str | None  # the invoice it credits, if any
    reason: str | None  # the tenant's own words, shown as given
    lines: list[LineData]


class AllocationData(TypedDict):
    number: str  # invoice number
    amount_minor: int


class PaidInvoiceData(AllocationData):
    """What a payment applied to one invoice, and that invoice as the payment left it: the
    receipt PDF gives it a page of its own. ``invoice`` is absent from receipts queued before
    it was recorded; their PDF lists the allocation alone."""

    invoice: NotRequired[InvoiceData]


class PaymentData(TypedDict):
    receipt_number: str
    amount_minor: int
    currency: str
    received_at: str
    method: str | None  # a label such as "Visa •••• 4242", shown as given
    invoices: list[PaidInvoiceData]  # what it paid
    unapplied_minor: int  # left on account


class RefundData(TypedDict):
    receipt_number: str
    amount_minor: int
    currency: str
    refunded_at: str
    method: str | None
    reason: str | None
    payment_received_at: str  # when the refunded payment arrived


DeclineReason = Literal[
    "insufficient_funds",
    "expired_card",
    "card_declined",
    "incorrect_details",
    "authentication_required",
    "processing_error",
]


class AutopayData(TypedDict):
    decline_reason: str  # a DeclineReason code; any other code is shown as a generic decline
    next_retry_at: str | None  # None: no more automatic attempts
    amount_minor: int
    currency: str
    attempted_at: str
    invoice_number: str | None
    method: str | None


class StatementItem(TypedDict):
    """An open invoice (open-item) or a transaction with its running balance (balance-forward)."""

    date: str
    type: Literal["invoice", "payment", "credit_note", "refund", "adjustment"]
    reference: str
    due_at: str | None
    amount_minor: int  # charges positive, payments and credits negative
    balance_minor: int  # open-item: still open on it; balance-forward: running balance


class StatementData(TypedDict):
    style: Literal["open_item", "balance_forward"]
    period_start: str
    period_end: str
    currency: str
    opening_balance_minor: int
    closing_balance_minor: int
    overdue_minor: int
    items: list[StatementItem]  # templates write statement["items"]: .items is dict.items


class OverdueItem(TypedDict):
    """One overdue invoice of an ``overdue_summary``."""

    number: str
    issued_at: str
    due_at: str
    days_overdue: int
    total_minor: int
    balance_minor: int  # still to pay on it


class OverdueData(TypedDict):
    """All of one customer's overdue invoices in one currency: amounts in two do not add up."""

    currency: str
    balance_minor: int  # the sum of the items' balances
    items: list[OverdueItem]  # oldest due first; templates write overdue["items"]


class EstimateData(TypedDict):
    number: str
    version: int
    currency: str
    total_minor: int
    tax_minor: int
    issued_at: str
    valid_until: str
    lines: list[LineData]


class InstallmentData(TypedDict):
    due_at: str
    amount_minor: int


class PaymentPlanData(TypedDict):
    number: str
    currency: str
    total_minor: int
    approve_by: str | None
    installments: list[InstallmentData]
    invoices: list[AllocationData]  # the invoices it settles, with their open balances


class SubscriptionData(TypedDict):
    plan: str
    amount_minor: int
    currency: str
    interval: Literal["week", "month", "quarter", "year"]
    started_at: str
    next_bill_at: str | None
    cancelled_at: str | None
    ends_at: str | None  # service continues until then after a cancellation


class BaseEmail(TypedDict):
    locale: str
    tenant: TenantData
    customer: CustomerData
    links: dict[str, str | None]
    time_zone: NotRequired[str]  # IANA name; absent in contexts queued before it (UTC)
    fallback_locale: NotRequired[str]
    # True on the copy a customer's request for a fresh link queues: whatever the kind, it
    # renders as the neutral "here is your new link" email (mailer/content/render.py), never as a
    # reminder (the invoice may be on hold, disputed or paid since).
    fresh_link: NotRequired[bool]


class InvoiceEmail(BaseEmail):
    invoice: InvoiceData
    days_overdue: int


class ThankYouEmail(BaseEmail):
    invoice: InvoiceData
    paid_at: str


class OverdueSummaryEmail(BaseEmail):
    overdue: OverdueData
    days_overdue: int  # of the oldest item


class PaymentPlanEmail(BaseEmail):
    payment_plan: PaymentPlanData


class CreditNoteEmail(BaseEmail):
    credit_note: CreditNoteData


class PaymentReceiptEmail(BaseEmail):
    payment: PaymentData


class RefundEmail(BaseEmail):
    refund: RefundData


class AutopayFailedEmail(BaseEmail):
    autopay: AutopayData


class StatementEmail(BaseEmail):
    statement: StatementData


class EstimateEmail(BaseEmail):
    estimate: EstimateData


class SubscriptionEmail(BaseEmail):
    subscription: SubscriptionData


class SubscriptionBilledSoonEmail(SubscriptionEmail):
    days_until_bill: int


@dataclass(frozen=True)
class KindSpec:
    """One email kind: whether tenants get it unless they opt out, its PDF, its buttons, and
    whether the engine sends it only inside the customer's send window.

    ``windowed`` kinds are the ones the engine sends on its own schedule (reminders, statements,
    the billed-soon notice): each goes out only at a moment inside the window on a business day
    in the customer's zone, whenever the engine decides (a pass, catch-up after downtime, the
    delivery of a queued or retried message). The others answer something that just happened
    (an invoice issued, a payment, a refund, a failed autopay, a credit note, a subscription
    change) and go at once, as does any email a person sends by hand.
    """

    name: str
    default_on: bool
    pdf: Pdf | None
    buttons: tuple[Button, ...]
    variables: frozenset[str]  # top-level context names its templates may use
    windowed: bool = False


def _spec(
    kind: Kind, shape: type, *, on: bool, pdf: Pdf | None, buttons: tuple[Button, ...]
) -> KindSpec:
    keys = shape.__required_keys__ | shape.__optional_keys__  # type: ignore[attr-defined]
    return KindSpec(kind, on, pdf, buttons, frozenset(keys), kind in WINDOWED)


# The kinds the engine sends on its own schedule, only inside the customer's send window.
WINDOWED: frozenset[Kind] = frozenset(
    {
        Kind.INVOICE_REMINDER,
        Kind.LATE_PAYMENT_REMINDER,
        Kind.OVERDUE_SUMMARY,
        Kind.STATEMENT,
        Kind.SUBSCRIPTION_BILLED_SOON,
    }
)
_SPECS = (
    _spec(Kind.NEW_INVOICE, InvoiceEmail, on=True, pdf="invoice", buttons=("view", "pay")),
    _spec(Kind.INVOICE_REMINDER, InvoiceEmail, on=True, pdf="invoice", buttons=("view", "pay")),
    _spec(
        Kind.LATE_PAYMENT_REMINDER, InvoiceEmail, on=True, pdf="invoice", buttons=("view", "pay")
    ),
    _spec(Kind.OVERDUE_SUMMARY, OverdueSummaryEmail, on=True, pdf=None, buttons=("pay",)),
    _spec(Kind.THANK_YOU, ThankYouEmail, on=False, pdf="invoice", buttons=()),
    _spec(Kind.PAYMENT_PLAN, PaymentPlanEmail, on=False, pdf=None, buttons=("view",)),
    _spec(Kind.CREDIT_NOTE, CreditNoteEmail, on=True, pdf="credit_note", buttons=("view",)),
    _spec(Kind.PAYMENT_RECEIPT, PaymentReceiptEmail, on=True, pdf="receipt", buttons=()),
    _spec(Kind.REFUND, RefundEmail, on=True, pdf="refund", buttons=()),
    _spec(Kind.AUTOPAY_FAILED, AutopayFailedEmail, on=True, pdf=None, buttons=("update_payment",)),
    _spec(Kind.STATEMENT, StatementEmail, on=True, pdf="statement", buttons=("view",)),
    _spec(Kind.ESTIMATE, EstimateEmail, on=True, pdf="estimate", buttons=("view",)),
    _spec(
        Kind.SUBSCRIPTION_CONFIRMATION, SubscriptionEmail, on=False, pdf=None, buttons=("manage",)
    ),
    _spec(
        Kind.SUBSCRIPTION_BILLED_SOON,
        SubscriptionBilledSoonEmail,
        on=False,
        pdf=None,
        buttons=("manage",),
    ),
    _spec(Kind.SUBSCRIPTION_CANCELLED, SubscriptionEmail, on=False, pdf=None, buttons=("manage",)),
)
KINDS: Mapping[str, KindSpec] = MappingProxyType({s.name: s for s in _SPECS})


def waits_for_window(kind: str) -> bool:
    """Whether the engine sends ``kind`` only inside the customer's send window (an unknown
    kind is not one the engine schedules, so it is not held back)."""
    spec = KINDS.get(kind)
    return spec is not None and spec.windowed


# -- sample contexts ---------------------------------------------------------------------------

_LINK = "https://pay.acme.example/l/"
_TENANT: TenantData = {
    "name": "Acme Supplies",
    "email": "ar@acme.example",
    "logo_url": "https://acme.example/logo.png",
    "brand_color": "#0b5cad",
    "address": ["Acme Supplies SRL", "Strada Exemplu 12", "010101 Bucharest, Romania"],
    "footer": "Acme Supplies SRL · VAT RO12345678 · Reg. J40/1234/2020",
    "css": None,
}
_LINES: list[LineData] = [
    {
        "description": "Consulting, March 2026",
        "quantity": "40",
        "unit_price_minor": 20745,
        "tax_rate": "19",
        "net_minor": 829800,
        "tax_minor": 157662,
        "total_minor": 987462,
    },
    {
        "description": "Hosting, annual plan",
        "quantity": "1",
        "unit_price_minor": 207647,
        "tax_rate": "19",
        "net_minor": 207647,
        "tax_minor": 39453,
        "total_minor": 247100,
    },
]
_INVOICE: InvoiceData = {
    "number": "INV-1042",
    "version": 1,
    "currency": "EUR",
    "total_minor": 1234562,
    "tax_minor": 197115,
    "balance_minor": 1234562,
    "issued_at": "2026-03-02T09:00:00+00:00",
    "due_at": "2026-04-01T00:00:00+00:00",
    "lines": _LINES,
}
_SUBSCRIPTION: SubscriptionData = {
    "plan": "Business",
    "amount_minor": 4900,
    "currency": "EUR",
    "interval": "month",
    "started_at": "2026-03-02T09:00:00+00:00",
    "next_bill_at": "2026-04-02T09:00:00+00:00",
    "cancelled_at": None,
    "ends_at": None,
}


def _documents() -> dict[str, dict[str, Any]]:
    """Each kind's own part of the sample context (built fresh: callers may mutate theirs)."""
    paid: InvoiceData = {**_INVOICE, "balance_minor": 0}
    overdue: InvoiceData = {**_INVOICE, "balance_minor": 734562}
    return {
        "new_invoice": {"invoice": _INVOICE, "days_overdue": 0},
        "invoice_reminder": {"invoice": _INVOICE, "days_overdue": 0},
        "late_payment_reminder": {"invoice": overdue, "days_overdue": 12},
        "overdue_summary": {
            "overdue": {
                "currency": "EUR",
                "balance_minor": 1293662,
                "items": [
                    {
                        "number": "INV-1017",
                        "issued_at": "2026-02-02T09:00:00+00:00",
                        "due_at": "2026-03-04T00:00:00+00:00",
                        "days_overdue": 40,
                        "total_minor": 247100,
                        "balance_minor": 247100,
                    },
                    {
                        "number": "INV-1029",
                        "issued_at": "2026-02-16T09:00:00+00:00",
                        "due_at": "2026-03-18T00:00:00+00:00",
                        "days_overdue": 26,
                        "total_minor": 512000,
                        "balance_minor": 312000,
                    },
                    {
                        "number": "INV-1042",  # the late_payment_reminder's invoice
                        "issued_at": "2026-03-02T09:00:00+00:00",
                        "due_at": "2026-04-01T00:00:00+00:00",
                        "days_overdue": 12,
                        "total_minor": 1234562,
                        "balance_minor": 734562,
                    },
                ],
            },
            "days_overdue": 40,
        },
        "thank_you": {"invoice": paid, "paid_at": "2026-03-28T14:12:00+00:00"},
        "payment_plan": {
            "payment_plan": {
                "number": "PP-7",
                "currency": "EUR",
                "total_minor": 734562,
                "approve_by": "2026-04-20T00:00:00+00:00",
                "installments": [
                    {"due_at": "2026-05-01T00:00:00+00:00", "amount_minor": 244854},
                    {"due_at": "2026-06-01T00:00:00+00:00", "amount_minor": 244854},
                    {"due_at": "2026-07-01T00:00:00+00:00", "amount_minor": 244854},
                ],
                "invoices": [{"number": "INV-1042", "amount_minor": 734562}],
            }
        },
        "credit_note": {
            "credit_note": {
                "number": "CN-88",
                "version": 1,
                "currency": "EUR",
                "amount_minor": 247100,
                "tax_minor": 39453,
                "issued_at": "2026-03-20T10:00:00+00:00",
                "invoice_number": "INV-1042",
                "reason": "Hosting cancelled before renewal",
                "lines": [_LINES[1]],
            }
        },
        "payment_receipt": {
            "payment": {
                "receipt_number": "RCPT-5521",
                "amount_minor": 500000,
                "currency": "EUR",
                "received_at": "2026-03-25T08:30:00+00:00",
                "method": "Visa •••• 4242",
                "invoices": [
                    {
                        "number": "INV-1042",
                        "amount_minor": 500000,
                        "invoice": {**_INVOICE, "balance_minor": 734562},
                    }
                ],
                "unapplied_minor": 0,
            }
        },
        "refund": {
            "refund": {
                "receipt_number": "RF-310",
                "amount_minor": 247100,
                "currency": "EUR",
                "refunded_at": "2026-03-26T11:00:00+00:00",
                "method": "Visa •••• 4242",
                "reason": None,
                "payment_received_at": "2026-03-25T08:30:00+00:00",
            }
        },
        "autopay_failed": {
            "autopay": {
                "decline_reason": "insufficient_funds",
                "next_retry_at": "2026-04-04T09:00:00+00:00",
                "amount_minor": 1234562,
                "currency": "EUR",
                "attempted_at": "2026-04-01T09:00:00+00:00",
                "invoice_number": "INV-1042",
                "method": "Visa •••• 4242",
            }
        },
        "statement": {
            "statement": {
                "style": "open_item",
                "period_start": "2026-03-01T00:00:00+00:00",
                "period_end": "2026-03-31T00:00:00+00:00",
                "currency": "EUR",
                "opening_balance_minor": 0,
                "closing_balance_minor": 1481662,
                "overdue_minor": 247100,
                "items": [
                    {
                        "date": "2026-02-02T09:00:00+00:00",
                        "type": "invoice",
                        "reference": "INV-1017",
                        "due_at": "2026-03-04T00:00:00+00:00",
                        "amount_minor": 247100,
                        "balance_minor": 247100,
                    },
                    {
                        "date": "2026-03-02T09:00:00+00:00",
                        "type": "invoice",
                        "reference": "INV-1042",
                        "due_at": "2026-04-01T00:00:00+00:00",
                        "amount_minor": 1234562,
                        "balance_minor": 1234562,
                    },
                ],
            }
        },
        "estimate": {
            "estimate": {
                "number": "EST-204",
                "version": 2,
                "currency": "EUR",
                "total_minor": 1234562,
                "tax_minor": 197115,
                "issued_at": "2026-03-02T09:00:00+00:00",
                "valid_until": "2026-04-01T00:00:00+00:00",
                "lines": _LINES,
            }
        },
        "subscription_confirmation": {"subscription": _SUBSCRIPTION},
        "subscription_billed_soon": {"subscription": _SUBSCRIPTION, "days_until_bill": 7},
        "subscription_cancelled": {
            "subscription": {
                **_SUBSCRIPTION,
                "next_bill_at": None,
                "cancelled_at": "2026-03-15T16:20:00+00:00",
                "ends_at": "2026-04-02T09:00:00+00:00",
            }
        },
    }


def sample_context(kind: str, *, locale: str) -> dict[str, Any]:
    """A realistic, JSON-safe context for ``kind``: for tests, previews and override checks."""
    spec = KINDS.get(kind)
    if spec is None:
        raise TemplateError(f"unknown email kind {kind!r}; known kinds: {', '.join(KINDS)}")
    links: dict[str, str | None] = {b: f"{_LINK}{b}-7f3a9c" for b in spec.buttons}
    context: dict[str, Any] = {
        "locale": locale,
        "tenant": _TENANT,
        "customer": {"name": "Globex Corporation", "id": "C-1001"},
        "links": links,
        # The sample tenant's zone (its address is in Bucharest); every sample time falls on
        # the same day there as in UTC, so previews print the dates written above.
        "time_zone": "Europe/Bucharest",
        **_documents()[kind],
    }
    return copy.deepcopy(context)
