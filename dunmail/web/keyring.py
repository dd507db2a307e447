"""Per-tenant API keys for the JSON API: issued once, kept only as a SHA-256, checked in
constant time.

A key reads ``dm_<prefix>_<secret>``: ``prefix`` is 8 random hex characters, stored in clear
so a key can be named in lists and logs and found by one indexed look-up; ``secret`` is
``secrets.token_urlsafe(32)`` (256 bits). Only ``sha256(key)`` is stored, so a copy of the
database grants nothing; a plain hash suffices (no salt or slow KDF) because the key is random,
not a password someone chose. These functions work in the caller's transaction, except
:func:`authenticate`, which is its own; :class:`dunmail.web.accounts.Accounts` calls them (the
FastAPI side, the ``Authorization`` header, is ``dunmail/web/apikeys.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from dunmail.web.models import ApiKey
from mailer.errors import NotFoundError

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
