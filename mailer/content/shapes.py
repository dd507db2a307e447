"""PURE: the shapes of the render contexts, one ``TypedDict`` per document and per kind of email.

The context each kind (``mailer/content/kinds.py``) renders with is a JSON-safe snapshot taken
when the email is enqueued (see ``mailer/content/context.py``) and is typed here as one
``TypedDict`` per document, so the shapes live in one place:

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
days only through ``mailer.ledger.localtime``. ``KindSpec.variables`` (``mailer/content/kinds.py``)
is derived from these types, so the check of a tenant's template override ("may it use
``payment``?") cannot drift from what the engine actually passes.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict


class TenantData(TypedDict):
    """The sender and its branding; every branding key is optional."""

    name: str
    email: str
    logo_url: NotRequired[str | None]  # https URL of the logo: the one external resource allowed
    brand_color: NotRequired[str | None]  # "#0b5cad"; anything else falls back to the default
    address: NotRequired[list[str]]  # postal address, one line each
    footer: NotRequired[str | None]  # legal line (company number, VAT id)
    css: NotRequired[str | None]  # extra CSS rules; sanitised, then inlined
    tax_id: NotRequired[str | None]  # VAT number, on documents and in the footer


class CustomerData(TypedDict):
    name: str
    id: str
    billing_address: NotRequired[list[str]]  # "Bill to" lines, where the ERP gave them
    tax_id: NotRequired[str]  # VAT number, where the ERP gave one


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


class BankTransferData(TypedDict):
    """How to pay by bank transfer (``mailer/content/bank_transfer.py``): the tenant's account,
    the amount due and the RF reference the bank import matches, and for euros the EPC QR code
    as an inline PNG ``data:`` URI (None otherwise)."""

    account_name: str
    iban: str  # compact, as the customer's bank compares it
    iban_display: str  # in groups of four
    bic: str | None
    amount_minor: int
    currency: str
    reference: str  # compact ISO 11649 (mailer/ledger/references.py)
    reference_display: str  # in groups of four
    qr: str | None  # PNG data: URI (email, hosted page)
    qr_path: str | None  # the same code as one SVG path, for the PDF (which fetches no data:)
    qr_size: int  # the side of that path's square viewBox, in modules


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
    # True when the customer chose "link only" on their account page: the email carries its
    # PDF as a download link, never attached (mailer/outbound/assemble.py).
    pdf_link_only: NotRequired[bool]


class InvoiceEmail(BaseEmail):
    invoice: InvoiceData
    days_overdue: int
    bank_transfer: NotRequired[BankTransferData]  # only where the tenant has [bank]


class QueryData(TypedDict):
    reason: str  # mailer.query_models.QueryReason value
    question: str  # the customer's latest message, as they wrote it
    answer: str  # the clerk's answer, plain text
    answered_at: str


class QueryAnswerEmail(BaseEmail):
    invoice: InvoiceData
    query: QueryData


class ContactData(TypedDict):
    """A contact address a customer asked for on their account page, to be confirmed."""

    email: str
    confirm_url: str  # signed, single-use, expiring (dunmail/services/contact_requests.py)
    expires_at: str
    replaces: NotRequired[str]  # the contact's address it will replace, if a change


class ContactConfirmationEmail(BaseEmail):
    contact: ContactData


class ContactChangeData(TypedDict):
    """A change made on the account page, told to the contacts as they were before it."""

    kind: str  # contact_added, contact_changed, contact_removed or pdf_delivery
    at: str  # when it was made
    old: NotRequired[str]  # the address removed or replaced; "attach" or "link" for the PDF
    new: NotRequired[str]  # the address added, or the one replacing ``old``; "attach"/"link"


class ContactsChangedEmail(BaseEmail):
    change: ContactChangeData


class ThankYouEmail(BaseEmail):
    invoice: InvoiceData
    paid_at: str


class OverdueSummaryEmail(BaseEmail):
    overdue: OverdueData
    days_overdue: int  # of the oldest item
    bank_transfer: NotRequired[BankTransferData]  # only where the tenant has [bank]


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
    bank_transfer: NotRequired[BankTransferData]  # only where the tenant has [bank]


class EstimateEmail(BaseEmail):
    estimate: EstimateData


class SubscriptionEmail(BaseEmail):
    subscription: SubscriptionData


class SubscriptionBilledSoonEmail(SubscriptionEmail):
    days_until_bill: int
