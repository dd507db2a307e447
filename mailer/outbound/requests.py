"""What goes in and comes out of the outbound rooms: an email to queue, how a tenant sends, a
claimed message, and what a delivery pass did. Plain data, shared by the queue (writes), the
dispatcher (claim, attempt, record) and the floors above that ask for email."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlmodel import Session

from mailer.outbound.assemble import Sender, Signer
from mailer.outbound.delivery import Decision
from mailer.outbound.identity import SenderIdentity
from mailer.outbound.models import (
    Message,
    MessageRecipient,
    MessageStatus,
    RecipientRole,
    RecipientStatus,
)
from mailer.outbound.transport import Transport


@dataclass(frozen=True)
class SendingProfile:
    """Everything needed to send as one tenant: identity, transport and DKIM keys."""

    tenant_id: int
    slug: str
    transport: Transport
    signer: Signer
    identity: SenderIdentity
    rate_per_minute: int
    max_message_bytes: int | None = None  # the endpoint's (SMTPEndpoint.max_message_bytes)

    @cached_property
    def sender(self) -> Sender:
        return Sender(self.identity.message_id_domain, self.signer, self.max_message_bytes)


@dataclass(frozen=True)
class EnqueueRequest:
    """An email to put in the outbox; ``document`` plus ``version`` pin what is sent."""

    tenant_id: int
    kind: str
    recipients: Sequence[str]
    context: Mapping[str, Any]
    document: str  # e.g. "invoice:42"; part of the idempotency key
    version: int | None = None
    customer_id: int | None = None
    invoice_id: int | None = None
    not_before: datetime | None = None
    manual: bool = False
    occasion: str | None = None  # which step of a cadence ("step 2"); part of the key


def idempotency_key(request: EnqueueRequest) -> str:
    """tenant + kind + document + version + recipients (+ occasion): the same email is one
    message. A reminder's occasion is in it, so step 2 and step 3 are two emails."""
    recipients = ",".join(sorted({a.strip().lower() for a in request.recipients}))
    raw = f"{request.tenant_id}|{request.kind}|{request.document}|{request.version}|{recipients}"
    if request.occasion is not None:
        raw += f"|{request.occasion}"
    return hashlib.sha256(raw.encode()).hexdigest()


# Right before sending: message id -> reason for those that must not go (scheduler/preflight.py).
PreflightCheck = Callable[
    [Session, Sequence[Message], Mapping[int, list[MessageRecipient]], datetime],
    Mapping[int, str],
]
# Right before sending: message id -> when the customer's send window next opens, for the
# messages that may go only inside it and are outside it now (scheduler/preflight.py).
WindowCheck = Callable[[Session, Sequence[Message], datetime], Mapping[int, datetime]]


@dataclass(frozen=True)
class Claimed:
    """A snapshot of a claimed message, detached from any session."""

    id: int
    uid: str
    tenant_id: int
    kind: str
    context: dict[str, Any]
    created_at: datetime
    attempts: int
    recipients: tuple[str, ...]
    previously_accepted: int
    invoice_id: int | None = None
    document_version: int | None = None
    pdf_sha256: str | None = None  # recorded by an earlier attempt: a retry sends those bytes
    # The headers' To and Cc: every customer / cc row, owed or not, so a retry to one of them
    # is the same bytes (empty: ``recipients`` are the To, as for a preview).
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    # The AR team's copies among ``recipients`` (mailer/outbound/copies.py): their results
    # never decide the customer's email.
    copies: frozenset[str] = frozenset()


@dataclass
class PassReport:
    """What one delivery pass did, by final state of each attempt."""

    attempted: int = 0
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    throttled: int = 0
    skipped: int = 0  # refused by pre-flight: paid, on hold, suppressed, ...
    by_status: dict[str, int] = field(default_factory=dict)

    def count(self, decision: Decision | None) -> None:
        if decision is None:
            self.throttled += 1
            return
        self.attempted += 1
        if decision.status is MessageStatus.SENT:
            self.sent += 1
        elif decision.status is MessageStatus.DEFERRED:
            self.deferred += 1
        else:
            self.failed += 1


def claimed_of(message: Message, recipients: Sequence[MessageRecipient]) -> Claimed:
    """A claimed message as an attempt needs it: the recipients still owed it, and how many
    customer recipients took it already (a retry is owed only to those that have not)."""
    recipients = sorted(recipients, key=lambda r: r.id or 0)  # as queued: the headers' order
    owed = [
        r for r in recipients if r.status in (RecipientStatus.PENDING, RecipientStatus.DEFERRED)
    ]
    return Claimed(
        id=message.id or 0,
        uid=message.uid,
        tenant_id=message.tenant_id,
        kind=message.kind,
        context=message.context,
        created_at=message.created_at,
        attempts=message.attempts,
        recipients=tuple(r.address for r in owed),
        previously_accepted=sum(
            r.status is RecipientStatus.ACCEPTED and r.role is RecipientRole.TO for r in recipients
        ),
        invoice_id=message.invoice_id,
        document_version=message.document_version,
        pdf_sha256=message.pdf_sha256,
        to=tuple(r.address for r in recipients if r.role is RecipientRole.TO),
        cc=tuple(r.address for r in recipients if r.role is RecipientRole.CC),
        copies=frozenset(r.address for r in recipients if r.role is not RecipientRole.TO),
    )
