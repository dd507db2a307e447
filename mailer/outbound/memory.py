"""MemoryTransport: a real Transport that keeps mail in a list, for tests and dry runs."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from mailer.errors import DeliveryError, PermanentDeliveryError
from mailer.outbound.transport import RecipientResult, SendResult, build_envelope


@dataclass(frozen=True)
class SentMail:
    """A message MemoryTransport accepted: the envelope and the bytes DATA would have carried."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes


class MemoryTransport:
    """A real Transport keeping mail in ``.sent``, like Django's locmem backend: tests, dry runs.

    It parses every message, refuses scripted recipients per address, and raises scripted
    failures, so callers exercise the same paths as with SMTP.
    """

    key: ClassVar[str] = "memory"

    def __init__(
        self,
        *,
        refuse: Mapping[str, tuple[int, str]] | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        self.sent: list[SentMail] = []
        self._refuse: dict[str, tuple[int, str]] = {}
        for address, (code, text) in (refuse or {}).items():
            if not 400 <= code < 600:
                raise ValueError(f"refusal for {address!r} must be a 4xx or 5xx code, not {code}")
            self._refuse[address.lower()] = (code, text)
        self._max_bytes = max_message_bytes
        self._failures: list[DeliveryError] = []

    def fail_next(self, exc: DeliveryError) -> None:
        """Make the next send raise ``exc`` (calls queue up, one failure per send)."""
        self._failures.append(exc)

    async def send(self, message: bytes, *, sender: str, recipients: Sequence[str]) -> SendResult:
        if self._failures:
            raise self._failures.pop(0)
        envelope = build_envelope(
            message, sender=sender, recipients=recipients, max_bytes=self._max_bytes
        )
        _check_is_message(envelope.data)
        results = tuple(self._reply(address) for address in envelope.recipients)
        accepted = tuple(r.address for r in results if r.accepted)
        if not accepted:
            return SendResult(results, None, "", self.key)
        self.sent.append(SentMail(envelope.sender, accepted, envelope.data))
        return SendResult(results, 250, "2.0.0 OK: kept in memory", self.key)

    async def close(self) -> None:
        """Nothing to release; present so MemoryTransport is a full Transport."""

    def _reply(self, address: str) -> RecipientResult:
        code, text = self._refuse.get(address.lower(), (250, "2.1.5 OK"))
        return RecipientResult(address, code, text)


def _check_is_message(data: bytes) -> None:
    """Fail like a strict server would on bytes that are not an RFC 5322 message."""
    parsed = email.message_from_bytes(data, policy=email.policy.SMTP)
    if not parsed.keys():
        raise PermanentDeliveryError(554, "5.6.0 not an RFC 5322 message: no header fields")
    if parsed["From"] is None:  # RFC 5322 s3.6: From is required
        raise PermanentDeliveryError(554, "5.6.0 message has no From header field")
