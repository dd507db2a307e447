"""PURE: signed link tokens (view, pay, update_payment, manage, download): HMAC-SHA256 over a
compact JSON payload.

A token is ``<payload>.<mac>``, both base64url without padding: the payload is the JSON
``{"p": purpose, "t": tenant_id, "d": document, "v": version, "e": expiry (Unix seconds),
"m": message uid, "k": key id}`` and the MAC is HMAC-SHA256 of the payload's text. "m" is
absent from download links and from a preview's links, which name no stored email. The key id
names which of the link keys signed it, so keys can rotate: the newest signs, the older ones
still verify while they are configured. Nothing is stored per link; expiry is checked against
the ``now`` passed in, and revocation is the web layer's (a token's SHA-256, or a document).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

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
    message: str | None = None  # the uid of the email the link came in
    expired: bool = False  # only with verify_link(..., allow_expired=True)


def key_id(key: bytes) -> str:
    """A short public name for a link key (not secret: a hash prefix)."""
    return hashlib.sha256(b"dunmail-link-key:" + key).hexdigest()[:8]


def token_hash(token: str) -> str:
    """What a revocation stores of a token."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


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
    message: str | None = None,
) -> str:
    """A token granting ``purpose`` ("download") on ``document`` at ``version`` until
    ``expires_at`` (aware), naming the email (``message`` uid) it is sent in."""
    if expires_at.tzinfo is None:
        raise ValueError("expires_at must be an aware datetime")
    claims: dict[str, object] = {
        "p": purpose,
        "t": tenant_id,
        "d": document,
        "v": version,
        "e": int(expires_at.timestamp()),
        "k": key_id(key),
    }
    if message is not None:
        claims["m"] = message
    payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_mac(payload, key)}"


def verify_link(
    token: str,
    *,
    key: bytes | None = None,
    keys: Sequence[bytes] = (),
    now: datetime,
    allow_expired: bool = False,
) -> LinkClaims:
    """The claims of a genuine, unexpired token; :class:`LinkInvalid` or :class:`LinkExpired`.

    ``keys`` are every key that may have signed it (newest first; ``key`` alone is one). The MAC
    is checked (in constant time) before the payload is even decoded, so a forged token never
    reaches the JSON parser. ``allow_expired`` returns an expired token's claims marked
    ``expired`` (the page that offers a fresh link needs to know which document it was).
    """
    candidates = [*([key] if key is not None else []), *keys]
    if not candidates:
        raise ValueError("verify_link needs a key")
    if len(token) > _MAX_TOKEN or token.count(".") != 1:
        raise LinkInvalid("not a dunmail link token")
    payload, mac = token.split(".")
    if not payload.isascii() or not mac.isascii():
        raise LinkInvalid("link signature does not match")
    if not any(hmac.compare_digest(mac.encode(), _mac(payload, k).encode()) for k in candidates):
        raise LinkInvalid("link signature does not match")
    try:
        data = json.loads(_unb64(payload))
        message = data.get("m")
        claims = LinkClaims(
            purpose=_typed(data["p"], str),
            tenant_id=_typed(data["t"], int),
            document=_typed(data["d"], str),
            version=_typed(data["v"], int),
            expires_at=datetime.fromtimestamp(_typed(data["e"], int), tz=UTC),
            message=None if message is None else _typed(message, str),
        )
    except (binascii.Error, ValueError, KeyError, TypeError, OverflowError, AttributeError) as exc:
        # Signed with our key but unreadable: a token from an incompatible build.
        raise LinkInvalid("link payload is malformed") from exc
    if now >= claims.expires_at:
        if allow_expired:
            return replace(claims, expired=True)
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


# The purposes a link can have; each kind's buttons (mailer.content.kinds) are among them.
PURPOSES = ("view", "pay", "update_payment", "manage", "download")


@dataclass(frozen=True)
class LinkMinter:
    """The View / Pay / Update-payment / Manage links of one email, signed when it is built.

    Deterministic for a message (its expiry comes from the document's due date or the message's
    creation, never from the clock), so a retried message is byte-identical.
    """

    key: bytes
    base_url: str  # "https://invoices.example.com": tokens go under /l/
    days_after_due: int = 90
    days: int = 90

    def links(
        self,
        buttons: Sequence[str],
        *,
        tenant_id: int,
        message: str | None,
        document: str,
        version: int,
        context: Mapping[str, Any],
        created_at: datetime,
    ) -> dict[str, str | None]:
        """purpose -> URL for each of the kind's buttons. ``message`` None: links that name
        no stored email (a preview's), which show the document as the ledger has it."""
        expires_at = self.expiry(context, created_at)
        return {
            purpose: f"{self.base_url}/l/"
            + issue_link(
                purpose,
                tenant_id,
                document,
                version,
                key=self.key,
                expires_at=expires_at,
                message=message,
            )
            for purpose in buttons
        }

    def expiry(self, context: Mapping[str, Any], created_at: datetime) -> datetime:
        """``days_after_due`` after the document's due date, else ``days`` after the email;
        never before the email plus a day."""
        due = _due_date(context)
        if due is not None:
            return max(due + timedelta(days=self.days_after_due), created_at + timedelta(days=1))
        return created_at + timedelta(days=self.days)


def _due_date(context: Mapping[str, Any]) -> datetime | None:
    invoice = context.get("invoice")
    raw = invoice.get("due_at") if isinstance(invoice, Mapping) else None
    if not isinstance(raw, str):
        return None
    try:
        found = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)
