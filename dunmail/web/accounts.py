"""The web side's own part of the database: AR users, their sign-ins and web sessions, the
sign-in throttle's counters and the API keys.

``Services.accounts`` is the one :class:`Accounts`: routes and ``dunmail user``/``apikey``
make one call on it and never open a transaction themselves. Each method is one short
transaction; argon2 runs outside any (see :meth:`Accounts.check_password`). The rules live
in ``users.py`` (passwords, sessions), ``keyring.py`` (API keys) and ``throttle.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from dunmail.web import keyring, users
from dunmail.web.models import ApiKey, User
from dunmail.web.throttle import LoginThrottle, Refused, ThrottleUnavailable
from mailer.clock import Clock
from mailer.config import WebConfig
from mailer.db import session_scope


@dataclass(frozen=True)
class Attempt:
    """How a sign-in went: ``token`` (the new session's cookie) when it succeeded, else why
    not: ``busy`` (the database could not count or check it now: a 503), ``refused`` (too many
    attempts: a 429), or neither (wrong email or password: a 401)."""

    token: str | None = None
    refused: Refused | None = None
    busy: bool = False


class Accounts:
    """Users, passwords, web sessions, API keys and the login counter, over one engine."""

    def __init__(self, engine: Engine, clock: Clock, config: WebConfig) -> None:
        self._engine = engine
        self._clock = clock
        self._config = config
        self.throttle = LoginThrottle(engine, config.login)

    def _now(self) -> datetime:
        return self._clock.now()

    # -- users -----------------------------------------------------------------------------

    def add_user(self, *, tenant_id: int, email: str, name: str, password: str) -> User:
        """A new user of one tenant (``users.AuthError`` for a short password or a taken email)."""
        with session_scope(self._engine) as session:
            return users.create_user(
                session,
                tenant_id=tenant_id,
                email=email,
                name=name,
                password=password,
                now=self._now(),
            )

    def users(self, *, tenant_id: int | None = None) -> list[User]:
        """Users by email, of one tenant or of all."""
        with Session(self._engine) as session:
            return users.list_users(session, tenant_id=tenant_id)

    def disable_user(self, email: str) -> User:
        """Refuse the user's sign-in from now on and end their open sessions."""
        with session_scope(self._engine) as session:
            return users.disable_user(session, email, now=self._now())

    # -- signing in and out ------------------------------------------------------------------

    def check_password(self, email: str, password: str) -> tuple[int | None, str | None]:
        """The user id whose password this is (None: wrong, unknown or disabled), and a fresh
        hash when the stored one used older parameters. The read's transaction ends before
        argon2 runs, so a flood of sign-ins never holds a database lock."""
        with Session(self._engine) as session:
            credentials = users.read_credentials(session, email)
        if not users.check_password(credentials, password):
            return None, None
        return credentials.user_id, users.rehashed(credentials, password)

    def sign_in(self, user_id: int, *, previous: str | None, new_hash: str | None) -> str | None:
        """A new session's cookie token after a right password (None if the user was disabled
        meanwhile); the browser's ``previous`` session ends."""
        with session_scope(self._engine) as session:
            return users.sign_in(
                session,
                user_id,
                now=self._now(),
                hours=self._config.session_hours,
                previous=previous,
                new_hash=new_hash,
            )

    def sign_out(self, token: str) -> None:
        """Revoke the session of this cookie token."""
        with session_scope(self._engine) as session:
            users.end_session(session, token, now=self._now())

    def signed_in(self, token: str) -> tuple[User, str] | None:
        """The enabled user of a live session with this cookie token, and its CSRF token."""
        with Session(self._engine) as session:
            found = users.live_session(session, token, now=self._now())
        if found is None:
            return None
        web, user = found
        return user, web.csrf_token

    async def attempt_sign_in(
        self, email: str, password: str, *, client: str, previous: str | None
    ) -> Attempt:
        """A sign-in from the form: counted before the password is checked, in one statement
        (no burst gets past the limit, and a locked name refuses the right password too);
        then the password, argon2 outside any transaction; then a new session, ending the
        browser's ``previous`` one. A failed attempt stays counted; a successful one is taken
        back (``throttle.py``). Each step is its own trip to a worker thread, so a flood's
        cheap counting is never queued behind its argon2 checks."""
        try:
            refused = await asyncio.to_thread(self.throttle.claim, email, client, self._now())
        except ThrottleUnavailable:
            return Attempt(busy=True)
        if refused is not None:
            return Attempt(refused=refused)

        def start(user_id: int, new_hash: str | None) -> str | None:
            return self.sign_in(user_id, previous=previous, new_hash=new_hash)

        try:
            user_id, new_hash = await asyncio.to_thread(self.check_password, email, password)
            token = None if user_id is None else await asyncio.to_thread(start, user_id, new_hash)
        except sa.exc.OperationalError:  # the database stayed locked past its busy timeout
            return Attempt(busy=True)
        if token is not None:
            with contextlib.suppress(ThrottleUnavailable):  # signed in; it stays counted
                await asyncio.to_thread(self.throttle.succeeded, email, client)
        return Attempt(token=token)

    # -- API keys ----------------------------------------------------------------------------

    def create_key(self, *, tenant_id: int, name: str) -> tuple[ApiKey, str]:
        """Issue a key: the row, and the key itself, shown once and never stored."""
        with session_scope(self._engine) as session:
            return keyring.create_key(session, tenant_id=tenant_id, name=name, now=self._now())

    def keys(self, *, tenant_id: int | None = None) -> list[dict[str, Any]]:
        """Every key (or the tenant's), oldest first; never the hash."""
        with Session(self._engine) as session:
            return keyring.list_keys(session, tenant_id=tenant_id)

    def revoke_key(self, prefix: str) -> ApiKey:
        """Refuse a key from now on."""
        with session_scope(self._engine) as session:
            return keyring.revoke_key(session, prefix=prefix, now=self._now())

    def api_key(self, key: str) -> ApiKey | None:
        """The live key row of ``key``, else None (checked in constant time)."""
        return keyring.authenticate(self._engine, key, now=self._now())
