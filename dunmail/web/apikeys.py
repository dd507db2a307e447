"""Per-tenant API keys for the JSON API: issued once, kept only as a SHA-256, checked in
constant time.

A key reads ``dm_<prefix>_<secret>``: ``prefix`` is 8 random hex characters, stored in clear
so a key can be named in lists and logs and found by one indexed look-up; ``secret`` is
``secrets.token_urlsafe(32)`` (256 bits). Only ``sha256(key)`` is stored, so a copy of the
database grants nothing; a plain hash suffices (no salt or slow KDF) because the key is random,
not a password someone chose.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import Depends, Header, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from dunmail.app import Services
from dunmail.web import idempotency
from dunmail.web.deps import services_of
from mailer.errors import NotFoundError
from mailer.models import ApiKey

_KEY = re.compile(r"^dm_(?P<prefix>[0-9a-f]{8})_(?P<secret>[A-Za-z0-9_-]{43})$")
# last_used_at is a hint for people ("is this key still used?"), not an audit log: one write per
# key per minute at most, so a busy ERP does not turn every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_key(key: str) -> str:
    """The stored form of a key: hex SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, *, tenant_id: int, name: str, now: datetime) -> tuple[ApiKey, str]:
    """Issue a key for the tenant; returns the row and the key itself, which is shown once and
    never stored."""
    name = name.strip()
    if not name:
        raise ValueError("an API key needs a name (what uses it, e.g. 'erp-sync')")
    while True:
        prefix = secrets.token_hex(4)
        if session.exec(select(ApiKey).where(ApiKey.prefix == prefix)).first() is None:
            break
    key = f"dm_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        tenant_id=tenant_id, name=name[:200], prefix=prefix, key_hash=hash_key(key), created_at=now
    )
    session.add(row)
    session.flush()
    return row, key


def list_keys(session: Session, *, tenant_id: int | None = None) -> list[dict[str, Any]]:
    """Every key (or the tenant's), oldest first: prefix, name, times; never the hash."""
    query = select(ApiKey).order_by(col(ApiKey.created_at), col(ApiKey.id))
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    return [
        {
            "prefix": k.prefix,
            "tenant_id": k.tenant_id,
            "name": k.name,
            "created_at": k.created_at.isoformat(),
            "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
            "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
        }
        for k in session.exec(query).all()
    ]


def revoke_key(session: Session, *, prefix: str, now: datetime) -> ApiKey:
    """Refuse the key from now on (revoking twice keeps the first time)."""
    row = session.exec(select(ApiKey).where(ApiKey.prefix == prefix.strip().lower())).first()
    if row is None:
        raise NotFoundError(f"no API key with prefix {prefix!r}")
    if row.revoked_at is None:
        row.revoked_at = now
        session.add(row)
        session.flush()
    return row


def authenticate(engine: Engine, key: str, *, now: datetime) -> ApiKey | None:
    """The live key row for ``key``, or None (malformed, unknown, wrong secret or revoked).

    The row is found by its prefix and the hashes are compared with ``hmac.compare_digest``, so
    the time taken says nothing about how much of the secret was right.
    """
    match = _KEY.match(key)
    if match is None:
        return None
    with Session(engine, expire_on_commit=False) as session:
        row = session.exec(select(ApiKey).where(ApiKey.prefix == match["prefix"])).first()
        if row is None or not hmac.compare_digest(row.key_hash, hash_key(key)):
            return None
        if row.revoked_at is not None:
            return None
        stale = now - LAST_USED_RESOLUTION
        if row.last_used_at is None or row.last_used_at < stale:
            session.execute(
                sa.update(ApiKey)
                .where(
                    col(ApiKey.id) == row.id,
                    sa.or_(col(ApiKey.last_used_at).is_(None), col(ApiKey.last_used_at) < stale),
                )
                .values(last_used_at=now)
            )
            session.commit()
        session.expunge(row)
        return row


# -- the FastAPI side: who is calling --------------------------------------------------------

bearer = HTTPBearer(auto_error=False, description="an API key: `dunmail apikey create NAME`")

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, unknown or revoked API key"},
    404: {"description": "no such record for this tenant"},
    409: {"description": "the same Idempotency-Key is still being worked on"},
    422: {
        "description": "invalid request (``detail`` or ``errors`` name the field), or an "
        "Idempotency-Key reused with a different request"
    },
}


@dataclass(frozen=True)
class Call:
    """An authenticated API call: the tenant, the key's prefix, and its Idempotency-Key."""

    services: Services
    tenant_id: int
    slug: str
    key_prefix: str
    idempotency_key: str | None
    digest: str
    body: bytes

    @property
    def by(self) -> str:
        """Who did it, as holds and notes record it."""
        return f"api:{self.key_prefix}"


async def api_call(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=200,
            description="POST only: the same key and request get the stored answer again",
        ),
    ] = None,
) -> Call:
    """Authenticate ``Authorization: Bearer dm_...`` (401 otherwise; the key is never logged)."""
    services = services_of(request)
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing API key: send Authorization: Bearer <key>")
    row = authenticate(services.engine, credentials.credentials, now=services.clock.now())
    if row is None:
        raise _unauthorized("invalid or revoked API key")
    body = await request.body()
    return Call(
        services=services,
        tenant_id=row.tenant_id,
        slug=services.tenant_slug(row.tenant_id),
        key_prefix=row.prefix,
        idempotency_key=idempotency_key,
        digest=idempotency.request_hash(request.method, request.url.path, body),
        body=body,
    )


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


Api = Annotated[Call, Depends(api_call)]
