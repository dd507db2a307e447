"""PURE: the one registry of email kinds: what each is for, what it attaches, what it may show.

A kind's name is also its template folder (``templates/email/<kind>/``). Every module names a
kind through :class:`Kind` and asks about groups of kinds (:data:`REMINDERS`, ...) defined here
only. The context each kind renders with is typed in ``mailer/content/shapes.py``;
``KindSpec.variables`` is derived from those types, so the check of a tenant's template override
("may it use ``payment``?") cannot drift from what the engine actually passes. Realistic sample
contexts for previews and checks are in ``mailer/content/samples.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Literal

from mailer.content.shapes import (
    AutopayFailedEmail,
    ContactConfirmationEmail,
    ContactsChangedEmail,
    CreditNoteEmail,
    EstimateEmail,
    InvoiceEmail,
    OverdueSummaryEmail,
    PaymentPlanEmail,
    PaymentReceiptEmail,
    QueryAnswerEmail,
    RefundEmail,
    StatementEmail,
    SubscriptionBilledSoonEmail,
    SubscriptionEmail,
    ThankYouEmail,
)


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
    # A new contact address asked for on the account page: "confirm this address" (only to it)
    CONTACT_CONFIRMATION = "contact_confirmation"
    # The customer's contacts (or PDF delivery) changed on the account page: a notice to the
    # contacts as they were before, "if this was not you, tell us"
    CONTACTS_CHANGED = "contacts_changed"
    QUERY_ANSWER = "query_answer"  # the AR team answers a query raised on the account page


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
    _spec(Kind.CONTACT_CONFIRMATION, ContactConfirmationEmail, on=True, pdf=None, buttons=()),
    _spec(Kind.CONTACTS_CHANGED, ContactsChangedEmail, on=True, pdf=None, buttons=()),
    _spec(Kind.QUERY_ANSWER, QueryAnswerEmail, on=True, pdf=None, buttons=("view",)),
)
KINDS: Mapping[str, KindSpec] = MappingProxyType({s.name: s for s in _SPECS})


def waits_for_window(kind: str) -> bool:
    """Whether the engine sends ``kind`` only inside the customer's send window (an unknown
    kind is not one the engine schedules, so it is not held back)."""
    spec = KINDS.get(kind)
    return spec is not None and spec.windowed
