"""PURE: signed link tokens (download, view, pay): HMAC-SHA256 over a compact JSON payload.

A token is ``<payload>.<mac>``, both base64url without padding: the payload is the JSON
``{"p": purpose, "t": tenant_id, "d": document, "v": version, "e": expiry (Unix seconds)}`` and
the MAC is HMAC-SHA256 of the payload's text under a per-purpose key (``derive_key(master,
"links")``). Nothing is stored per link; expiry is checked against the ``now`` passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from mailer.errors import LinkExpired, LinkInvalid

_T = TypeVar("_T")
_MAX_TOKEN = 1024  # far above any real token; stops a huge string being decoded at all


@dataclass(frozen=True)
class LinkClaims:
    """What a verified token grants: ``purpose`` on one version of one tenant's document."""

    purpose: str
    tenant_id: int
    document: str
    version: int
    expires_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(payload: str, key: bytes) -> str:
    return _b64(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest())


def issue_link(
    purpose: str,
    tenant_id: int,
    document: str,
    version: int,
    *,
    key: bytes,
    expires_at: datetime,
) -> str:
    """A token granting ``purpose`` ("download") on ``document`` at ``version`` until
    ``expires_at`` (aware)."""
    if expires_at.tzinfo is None:
        raise ValueError("expires_at must be an aware datetime")
    claims = {
        "p": purpose,
        "t": tenant_id,
        "d": document,
        "v": version,
        "e": int(expires_at.timestamp()),
    }
    payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_mac(payload, key)}"


def verify_link(token: str, *, key: bytes, now: datetime) -> LinkClaims:
    """The claims of a genuine, unexpired token; :class:`LinkInvalid` or :class:`LinkExpired`.

    The MAC is checked (in constant time) before the payload is even decoded, so a forged token
    never reaches the JSON parser.
    """
    if len(token) > _MAX_TOKEN or token.count(".") != 1:
        raise LinkInvalid("not a dunmail link token")
    payload, mac = token.split(".")
    if not payload.isascii() or not hmac.compare_digest(mac.encode(), _mac(payload, key).encode()):
        raise LinkInvalid("link signature does not match")
    try:
        data = json.loads(_unb64(payload))
        claims = LinkClaims(
            purpose=_typed(data["p"], str),
            tenant_id=_typed(data["t"], int),
            document=_typed(data["d"], str),
            version=_typed(data["v"], int),
            expires_at=datetime.fromtimestamp(_typed(data["e"], int), tz=UTC),
        )
    except (binascii.Error, ValueError, KeyError, TypeError, OverflowError) as exc:
        # Signed with our key but unreadable: a token from an incompatible build.
        raise LinkInvalid("link payload is malformed") from exc
    if now >= claims.expires_at:
        raise LinkExpired(f"link expired at {claims.expires_at.isoformat()}")
    return claims


def _typed(value: object, kind: type[_T]) -> _T:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"expected {kind.__name__}")
    return value


@dataclass(frozen=True)
class DownloadLinks:
    """How the outbox makes the download link an email carries when its PDF is too large.

    ``base_url`` is the prefix the token is appended to (``https://relay.example/d/``).
    """

    key: bytes
    base_url: str
    lifetime: timedelta = timedelta(days=180)

    def url(self, tenant_id: int, document: str, version: int, *, now: datetime) -> str:
        """A signed download URL for this document version, valid for ``lifetime`` from ``now``."""
        token = issue_link(
            "download", tenant_id, document, version, key=self.key, expires_at=now + self.lifetime
        )
        return f"{self.base_url}{token}"
