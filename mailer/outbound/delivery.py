"""PURE: turn what the mail server said about one attempt into the message's next state.

Kept apart from the outbox service so every rule (per-recipient results, 4xx vs 5xx, expiry,
backoff) is a plain function of data and ``now``, tested without a database or a socket.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime

from mailer.config import DeliveryConfig
from mailer.errors import DeliveryError, PermanentDeliveryError
from mailer.outbound.models import AttemptOutcome, MessageStatus, RecipientStatus
from mailer.outbound.retry import is_expired, retry_after
from mailer.outbound.transport import SendResult


@dataclass(frozen=True)
class RecipientUpdate:
    address: str
    status: RecipientStatus
    code: int | None
    response: str


@dataclass(frozen=True)
class Decision:
    """What to write back for one attempt."""

    status: MessageStatus
    next_attempt_at: datetime | None
    outcome: AttemptOutcome
    recipients: list[RecipientUpdate] = field(default_factory=list)
    code: int | None = None
    response: str = ""
    finished: bool = False


def _short(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def decide(
    *,
    recipients: tuple[str, ...],
    previously_accepted: int,
    attempts: int,
    created_at: datetime,
    now: datetime,
    result: SendResult | None,
    error: BaseException | None,
    policy: DeliveryConfig,
    rng: random.Random,
    copies: frozenset[str] = frozenset(),
) -> Decision:
    """Next state of a message after attempt number ``attempts`` to ``recipients``.

    ``recipients`` are those still owed the message; ``previously_accepted`` counts those that
    accepted it on an earlier attempt, who are never sent to again. A recipient is *accepted*
    only when the server took the DATA for it (RFC 5321 s4.2.5: 250 after the final dot).
    A 4xx is retried with backoff until ``policy.max_age``, then fails like a 5xx.

    ``copies`` are the AR team's cc/bcc among ``recipients`` (mailer/outbound/copies.py), and
    ``previously_accepted`` counts customers only: the message is sent when a customer took it
    and failed when none did, whatever the copies got. A deferred copy is retried while the
    customer's email was taken; once it failed for good, nothing is retried for a copy alone.
    """
    expired = is_expired(created_at, now, max_age=policy.max_age)
    updates: list[RecipientUpdate] = []
    code: int | None
    response: str
    if result is not None:
        code, response = result.code, result.message
        for r in result.recipients:
            if r.accepted and result.code is not None and 200 <= result.code < 300:
                status = RecipientStatus.ACCEPTED
            elif r.temporary and not expired:
                status = RecipientStatus.DEFERRED
            else:
                status = RecipientStatus.REJECTED
            updates.append(RecipientUpdate(r.address, status, r.code, _short(r.message)))
        if result.code is None:
            # No recipient was accepted, so DATA was never sent and there is no transaction
            # reply: the RCPT refusal that decides the state stands for it. Without this, a
            # message whose every RCPT got a 4xx or 5xx recorded an empty last_error.
            lead = next((u for u in updates if u.status is RecipientStatus.DEFERRED), None)
            lead = lead or next((u for u in updates if u.status is RecipientStatus.REJECTED), None)
            if lead is not None:
                code, response = lead.code, lead.response
    else:
        permanent = isinstance(error, PermanentDeliveryError)
        if isinstance(error, DeliveryError):
            code, response = error.code, error.message
        else:
            code, response = None, f"{type(error).__name__}: {error}"
        status = RecipientStatus.REJECTED if permanent or expired else RecipientStatus.DEFERRED
        updates = [RecipientUpdate(a, status, code, _short(response)) for a in recipients]

    customer = [u for u in updates if u.address not in copies]
    accepted = previously_accepted + sum(u.status is RecipientStatus.ACCEPTED for u in customer)
    deferred = any(u.status is RecipientStatus.DEFERRED for u in customer)
    if not deferred and any(u.status is RecipientStatus.DEFERRED for u in updates):
        if accepted:
            deferred = True  # only a copy waits: the customer has it; retry the copy
        else:
            why = "not retried: the customer's email was not delivered"
            updates = [
                RecipientUpdate(u.address, RecipientStatus.REJECTED, u.code, f"{why}; {u.response}")
                if u.status is RecipientStatus.DEFERRED
                else u
                for u in updates
            ]
    rejected = any(u.status is RecipientStatus.REJECTED for u in updates)
    if deferred:
        delay = retry_after(
            attempts, first=policy.first_retry_after, maximum=policy.max_retry_after, rng=rng
        )
        outcome = AttemptOutcome.PARTIAL if accepted or rejected else AttemptOutcome.DEFERRED
        return Decision(MessageStatus.DEFERRED, now + delay, outcome, updates, code, response)
    if expired and result is None:
        outcome = AttemptOutcome.EXPIRED
    elif accepted and rejected:
        outcome = AttemptOutcome.PARTIAL
    elif accepted:
        outcome = AttemptOutcome.ACCEPTED
    else:
        outcome = AttemptOutcome.EXPIRED if expired else AttemptOutcome.REJECTED
    final = MessageStatus.SENT if accepted else MessageStatus.FAILED
    return Decision(final, None, outcome, updates, code, _short(response), finished=True)
