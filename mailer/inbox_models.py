"""Returned mail's tables: stored inbound messages, what they said per recipient, and the AR
inbox's threads and notes.

Here, not in bounce/: the outbound room reads ``DeliveryEvent`` (repeated soft bounces block an
address, mailer/outbound/suppression.py), and mailer never imports bounce.

No ``from __future__ import annotations`` here: it breaks SQLModel relationships
(fastapi/sqlmodel#196).
"""

from datetime import date, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field, SQLModel

from mailer.columns import at_column, state_column


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
    received_at: datetime = at_column()
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
    status: InboundStatus = state_column(InboundStatus, InboundStatus.STORED, index=True)
    error: str | None = Field(default=None, max_length=1000)
    processed_at: datetime | None = at_column(nullable=True)


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
    created_at: datetime = at_column()
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
    status: ThreadStatus = state_column(ThreadStatus, ThreadStatus.OPEN, index=True)
    assignee: str | None = Field(default=None, max_length=200)
    # What a person must do before chasing goes on: "fix_contact" when every contact bounced.
    task: str | None = Field(default=None, max_length=50)
    created_at: datetime = at_column()
    updated_at: datetime = at_column()
    last_event_at: datetime = at_column()  # the newest bounce or reply attached: the inbox order


class ThreadNote(SQLModel, table=True):
    """A note an AR person left on a thread."""

    id: int | None = Field(default=None, primary_key=True)
    thread_id: int = Field(foreign_key="thread.id", index=True)
    author: str = Field(max_length=200)
    text: str = Field(sa_column=Column(sa.Text, nullable=False))
    created_at: datetime = at_column()


class ProposalStatus(StrEnum):
    """Life of what a reply's triage proposes: waiting for a clerk, then taken or set aside."""

    PROPOSED = "proposed"  # waiting for a clerk's one click
    ACCEPTED = "accepted"  # a clerk took it: the hold, task or contact change is made
    AUTO = "auto"  # placed without a clerk because the tenant opted in (promise holds only)
    NONE = "none"  # the reply asks for nothing we can do in one click (other, out of office)


class ReplyProposal(SQLModel, table=True):
    """What a customer's reply means (bounce/triage.py) and the action proposed to the clerk:
    one per reply. The reply itself stays in ``InboundMail``; the hold it led to, once
    accepted, is the ledger's ``Hold`` row named here."""

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    thread_id: int = Field(foreign_key="thread.id", index=True)
    inbound_id: int = Field(foreign_key="inboundmail.id", unique=True)
    intent: str = Field(max_length=20)  # bounce.triage.Intent value
    language: str | None = Field(default=None, max_length=10)
    promised_on: date | None = None  # promise_to_pay: the day the customer named
    new_address: str | None = Field(default=None, max_length=320)  # wrong_contact
    evidence: str = Field(default="", max_length=300)  # the customer's words that decided it
    hold_until: datetime | None = at_column(nullable=True)  # promise: promised day + grace
    status: ProposalStatus = state_column(ProposalStatus, ProposalStatus.PROPOSED, index=True)
    hold_id: int | None = Field(default=None, foreign_key="hold.id")
    decided_by: str | None = Field(default=None, max_length=200)
    decided_at: datetime | None = at_column(nullable=True)
    created_at: datetime = at_column()
