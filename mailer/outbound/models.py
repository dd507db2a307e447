"""The outbound room's tables: the outbox (messages, recipients, attempts), suppressions,
webhook deliveries, and the link events and revocations of the links emails carry.

No ``from __future__ import annotations`` here: it breaks SQLModel relationships
(fastapi/sqlmodel#196).
"""

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from mailer.columns import at_column, json_column, state_column


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


class RecipientRole(StrEnum):
    """Whom a recipient row is: the customer (``to``), or the tenant's AR team's copy, shown in
    the Cc header (``cc``) or in no header at all (``bcc``). Only ``to`` rows decide whether the
    customer's email was sent; a copy's refusal or bounce is about the copy alone."""

    TO = "to"
    CC = "cc"
    BCC = "bcc"


class AttemptOutcome(StrEnum):
    ACCEPTED = "accepted"
    PARTIAL = "partial"
    DEFERRED = "deferred"
    REJECTED = "rejected"
    EXPIRED = "expired"
    THROTTLED = "throttled"


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
    status: MessageStatus = state_column(MessageStatus, MessageStatus.QUEUED)
    context: dict[str, Any] = json_column(dict)  # frozen render input: the document as enqueued
    created_at: datetime = at_column()
    next_attempt_at: datetime = at_column()
    attempts: int = 0
    claimed_until: datetime | None = at_column(nullable=True)
    claimed_by: str | None = Field(default=None, max_length=64)
    finished_at: datetime | None = at_column(nullable=True)
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
    status: RecipientStatus = state_column(RecipientStatus, RecipientStatus.PENDING)
    role: RecipientRole = state_column(RecipientRole, RecipientRole.TO)
    code: int | None = None
    response: str | None = Field(default=None, max_length=1000)
    updated_at: datetime | None = at_column(nullable=True)


class DeliveryAttempt(SQLModel, table=True):
    """The log of every SMTP conversation about a message, one row per attempt."""

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", index=True)
    number: int
    started_at: datetime = at_column()
    finished_at: datetime = at_column()
    endpoint: str = Field(max_length=300)
    outcome: AttemptOutcome = state_column(AttemptOutcome)
    code: int | None = None
    response: str | None = Field(default=None, max_length=1000)
    recipients: list[dict[str, Any]] = json_column(list)  # [{address, code, response, status}]


class Suppression(SQLModel, table=True):
    """An address the tenant's emails must not go to (a hard bounce, a complaint, repeated soft
    bounces for a while, by hand); one row per address holding its current state."""

    __table_args__ = (sa.UniqueConstraint("tenant_id", "address"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    address: str = Field(max_length=320)  # lower case (mailer/outbound/suppression.py::normal)
    kind: str = Field(default="hard", max_length=20)  # mailer.outbound.suppression.SuppressionKind
    reason: str = Field(max_length=300)
    created_at: datetime = at_column()
    created_by: str = Field(default="bounce", max_length=200)
    expires_at: datetime | None = at_column(nullable=True)  # a soft-bounce block ends by itself
    # A person lifted the block: who, when and why (mailer/outbound/suppression.py::unblock).
    lifted_at: datetime | None = at_column(nullable=True)
    lifted_by: str | None = Field(default=None, max_length=200)
    lift_reason: str | None = Field(default=None, max_length=300)


class LinkEvent(SQLModel, table=True):
    """A customer opened a link from an email: a view, a click on Pay, a download, a request for
    a fresh link. Shown in the AR inbox thread of the document."""

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    message_id: int | None = Field(default=None, foreign_key="message.id", index=True)
    document: str = Field(max_length=100, index=True)
    purpose: str = Field(max_length=20)  # view, pay, update_payment, manage, download
    action: str = Field(max_length=20)  # opened, redirected, downloaded, refused, refreshed
    at: datetime = at_column()
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
    created_at: datetime = at_column()


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
    payload: dict[str, Any] = json_column(dict)
    status: WebhookStatus = state_column(WebhookStatus, WebhookStatus.PENDING)
    attempts: int = 0
    created_at: datetime = at_column()
    next_attempt_at: datetime = at_column()
    delivered_at: datetime | None = at_column(nullable=True)
    last_error: str | None = Field(default=None, max_length=1000)


class ThrottleState(SQLModel, table=True):
    """One rate-limited key (``tenant:7``, ``domain:example.com``, ``endpoint:...``) shared by
    every delivery process on every machine (mailer/outbound/throttle.py): its GCRA theoretical
    arrival time and the back-off a 421 / 4.7.x put on it. Both are whole microseconds since
    the Unix epoch, so one ``UPDATE ... RETURNING`` does the arithmetic on either database."""

    __tablename__ = "throttle"

    key: str = Field(primary_key=True, max_length=330)
    scope: str = Field(max_length=20)  # tenant, domain or endpoint: the key's prefix
    tat: int = Field(default=0, sa_type=sa.BigInteger)
    paused_until: int | None = Field(default=None, sa_type=sa.BigInteger)
    reason: str | None = Field(default=None, max_length=300)  # the reply that paused it
