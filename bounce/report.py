"""What ``bounce.parse`` returns: the kind of message and, per recipient, what happened."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    """What a returned or inbound message is."""

    BOUNCE = "bounce"
    DELAYED = "delayed"
    COMPLAINT = "complaint"
    AUTO_REPLY = "auto_reply"
    DELIVERED = "delivered"
    NOT_BOUNCE = "not_bounce"


@dataclass(frozen=True)
class Recipient:
    """One recipient of the original message and what the mail system said about it."""

    address: str
    status: str | None  # RFC 3463 enhanced status, e.g. "5.1.1"
    reply_code: int | None  # RFC 5321 reply code, e.g. 550
    reason: str  # Sisimai's vocabulary: userunknown, mailboxfull, expired, ...
    hard: bool  # the address itself is bad: suppress it
    action: str | None  # RFC 3464 Action: failed, delayed, delivered, ...
    diagnostic: str
    command: str | None = None  # the SMTP command the reply answered (RCPT, DATA, MAIL, CONNECT)


@dataclass(frozen=True)
class Report:
    """The decoded message. ``recipients`` is empty for ordinary mail."""

    kind: Kind
    recipients: list[Recipient] = field(default_factory=list)
    original_message_id: str | None = None
    dunmail_id: str | None = None  # the X-Dunmail-Message header of the returned original
    verp: str | None = None  # the VERP address the bounce was sent to, unverified
    detector: str | None = None
    feedback_type: str | None = None

    @property
    def is_failure(self) -> bool:
        """Whether the message reports a final delivery failure."""
        return self.kind is Kind.BOUNCE

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``dunmail bounce parse --json``)."""
        return {
            "kind": self.kind.value,
            "recipients": [asdict(r) for r in self.recipients],
            "original_message_id": self.original_message_id,
        }
