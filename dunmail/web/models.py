"""The web accounts' tables: users, sign-in counters, browser sessions, API keys, and the
answers kept for idempotent POSTs. Only the web side reads or writes them.

No ``from __future__ import annotations`` here: it breaks SQLModel relationships
(fastapi/sqlmodel#196).
"""

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Column, Field, SQLModel

from mailer.columns import at_column


class User(SQLModel, table=True):
    """A person who works one tenant's AR inbox. An email address belongs to one tenant."""

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    email: str = Field(max_length=320, unique=True)  # lower case
    name: str = Field(default="", max_length=200)
    password_hash: str = Field(max_length=200)  # argon2id (argon2-cffi's PasswordHasher)
    created_at: datetime = at_column()
    disabled_at: datetime | None = at_column(nullable=True)


class LoginCounter(SQLModel, table=True):
    """Sign-in attempts counted for one throttle key over one fixed window (dunmail/web/
    throttle.py). In the database, not in a process: every engine process serving the web app
    sees the same count, a restart forgets none, and one upsert both checks and counts."""

    # "a:<address>", "c:<client>", "p:<client> <address>" or "*" (every sign-in); the address
    # is mailer.address.canonical_login's spelling, so unknown addresses count too
    key: str = Field(max_length=400, primary_key=True)
    window_start: datetime = at_column(index=True)
    count: int = 0


class WebSession(SQLModel, table=True):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is stored, so a
    leaked database does not sign anyone in."""

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = at_column()
    expires_at: datetime = at_column()
    revoked_at: datetime | None = at_column(nullable=True)


class ApiKey(SQLModel, table=True):
    """A tenant's key to the JSON API: ``dm_<prefix>_<secret>``; only the SHA-256 is kept."""

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    name: str = Field(max_length=200)
    prefix: str = Field(max_length=16, unique=True)  # shown in lists and logs instead of the key
    key_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = at_column()
    last_used_at: datetime | None = at_column(nullable=True)
    revoked_at: datetime | None = at_column(nullable=True)


class IdempotencyRecord(SQLModel, table=True):
    """The answer to a POST with an ``Idempotency-Key``: the same key again gets the same answer
    without doing the work twice; the same key with another body is refused."""

    __table_args__ = (sa.UniqueConstraint("tenant_id", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    key: str = Field(max_length=200)
    request_hash: str = Field(max_length=64)  # method, path and body
    status_code: int
    response: str = Field(sa_column=Column(sa.Text, nullable=False))
    created_at: datetime = at_column()
