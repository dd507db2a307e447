"""The ledger's tables: what the business owns (tenants, customers, contacts, documents,
payments, agreements, holds, the events its records call for) and the import lock.

No ``from __future__ import annotations`` here: it breaks SQLModel relationships
(fastapi/sqlmodel#196).
"""

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from mailer.columns import at_column, json_column, state_column
from mailer.config import DeliveryMode


class Tenant(SQLModel, table=True):
    """A business sending through dunmail; its sender identity mirrors ``[tenants.<slug>]``."""

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(unique=True, max_length=63)
    name: str = Field(max_length=200)
    email: str = Field(max_length=320)
    delivery: DeliveryMode = state_column(DeliveryMode, DeliveryMode.RELAY)
    dkim_domain: str | None = Field(default=None, max_length=253)
    dkim_selector: str | None = Field(default=None, max_length=63)
    dkim_key_file: str | None = Field(default=None, max_length=1024)
    bounce_domain: str | None = Field(default=None, max_length=253)
    time_zone: str = Field(default="UTC", max_length=64)
    locale: str = Field(default="en", max_length=35)
    created_at: datetime = at_column()


class Customer(SQLModel, table=True):
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "external_id"),
        # The statement pass: a tenant's customers whose statement is due, by an index range.
        sa.Index("ix_customer_statement_due", "tenant_id", "next_statement_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    external_id: str = Field(max_length=100)
    name: str = Field(max_length=300)
    locale: str | None = Field(default=None, max_length=35)
    time_zone: str | None = Field(default=None, max_length=64)
    chase: bool = True  # the AR team's on/off switch for reminders to this customer
    cadence: str | None = Field(default=None, max_length=63)  # else the tenant's default
    # Statements on a schedule: when the next one is due (set by the scheduler from the
    # tenant's [dunning.statements]); NULL: none scheduled.
    next_statement_at: datetime | None = at_column(nullable=True)
    # Its own schedule ("monthly:15", "weekly:fri", "never"); NULL: the tenant's.
    statement_schedule: str | None = Field(default=None, max_length=20)
    # What its documents print under "Bill to" (one item per line) and its tax id (VAT number);
    # NULL: none given by the ERP.
    billing_address: list[str] | None = Field(default=None, sa_type=sa.JSON)
    tax_id: str | None = Field(default=None, max_length=50)
    created_at: datetime = at_column()
    updated_at: datetime = at_column()
    # The customer's own choices on their account page (dunmail/services/preferences.py): a
    # language that stands in for ``locale`` while the ERP keeps sending the same ``locale``,
    # and PDFs as a download link instead of an attachment.
    chosen_locale: str | None = Field(default=None, max_length=35)
    pdf_link_only: bool = False


class ContactRole(StrEnum):
    BILLING = "billing"
    AP = "ap"
    ACCOUNTANT = "accountant"
    PRIMARY = "primary"


class Contact(SQLModel, table=True):
    __table_args__ = (sa.UniqueConstraint("customer_id", "email"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    email: str = Field(max_length=320)
    name: str | None = Field(default=None, max_length=300)
    roles: list[str] = json_column(list)
    send_invoices: bool = True
    # A clerk's correction of an address the ERP still holds (the inbox's "fix the contact"):
    # the ERP's address this row stands in for. While the ERP keeps listing that address, an
    # import keeps the correction; once it lists something else, the ERP has been fixed.
    erp_email: str | None = Field(default=None, max_length=320)
    corrected_by: str | None = Field(default=None, max_length=200)
    corrected_at: datetime | None = at_column(nullable=True)


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    VOID = "void"


class PricedDocument(SQLModel):
    """What an invoice and an estimate share (no table of its own): a numbered document of
    priced lines, its totals, and the version that rises whenever its content changes.

    ``content_hash`` is the sha256 of what the customer sees, status left out
    (``mailer.ledger.parsed.Priced.content_hash``): an import compares it to tell a new
    version from a re-import. Each table names its own unique constraints: a constraint, like a
    column, belongs to one table.
    """

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    external_id: str = Field(max_length=100)
    number: str = Field(max_length=100)
    version: int = 1
    content_hash: str = Field(max_length=64)
    currency: str = Field(max_length=3)
    # Money columns are BIGINT: INTEGER stops at 21 million EUR, or 2.1 billion JPY, on PostgreSQL.
    total_minor: int = Field(default=0, sa_type=sa.BigInteger)
    tax_minor: int = Field(default=0, sa_type=sa.BigInteger)
    issued_at: datetime = at_column()
    lines: list[dict[str, Any]] = json_column(list)
    created_at: datetime = at_column()
    updated_at: datetime = at_column()


class Invoice(PricedDocument, table=True):
    """The current version of an invoice; ``version`` rises whenever its content changes."""

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "external_id"),
        sa.UniqueConstraint("tenant_id", "number"),
        # The dunning pass reads a tenant's due invoices as one index range; a pass with
        # nothing due touches no table row.
        sa.Index("ix_invoice_due", "tenant_id", "next_action_at"),
    )

    balance_minor: int = Field(default=0, sa_type=sa.BigInteger)
    status: InvoiceStatus = state_column(InvoiceStatus, InvoiceStatus.OPEN)
    due_at: datetime = at_column()
    sent_at: datetime | None = at_column(nullable=True)  # first send, automatic or by hand
    # The scheduler's bookkeeping. ``next_action_at`` is when it must look at this invoice
    # again (NULL: never, until something changes); every change to the invoice, its customer
    # or a hold sets it to "now", so a pass reads only the indexed rows that are due.
    next_action_at: datetime | None = at_column(nullable=True)  # ix_invoice_due
    dunning_step: int = 0  # how many cadence steps are done (sent, replaced or superseded)
    dunning_repeats: int = 0  # repeats sent of the last step done
    last_dunned_at: datetime | None = at_column(nullable=True)  # the last reminder, by hand or not


class Payment(SQLModel, table=True):
    __table_args__ = (sa.UniqueConstraint("tenant_id", "external_id"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    external_id: str = Field(max_length=100)
    amount_minor: int = Field(sa_type=sa.BigInteger)
    currency: str = Field(max_length=3)
    received_at: datetime = at_column()
    method: str | None = Field(default=None, max_length=100)  # "Visa •••• 4242", as given
    receipt_number: str | None = Field(default=None, max_length=100)  # NULL: the external id


class PaymentAllocation(SQLModel, table=True):
    """How much of a payment (or a credit note) settles which invoice."""

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    payment_id: int | None = Field(default=None, foreign_key="payment.id", index=True)
    credit_note_id: int | None = Field(default=None, foreign_key="creditnote.id", index=True)
    amount_minor: int = Field(sa_type=sa.BigInteger)


class CreditNote(SQLModel, table=True):
    __table_args__ = (sa.UniqueConstraint("tenant_id", "external_id"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    external_id: str = Field(max_length=100)
    number: str = Field(max_length=100)
    currency: str = Field(max_length=3)
    amount_minor: int = Field(sa_type=sa.BigInteger)
    issued_at: datetime = at_column()
    lines: list[dict[str, Any]] = json_column(list)
    reason: str | None = Field(default=None, max_length=1000)  # the tenant's words, shown as given
    version: int = 1  # rises whenever its content changes, like an invoice's: pins its PDF


class EventStatus(StrEnum):
    PENDING = "pending"  # waits for due_at
    QUEUED = "queued"  # its email is in the outbox
    SKIPPED = "skipped"  # nothing to send (kind switched off, no contact): note says why


class Event(SQLModel, table=True):
    """An email the ledger asks for: a receipt, a refund, a credit note, a failed autopay, a
    subscription notice, a statement. The scheduler pass queues it once ``due_at`` has come.

    ``context`` is the kind's own part of the render context (``{"payment": {...}}``), frozen
    when the event is recorded; the pass adds tenant, customer, branding and language. ``key``
    names the occasion (``"payment:p-1"``), so re-importing the same record is one event.
    """

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "key"),
        sa.Index("ix_event_due", "status", "due_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    invoice_id: int | None = Field(default=None, foreign_key="invoice.id")
    kind: str = Field(max_length=50)
    key: str = Field(max_length=200)
    document: str = Field(max_length=100)  # "payment:12": pins the PDF, like a message's
    version: int = 1
    context: dict[str, Any] = json_column(dict)
    due_at: datetime = at_column()
    status: EventStatus = state_column(EventStatus, EventStatus.PENDING)
    created_at: datetime = at_column()
    handled_at: datetime | None = at_column(nullable=True)
    note: str | None = Field(default=None, max_length=300)


class HoldReason(StrEnum):
    DISPUTE = "dispute"
    PROMISE_TO_PAY = "promise_to_pay"
    PAYMENT_PLAN = "payment_plan"
    MANUAL = "manual"
    # Every contact of the customer bounced: escalation waits for a fixed contact and a resend.
    CONTACT_BOUNCED = "contact_bounced"


class Hold(SQLModel, table=True):
    """A pause in chasing one invoice, or every invoice of a customer.

    Active from ``created_at`` until ``lifted_at`` or ``ends_at``, whichever comes first; the
    scheduler looks at the held invoices again at ``ends_at``, so chasing resumes by itself.
    """

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    invoice_id: int | None = Field(default=None, foreign_key="invoice.id", index=True)
    reason: HoldReason = state_column(HoldReason)
    note: str | None = Field(default=None, max_length=1000)
    created_at: datetime = at_column()
    ends_at: datetime | None = at_column(nullable=True)
    lifted_at: datetime | None = at_column(nullable=True)
    created_by: str = Field(default="", max_length=200)
    # Set on the holds an active payment plan places (one per invoice it covers), so the
    # import finds exactly those to lift when the plan ends or drops an invoice.
    payment_plan_id: int | None = Field(default=None, foreign_key="paymentplan.id", index=True)


class Refund(SQLModel, table=True):
    """Money given back on a payment; its customer is the payment's."""

    __table_args__ = (sa.UniqueConstraint("tenant_id", "external_id"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    payment_id: int = Field(foreign_key="payment.id", index=True)
    external_id: str = Field(max_length=100)
    amount_minor: int = Field(sa_type=sa.BigInteger)
    currency: str = Field(max_length=3)
    refunded_at: datetime = at_column()
    reason: str | None = Field(default=None, max_length=1000)
    method: str | None = Field(default=None, max_length=100)
    receipt_number: str | None = Field(default=None, max_length=100)  # NULL: the external id


class AutopayFailure(SQLModel, table=True):
    """An automatic collection (card, direct debit) the payment provider declined."""

    __table_args__ = (sa.UniqueConstraint("tenant_id", "external_id"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    invoice_id: int | None = Field(default=None, foreign_key="invoice.id", index=True)
    external_id: str = Field(max_length=100)
    amount_minor: int = Field(sa_type=sa.BigInteger)
    currency: str = Field(max_length=3)
    attempted_at: datetime = at_column()
    # The provider's code ("insufficient_funds"); the template explains the known ones.
    decline_reason: str = Field(max_length=63)
    next_retry_at: datetime | None = at_column(nullable=True)  # NULL: no more automatic attempts
    method: str | None = Field(default=None, max_length=100)


class SubscriptionInterval(StrEnum):
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    CANCELLED = "cancelled"


class Subscription(SQLModel, table=True):
    """A recurring plan billed by the ERP; dunmail only announces it (confirmed, billed soon,
    cancelled), so only what those emails show is kept."""

    __table_args__ = (sa.UniqueConstraint("tenant_id", "external_id"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    external_id: str = Field(max_length=100)
    plan: str = Field(max_length=300)
    amount_minor: int = Field(sa_type=sa.BigInteger)
    currency: str = Field(max_length=3)
    interval: SubscriptionInterval = state_column(SubscriptionInterval)
    status: SubscriptionStatus = state_column(SubscriptionStatus)
    started_at: datetime = at_column()
    next_bill_at: datetime | None = at_column(nullable=True)
    cancelled_at: datetime | None = at_column(nullable=True)
    ends_at: datetime | None = at_column(nullable=True)  # service continues until then
    created_at: datetime = at_column()
    updated_at: datetime = at_column()


class EstimateStatus(StrEnum):
    DRAFT = "draft"
    SENT = "sent"  # given to the customer: its email is due (after the grace period)
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"


class Estimate(PricedDocument, table=True):
    """A quote for the customer; ``version`` rises whenever its content changes, like an
    invoice's, and each version that is ``sent`` is emailed once (its PDF pinned by it)."""

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "external_id"),
        sa.UniqueConstraint("tenant_id", "number"),
    )

    status: EstimateStatus = state_column(EstimateStatus)
    valid_until: datetime = at_column()


class PaymentPlanStatus(StrEnum):
    PROPOSED = "proposed"  # waiting for the customer's approval: the proposal is emailed
    ACTIVE = "active"  # agreed: its invoices are on a dunning hold
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class PaymentPlan(SQLModel, table=True):
    """Installments agreed (or proposed) for some of a customer's invoices.

    While ``active`` each invoice it covers has a ``Hold`` (``Hold.payment_plan_id``), so it is
    not chased; the holds are lifted when the plan ends or leaves the invoice out.
    """

    __table_args__ = (sa.UniqueConstraint("tenant_id", "external_id"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    external_id: str = Field(max_length=100)
    number: str = Field(max_length=100)
    currency: str = Field(max_length=3)
    total_minor: int = Field(sa_type=sa.BigInteger)  # the installments' sum
    status: PaymentPlanStatus = state_column(PaymentPlanStatus)
    approve_by: datetime | None = at_column(nullable=True)
    installments: list[dict[str, Any]] = json_column(list)  # [{due_at (ISO 8601), amount_minor}]
    invoice_ids: list[int] = json_column(list)  # Invoice.id of the invoices it covers, as listed
    created_at: datetime = at_column()
    updated_at: datetime = at_column()


class ImportLock(SQLModel, table=True):
    """The one import running for a tenant (mailer/ledger/importlock.py). A row, not a transaction:
    an import commits in short batches, so no transaction spans it, and the engine's passes
    read this row to leave a half-imported ledger alone. ``expires_at`` is a lease on the wall
    clock that every batch renews; a row past it belongs to an import that died."""

    __tablename__ = "import_lock"

    tenant_id: int = Field(foreign_key="tenant.id", primary_key=True)
    token: str = Field(max_length=64)  # the holder's own proof, checked at every renewal
    holder: str = Field(max_length=300)  # "host pid N": who, for the busy message
    started_at: datetime = at_column()
    expires_at: datetime = at_column()
