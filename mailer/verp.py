"""PURE: VERP bounce addresses whose token names a message and carries an HMAC.

The envelope sender is ``bounces+<uid>-<mac>@<bounce domain>``: a returned message lands on an
address that names the outbox row it came from, and the MAC stops a forged bounce from being
attributed to (and suppressing the recipient of) a message it never concerned.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from mailer.errors import LinkInvalid

_TOKEN = re.compile(r"^(?P<prefix>[a-z0-9.-]+)\+(?P<uid>[0-9a-f]{8,32})-(?P<mac>[a-z2-7]{16})$")


def derive_key(master: bytes, purpose: str) -> bytes:
    """One key per purpose from the master secret, so a leaked link key cannot forge VERP."""
    return hmac.new(master, f"dunmail/{purpose}".encode(), hashlib.sha256).digest()


def _mac(uid: str, key: bytes) -> str:
    digest = hmac.new(key, uid.encode("ascii"), hashlib.sha256).digest()
    # 80 bits in lowercase base32: local parts are case-insensitive in practice (RFC 5321 s2.4).
    return base64.b32encode(digest[:10]).decode("ascii").lower()


def issue_verp(uid: str, *, key: bytes, domain: str, prefix: str = "bounces") -> str:
    """The envelope sender for message ``uid``."""
    return f"{prefix}+{uid}-{_mac(uid, key)}@{domain}"


def verify_verp(address: str, *, key: bytes) -> str:
    """Return the message uid named by a VERP address, or raise LinkInvalid."""
    local = address.strip().strip("<>").rpartition("@")[0].lower()
    match = _TOKEN.match(local)
    if match is None:
        raise LinkInvalid("not a dunmail VERP address")
    uid, mac = match["uid"], match["mac"]
    if not hmac.compare_digest(mac, _mac(uid, key)):
        raise LinkInvalid("VERP signature does not match")
    return uid
