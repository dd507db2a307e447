"""PURE: VERP bounce addresses whose token names one message and one recipient, with an HMAC.

Each recipient gets its own envelope (mailer/outbound/envelopes.py), so the envelope sender
``bounces+<uid>-<mac>@<bounce domain>`` belongs to one (message, recipient) pair: the MAC covers
both, though only the uid is written in the address (the recipient's address stays out of the
return path). A returned message lands on an address that proves which email it came from *and*
whom it was about, so a DSN to one recipient's return path cannot suppress another recipient,
and a forged one suppresses nobody.

Tokens issued before per-recipient envelopes (the MAC over the uid alone) still verify, as
``VerpMatch.recipient is None``: they prove the message but not the recipient.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass

from mailer.errors import LinkInvalid

_TOKEN = re.compile(r"^(?P<prefix>[a-z0-9.-]+)\+(?P<uid>[0-9a-f]{8,32})-(?P<mac>[a-z2-7]{16})$")


@dataclass(frozen=True)
class VerpMatch:
    """What a verified VERP address proves: the message, and the recipient it was issued for
    (None for a message-level token issued before per-recipient envelopes)."""

    uid: str
    recipient: str | None


def derive_key(master: bytes, purpose: str) -> bytes:
    """One key per purpose from the master secret, so a leaked link key cannot forge VERP."""
    return hmac.new(master, f"dunmail/{purpose}".encode(), hashlib.sha256).digest()


def _mac(uid: str, key: bytes, recipient: str | None = None) -> str:
    # The recipient is joined with NUL, which no address or uid contains: (uid, recipient)
    # pairs cannot collide, and a message-level MAC (no recipient) never equals a bound one.
    text = uid if recipient is None else f"{uid}\x00{recipient.strip().lower()}"
    digest = hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()
    # 80 bits in lowercase base32: local parts are case-insensitive in practice (RFC 5321 s2.4).
    return base64.b32encode(digest[:10]).decode("ascii").lower()


def issue_verp(
    uid: str, *, key: bytes, domain: str, recipient: str | None = None, prefix: str = "bounces"
) -> str:
    """The envelope sender for message ``uid`` sent to ``recipient`` (None: the old
    message-level token, kept for tests of tokens issued before the upgrade)."""
    return f"{prefix}+{uid}-{_mac(uid, key, recipient)}@{domain}"


def verp_uid(address: str) -> str:
    """The message uid an address names if it is VERP-shaped; unverified. LinkInvalid if not."""
    match = _TOKEN.match(address.strip().strip("<>").rpartition("@")[0].lower())
    if match is None:
        raise LinkInvalid("not a dunmail VERP address")
    return match["uid"]


def verify_verp(address: str, *, key: bytes, recipients: Iterable[str] = ()) -> VerpMatch:
    """Check a VERP address against the recipients its message was sent to.

    Returns the uid and the one recipient whose token it is, or ``recipient=None`` for a
    message-level token; raises LinkInvalid for anything else (a forgery, another key).
    """
    local = address.strip().strip("<>").rpartition("@")[0].lower()
    match = _TOKEN.match(local)
    if match is None:
        raise LinkInvalid("not a dunmail VERP address")
    uid, mac = match["uid"], match["mac"]
    for recipient in recipients:
        if hmac.compare_digest(mac, _mac(uid, key, recipient)):
            return VerpMatch(uid=uid, recipient=recipient.strip().lower())
    if hmac.compare_digest(mac, _mac(uid, key)):
        return VerpMatch(uid=uid, recipient=None)
    raise LinkInvalid("VERP signature does not match")
