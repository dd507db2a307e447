"""The Transport protocol, what a send returns, and the envelope check every transport shares.

Pure: no socket and no third-party import, so callers that only read results (``delivery``,
``envelopes``, ``outbox``) do not pull in aiosmtplib. The implementations live beside it in
``smtp.py`` and ``memory.py``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mailer.errors import AddressError, PermanentDeliveryError

# RFC 5321 s2.3.8: lines end in CRLF on the wire. aiosmtplib rewrites lone CR or LF the same way,
# so normalising first makes the size check, SIZE= and MemoryTransport see the bytes sent.
_LINE_ENDING = re.compile(rb"\r\n|\n|\r(?!\n)")
# CR/LF in an address would smuggle a second SMTP command into MAIL or RCPT.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class RecipientResult:
    """The server's answer to one RCPT TO, kept per address so partial refusals stay visible."""

    address: str
    code: int
    message: str

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        """A 4xx refusal: the same address may be tried again later (RFC 5321 s4.2.1)."""
        return 400 <= self.code < 500


@dataclass(frozen=True)
class SendResult:
    """One mail transaction: every RCPT reply and the reply to end-of-DATA.

    ``code`` is None when no recipient was accepted, so DATA was never sent.
    """

    recipients: tuple[RecipientResult, ...]
    code: int | None
    message: str
    endpoint: str

    @property
    def accepted(self) -> tuple[str, ...]:
        """Addresses the server took the message for."""
        if self.code is None:
            return ()
        return tuple(r.address for r in self.recipients if r.accepted)

    @property
    def refused(self) -> tuple[RecipientResult, ...]:
        return tuple(r for r in self.recipients if not r.accepted)


class Transport(Protocol):
    """How mail leaves the process: one transaction per call, DKIM-signed bytes in, replies out.

    RCPT refusals come back in the result; a failure of the whole transaction raises
    ``TransientDeliveryError`` or ``PermanentDeliveryError``.
    """

    @property
    def key(self) -> str:
        """Identity of the endpoint for logs and delivery-attempt records (never a secret)."""
        ...

    async def send(
        self, message: bytes, *, sender: str, recipients: Sequence[str]
    ) -> SendResult: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Envelope:
    """A checked transaction: what MAIL, RCPT and DATA will carry, the same for every transport."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes  # exactly the octets DATA carries, before dot-stuffing

    @property
    def needs_smtputf8(self) -> bool:
        return not all(a.isascii() for a in (self.sender, *self.recipients))


def build_envelope(
    message: bytes, *, sender: str, recipients: Sequence[str], max_bytes: int | None
) -> Envelope:
    """Check the caller's input once, before any socket is touched."""
    if isinstance(recipients, str):
        raise TypeError("recipients must be a sequence of addresses, not one string")
    if not recipients:
        raise ValueError("a message needs at least one recipient")
    for address in (sender, *recipients):
        if _CONTROL.search(address):
            raise AddressError(f"control character in address {address!r}")
    data = _LINE_ENDING.sub(b"\r\n", message)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if max_bytes is not None and len(data) > max_bytes:
        raise PermanentDeliveryError(
            552, f"5.3.4 message is {len(data)} bytes, over the {max_bytes}-byte limit"
        )
    return Envelope(sender, tuple(recipients), data)
