"""The ledger: SQLModel tables and the StrEnum states stored in them.

No ``from __future__ import annotations`` here: it breaks SQLModel relationships
(fastapi/sqlmodel#196).
"""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import JSON, Column, Field, SQLModel

from mailer.config import DeliveryMode


class UTCDateTime(TypeDecorator[datetime]):
    """An aware-UTC timestamp on every backend.

    PostgreSQL keeps the offset; SQLite stores text and hands back naive values, so this type
    normalises both directions and the rest of the code only ever sees aware UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _at(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def _state(enum: type[StrEnum], default: StrEnum | None = None, *, index: bool = False) -> Any:
    """A StrEnum column stored by its lowercase *value* ("queued"), not SQLAlchemy's default
    of the member *name* ("QUEUED"), so SQL, reports and other tools read the same words."""
    column_type = sa.Enum(
        enum,
        values_callable=lambda members: [m.value for m in members],
        native_enum=False,
        length=20,
        validate_strings=True,
    )
    column: Column[Any] = Column(column_type, nullable=False, index=index)
    if default is None:
        return Field(sa_column=column)
    return Field(default=default, sa_column=column)


def _json(default: Any) -> Any:
    return Field(default_factory=default, sa_column=Column(JSON, nullable=False))


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    VOID = "void"


class MessageStatus(StrEnum):
    """Life of an outbox row. ``queued``/``deferred`` rows are claimable once due."""

    QUEUED = "queued"
    DEFERRED = "deferred"  # a temporary failure; next_attempt_at says when to try again
    SENT = "sent"  # every recipient accepted, or the rest failed for good after some accepted
    FAILED = "failed"  # no recipient accepted and nothing is left to try
    SKIPPED = "skipped"  # pre-flight decided not to send; skip_reason says why
    CANCELLED = "cancelled"


OPEN_MESSAGE_STATES = (MessageStatus.QUEUED, MessageStatus.DEFERRED)


class RecipientStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"  # the server answered 250 to DATA for this RCPT
    DEFERRED = "deferred"  # 4xx for this RCPT; retried with the message
    REJECTED = "rejected"  # 5xx for this RCPT, or expired: final
    BOUNCED = "bounced"  # accepted, then returned as a final failure (bounce/ingest.py)


class AttemptOutcome(StrEnum):
    ACCEPTED = "accepted"
    PARTIAL = "partial"
    DEFERRED = "deferred"
    REJECTED = "rejected"
    EXPIRED = "expired"
    THROTTLED = "throttled"


class Tenant(SQLModel, table=True):
    """A business sending through dunmail; its sender identity mirrors ``[tenants.<slug>]``."""

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(unique=True, max_length=63)
    name: str = Field(max_length=200)
    email: str = Field(max_length=320)
    delivery: DeliveryMode = _state(DeliveryMode, DeliveryMode.RELAY)
    dkim_domain: str | None = Field(default=None, max_length=253)
    dkim_selector: str | None = Field(default=None, max_length=63)
    dkim_key_file: str | None = Field(default=None, max_length=1024)
    bounce_domain: str | None = Field(default=None, max_length=253)
    time_zone: str = Field(default="UTC", max_length=64)
    locale: str = Field(default="en", max_length=35)
    created_at: datetime = _at()


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
    next_statement_at: datetime | None = _at(nullable=True)
    # Its own schedule ("monthly:15", "weekly:fri", "never"); NULL: the tenant's.
    statement_schedule: str | None = Field(default=None, max_length=20)
    created_at: datetime = _at()
    updated_at: datetime = _at()


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
    roles: list[str] = _json(list)
    send_invoices: bool = True
    # A clerk's correction of an address the ERP still holds (the inbox's "fix the contact"):
    # the ERP's address this row stands in for. While the ERP keeps listing that address, an
    # import keeps the correction; once it lists something else, the ERP has been fixed.
    erp_email: str | None = Field(default=None, max_length=320)
    corrected_by: str | None = Field(default=None, max_length=200)
    corrected_at: datetime | None = _at(nullable=True)


class Invoice(SQLModel, table=True):
    """The current version of an invoice; ``version`` rises whenever its content changes."""

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "external_id"),
        sa.UniqueConstraint("tenant_id", "number"),
        # The dunning pass reads a tenant's due invoices as one index range; a pass with
        # nothing due touches no table row.
        sa.Index("ix_invoice_due", "tenant_id", "next_action_at"),
    )

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
    balance_minor: int = Field(default=0, sa_type=sa.BigInteger)
    status: InvoiceStatus = _state(InvoiceStatus, InvoiceStatus.OPEN)
    issued_at: datetime = _at()
    due_at: datetime = _at()
    sent_at: datetime | None = _at(nullable=True)  # first send, automatic or by hand
    # The scheduler's bookkeeping. ``next_action_at`` is when it must look at this invoice
    # again (NULL: never, until something changes); every change to the invoice, its customer
    # or a hold sets it to "now", so a pass reads only the indexed rows that are due.
    next_action_at: datetime | None = _at(nullable=True)  # ix_invoice_due
    dunning_step: int = 0  # how many cadence steps are done (sent, replaced or superseded)
    dunning_repeats: int = 0  # repeats sent of the last step done
    last_dunned_at: datetime | None = _at(nullable=True)  # the last reminder, by hand or not
    lines: list[dict[str, Any]] = _json(list)
    created_at: datetime = _at()
    updated_at: datetime = _at()


class Payment(SQLModel, table=True):
    __table_args__ = (sa.UniqueConstraint("tenant_id", "external_id"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    external_id: str = Field(max_length=100)
    amount_minor: int = Field(sa_type=sa.BigInteger)
    currency: str = Field(max_length=3)
    received_at: datetime = _at()
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
    issued_at: datetime = _at()
    lines: list[dict[str, Any]] = _json(list)
    reason: str | None = Field(default=None, max_length=1000)  # the tenant's words, shown as given
    version: int = 1  # rises whenever its content changes, like an invoice's: pins its PDF


class Message(SQLModel, table=True):
    """One email in the outbox: what to send, to whom, and where its delivery stands.

    ``uid`` is the stable public identity: it is in the Message-ID, the VERP token and the
    X-Dunmail-Message header, so every retry carries the same ids and a bounce finds its row.
    """

    __table_args__ = (
        sa.Index("ix_message_due", "status", "next_attempt_at"),
        sa.UniqueConstraint("tenant_id", "idempotency_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    uid: str = Field(unique=True, max_length=32)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    customer_id: int | None = Field(default=None, foreign_key="customer.id", index=True)
    invoice_id: int | None = Field(default=None, foreign_key="invoice.id", index=True)
    kind: str = Field(max_length=50)
    document_version: int | None = None
    idempotency_key: str = Field(max_length=64)
    status: MessageStatus = _state(MessageStatus, MessageStatus.QUEUED)
    context: dict[str, Any] = _json(dict)  # frozen render input: the document as enqueued
    created_at: datetime = _at()
    next_attempt_at: datetime = _at()
    attempts: int = 0
    claimed_until: datetime | None = _at(nullable=True)
    claimed_by: str | None = Field(default=None, max_length=64)
    finished_at: datetime | None = _at(nullable=True)
    last_error: str | None = Field(default=None, max_length=1000)
    skip_reason: str | None = Field(default=None, max_length=200)
    manual: bool = False  # enqueued by a person (``dunmail send``), not by the scheduler
    occasion: str | None = Field(default=None, max_length=63)  # e.g. "step 2", "repeat 1 of 4"
    # SHA-256 of the PDF this message carries (or links to): the bytes in StoredPDF, so the
    # email, its attachment and the hosted download show the same document version.
    pdf_sha256: str | None = Field(default=None, max_length=64)
    # The language its text is rendered in ("es" for a customer in es_MX, "en" when the
    # customer's language has no templates): Language.language in mailer/content/i18n.py, set when
    # queued.
    # NULL only on rows queued before it was recorded.
    language: str | None = Field(default=None, max_length=35)


class MessageRecipient(SQLModel, table=True):
    """Per-recipient delivery state, so a partial RCPT failure never re-sends to the accepted."""

    __table_args__ = (sa.UniqueConstraint("message_id", "address"),)

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", index=True)
    address: str = Field(max_length=320, index=True)
    status: RecipientStatus = _state(RecipientStatus, RecipientStatus.PENDING)
    code: int | None = None
    response: str | None = Field(default=None, max_length=1000)
    updated_at: datetime | None = _at(nullable=True)


class DeliveryAttempt(SQLModel, table=True):
    """The log of every SMTP conversation about a message, one row per attempt."""

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", index=True)
    number: int
    started_at: datetime = _at()
    finished_at: datetime = _at()
    endpoint: str = Field(max_length=300)
    outcome: AttemptOutcome = _state(AttemptOutcome)
    code: int | None = None
    response: str | None = Field(default=None, max_length=1000)
    recipients: list[dict[str, Any]] = _json(list)  # [{address, code, response, status}]


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
    context: dict[str, Any] = _json(dict)
    due_at: datetime = _at()
    status: EventStatus = _state(EventStatus, EventStatus.PENDING)
    created_at: datetime = _at()
    handled_at: datetime | None = _at(nullable=True)
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
    reason: HoldReason = _state(HoldReason)
    note: str | None = Field(default=None, max_length=1000)
    created_at: datetime = _at()
    ends_at: datetime | None = _at(nullable=True)
    lifted_at: datetime | None = _at(nullable=True)
    created_by: str = Field(default="", max_length=200)
    # Set on the holds an active payment plan places (one per invoice it covers), so the
    # import finds exactly those to lift when the plan ends or drops an invoice.
    payment_plan_id: int | None = Field(default=None, foreign_key="paymentplan.id", index=True)


class Suppression(SQLModel, table=True):
    """An address the tenant's emails must not go to (a hard bounce, a complaint, repeated soft
    bounces for a while, by hand); one row per address holding its current state."""

    __table_args__ = (sa.UniqueConstraint("tenant_id", "address"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    address: str = Field(max_length=320)  # lower case (mailer/outbound/suppression.py::normal)
    kind: str = Field(default="hard", max_length=20)  # mailer.outbound.suppression.SuppressionKind
    reason: str = Field(max_length=300)
    created_at: datetime = _at()
    created_by: str = Field(default="bounce", max_length=200)
    expires_at: datetime | None = _at(nullable=True)  # a soft-bounce block ends by itself
    # A person lifted the block: who, when and why (mailer/outbound/suppression.py::unblock).
    lifted_at: datetime | None = _at(nullable=True)
    lifted_by: str | None = Field(default=None, max_length=200)
    lift_reason: str | None = Field(default=None, max_length=300)


class StoredPDF(SQLModel, table=True):
    """A rendered PDF of one immutable document version, kept so it is rendered only once.

    ``document`` names the document (``"invoice:42"``) and ``version`` its version; ``render_key``
    (:func:`mailer.content.pdf.render_key`) covers everything else that decides the bytes (context,
    templates, WeasyPrint), so a deploy that changes the output renders anew.
    """

    __table_args__ = (sa.UniqueConstraint("tenant_id", "document", "version", "render_key"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    document: str = Field(max_length=100)
    version: int
    render_key: str = Field(max_length=64)
    sha256: str = Field(max_length=64, index=True)
    pages: int
    data: bytes = Field(sa_column=Column(sa.LargeBinary, nullable=False))
    created_at: datetime = _at()


class TemplateOverride(SQLModel, table=True):
    """A tenant's own source for one part (subject, text, html) of one email kind.

    Saved only after :func:`mailer.content.overrides.validate_override` accepted it, so a broken
    template is refused when it is saved, never discovered when an email is sent.
    """

    __table_args__ = (sa.UniqueConstraint("tenant_id", "kind", "part"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    kind: str = Field(max_length=63)
    part: str = Field(max_length=10)
    source: str = Field(sa_column=Column(sa.Text, nullable=False))
    updated_at: datetime = _at()
    updated_by: str = Field(max_length=200)


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
    refunded_at: datetime = _at()
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
    attempted_at: datetime = _at()
    # The provider's code ("insufficient_funds"); the template explains the known ones.
    decline_reason: str = Field(max_length=63)
    next_retry_at: datetime | None = _at(nullable=True)  # NULL: no more automatic attempts
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
    interval: SubscriptionInterval = _state(SubscriptionInterval)
    status: SubscriptionStatus = _state(SubscriptionStatus)
    started_at: datetime = _at()
    next_bill_at: datetime | None = _at(nullable=True)
    cancelled_at: datetime | None = _at(nullable=True)
    ends_at: datetime | None = _at(nullable=True)  # service continues until then
    created_at: datetime = _at()
    updated_at: datetime = _at()


class EstimateStatus(StrEnum):
    DRAFT = "draft"
    SENT = "sent"  # given to the customer: its email is due (after the grace period)
    ACCEPTED = "accepted"
    DECLINED = "declined"
    EXPIRED = "expired"


class Estimate(SQLModel, table=True):
    """A quote for the customer; ``version`` rises whenever its content changes, like an
    invoice's, and each version that is ``sent`` is emailed once (its PDF pinned by it)."""

    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "external_id"),
        sa.UniqueConstraint("tenant_id", "number"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    external_id: str = Field(max_length=100)
    number: str = Field(max_length=100)
    version: int = 1
    content_hash: str = Field(max_length=64)
    currency: str = Field(max_length=3)
    total_minor: int = Field(default=0, sa_type=sa.BigInteger)
    tax_minor: int = Field(default=0, sa_type=sa.BigInteger)
    status: EstimateStatus = _state(EstimateStatus)
    issued_at: datetime = _at()
    valid_until: datetime = _at()
    lines: list[dict[str, Any]] = _json(list)
    created_at: datetime = _at()
    updated_at: datetime = _at()


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
    status: PaymentPlanStatus = _state(PaymentPlanStatus)
    approve_by: datetime | None = _at(nullable=True)
    installments: list[dict[str, Any]] = _json(list)  # [{due_at (ISO 8601), amount_minor}]
    invoice_ids: list[int] = _json(list)  # Invoice.id of the invoices it covers, as listed
    created_at: datetime = _at()
    updated_at: datetime = _at()


class InboundStatus(StrEnum):
    """Life of a stored inbound message: stored first, then decoded and matched."""

    STORED = "stored"  # raw bytes kept, not yet decoded
    PROCESSED = "processed"  # decoded and matched to an outbound message
    UNMATCHED = "unmatched"  # decoded, but no outbound message of ours could be verified
    ERROR = "error"  # the decoder failed; ``error`` says why, ``reprocess`` retries


class InboundMail(SQLModel, table=True):
    """One raw inbound message (a bounce, notice or reply), stored before it is decoded.

    ``sha256`` of the raw bytes is unique, so ingesting the same message twice stores it once;
    ``tenant_id`` and ``message_id`` stay NULL until a verified match names the outbound email.
    """

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int | None = Field(default=None, foreign_key="tenant.id", index=True)
    received_at: datetime = _at()
    source: str = Field(max_length=300)  # "file:<name>", "maildir:<key>", "mbox:<n>"
    sha256: str = Field(unique=True, max_length=64)
    # The SMTP envelope's recipients (RFC 5321 RCPT TO), one stored copy for all of them; NULL
    # for mail from a file or IMAP, whose Delivered-To / X-Original-To headers say it instead.
    recipients: list[str] | None = Field(
        default=None, sa_column=Column(JSON(none_as_null=True), nullable=True)
    )
    raw: bytes = Field(sa_column=Column(sa.LargeBinary, nullable=False))
    kind: str | None = Field(default=None, max_length=20)  # bounce.Kind value once decoded
    message_id: int | None = Field(default=None, foreign_key="message.id", index=True)
    matched_by: str | None = Field(default=None, max_length=20)  # verp, header, message-id
    status: InboundStatus = _state(InboundStatus, InboundStatus.STORED, index=True)
    error: str | None = Field(default=None, max_length=1000)
    processed_at: datetime | None = _at(nullable=True)


class DeliveryEvent(SQLModel, table=True):
    """What an inbound report said about one recipient of a matched outbound message."""

    __table_args__ = (sa.UniqueConstraint("inbound_id", "address"),)

    id: int | None = Field(default=None, primary_key=True)
    inbound_id: int = Field(foreign_key="inboundmail.id", index=True)
    message_id: int = Field(foreign_key="message.id", index=True)
    address: str = Field(max_length=320, index=True)
    kind: str = Field(max_length=20)  # bounce.Kind value: bounce, delayed, complaint ...
    status: str | None = Field(default=None, max_length=20)  # RFC 3463, e.g. "5.1.1"
    reply_code: int | None = None
    reason: str = Field(default="", max_length=63)
    hard: bool = False
    diagnostic: str = Field(default="", max_length=1000)
    created_at: datetime = _at()
    # A hard verdict on weak evidence (bounce/evidence.py) counts as soft and waits for a
    # person: "open", then "suppressed" or "dismissed"; NULL when no review was called for.
    review: str | None = Field(default=None, max_length=20, index=True)
    # What decided suppress / review / neither (bounce.evidence.Evidence.as_dict()).
    evidence: dict[str, Any] | None = Field(
        default=None, sa_column=Column(JSON(none_as_null=True), nullable=True)
    )


class ThreadStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class Thread(SQLModel, table=True):
    """The AR inbox's conversation about one customer document (``"invoice:42"``).

    Only its state lives here (status, assignee); its timeline is derived on read from the
    document's messages, attempts, delivery events and matched inbound mail, plus its notes.
    """

    __table_args__ = (sa.UniqueConstraint("tenant_id", "document"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    customer_id: int | None = Field(default=None, foreign_key="customer.id", index=True)
    # "invoice:<Invoice.id>", "customer:<Customer.id>", or "message:<Message.id>" for neither
    document: str = Field(max_length=100)
    status: ThreadStatus = _state(ThreadStatus, ThreadStatus.OPEN, index=True)
    assignee: str | None = Field(default=None, max_length=200)
    # What a person must do before chasing goes on: "fix_contact" when every contact bounced.
    task: str | None = Field(default=None, max_length=50)
    created_at: datetime = _at()
    updated_at: datetime = _at()
    last_event_at: datetime = _at()  # the newest bounce or reply attached: the inbox order


class ThreadNote(SQLModel, table=True):
    """A note an AR person left on a thread."""

    id: int | None = Field(default=None, primary_key=True)
    thread_id: int = Field(foreign_key="thread.id", index=True)
    author: str = Field(max_length=200)
    text: str = Field(sa_column=Column(sa.Text, nullable=False))
    created_at: datetime = _at()


# -- web: users, sessions, API keys, links, webhooks (dunmail/web) ------------------------------


class User(SQLModel, table=True):
    """A person who works one tenant's AR inbox. An email address belongs to one tenant."""

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    email: str = Field(max_length=320, unique=True)  # lower case
    name: str = Field(default="", max_length=200)
    password_hash: str = Field(max_length=200)  # argon2id (argon2-cffi's PasswordHasher)
    created_at: datetime = _at()
    disabled_at: datetime | None = _at(nullable=True)


class LoginCounter(SQLModel, table=True):
    """Sign-in attempts counted for one throttle key over one fixed window (dunmail/web/
    throttle.py). In the database, not in a process: every engine process serving the web app
    sees the same count, a restart forgets none, and one upsert both checks and counts."""

    # "a:<address>", "c:<client>", "p:<client> <address>" or "*" (every sign-in); the address
    # is mailer.address.canonical_login's spelling, so unknown addresses count too
    key: str = Field(max_length=400, primary_key=True)
    window_start: datetime = _at(index=True)
    count: int = 0


class WebSession(SQLModel, table=True):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is stored, so a
    leaked database does not sign anyone in."""

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = _at()
    expires_at: datetime = _at()
    revoked_at: datetime | None = _at(nullable=True)


class ApiKey(SQLModel, table=True):
    """A tenant's key to the JSON API: ``dm_<prefix>_<secret>``; only the SHA-256 is kept."""

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    name: str = Field(max_length=200)
    prefix: str = Field(max_length=16, unique=True)  # shown in lists and logs instead of the key
    key_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = _at()
    last_used_at: datetime | None = _at(nullable=True)
    revoked_at: datetime | None = _at(nullable=True)


class IdempotencyRecord(SQLModel, table=True):
    """The answer to a POST with an ``Idempotency-Key``: the same key again gets the same answer
    without doing the work twice; the same key with another body is refused."""

    __table_args__ = (sa.UniqueConstraint("tenant_id", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    key: str = Field(max_length=200)
    request_hash: str = Field(max_length=64)  # method, path and body
    status_code: int
    response: str = Field(sa_column=Column(sa.Text, nullable=False))
    created_at: datetime = _at()


class LinkEvent(SQLModel, table=True):
    """A customer opened a link from an email: a view, a click on Pay, a download, a request for
    a fresh link. Shown in the AR inbox thread of the document."""

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    message_id: int | None = Field(default=None, foreign_key="message.id", index=True)
    document: str = Field(max_length=100, index=True)
    purpose: str = Field(max_length=20)  # view, pay, update_payment, manage, download
    action: str = Field(max_length=20)  # opened, redirected, downloaded, refused, refreshed
    at: datetime = _at()
    user_agent: str = Field(default="", max_length=500)


class LinkRevocation(SQLModel, table=True):
    """Links that no longer work before they expire: one token (by its SHA-256), or every link
    to a document."""

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    token_hash: str | None = Field(default=None, max_length=64, index=True)
    document: str | None = Field(default=None, max_length=100, index=True)
    reason: str = Field(default="", max_length=300)
    created_by: str = Field(default="", max_length=200)
    created_at: datetime = _at()


class WebhookStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up after the retry schedule


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint, queued in the transaction that caused it and sent (signed,
    retried with backoff) by the webhook worker: nothing is lost if the endpoint is down."""

    __table_args__ = (sa.Index("ix_webhook_due", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    event_id: str = Field(max_length=64, unique=True)  # also the receiver's dedup key
    event: str = Field(max_length=50)  # message.sent, message.bounced, link.clicked, ...
    url: str = Field(max_length=1000)
    payload: dict[str, Any] = _json(dict)
    status: WebhookStatus = _state(WebhookStatus, WebhookStatus.PENDING)
    attempts: int = 0
    created_at: datetime = _at()
    next_attempt_at: datetime = _at()
    delivered_at: datetime | None = _at(nullable=True)
    last_error: str | None = Field(default=None, max_length=1000)


class ImportLock(SQLModel, table=True):
    """The one import running for a tenant (mailer/ledger/importlock.py). A row, not a transaction:
    an import commits in short batches, so no transaction spans it, and the engine's passes
    read this row to leave a half-imported ledger alone. ``expires_at`` is a lease on the wall
    clock that every batch renews; a row past it belongs to an import that died."""

    __tablename__ = "import_lock"

    tenant_id: int = Field(foreign_key="tenant.id", primary_key=True)
    token: str = Field(max_length=64)  # the holder's own proof, checked at every renewal
    holder: str = Field(max_length=300)  # "host pid N": who, for the busy message
    started_at: datetime = _at()
    expires_at: datetime = _at()
