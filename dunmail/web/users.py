"""AR users and their web sessions: argon2id passwords, sessions kept only as a SHA-256.

The cookie holds a random 32-byte token; the database keeps only its SHA-256
(``WebSession.token_hash``), so a leaked database signs nobody in. These functions work inside
the caller's transaction; :class:`dunmail.web.accounts.Accounts` opens it (the HTTP side, cookies
and CSRF, is ``dunmail/web/auth.py``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, col, select

from dunmail.web.models import User, WebSession
from mailer.address import canonical_login, parse_addr_spec
from mailer.errors import AddressError, MailerError, NotFoundError

MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # argon2 would hash a megabyte happily; a login form need not let it

# argon2-cffi's defaults are argon2id with RFC 9106's "low memory" parameters. A hash made with
# other parameters still verifies and is replaced at the next sign-in (check_needs_rehash).
HASHER = PasswordHasher()


class AuthError(MailerError):
    """A user cannot be created or changed as asked (bad password, taken email)."""


@cache
def _dummy_hash() -> str:
    """A hash to verify against when the email is unknown, so that costs as long as a real
    check and the response time does not tell which emails have accounts."""
    return HASHER.hash(secrets.token_urlsafe(16))


def normal_email(value: str) -> str:
    """The stored form of a user's email: its sign-in spelling (``canonical_login``: what the
    lookup and the throttle use), which must also be a bare address we could send to."""
    address = canonical_login(value)
    if parse_addr_spec(address) != address:
        raise AddressError(f"not an email address one can sign in with: {value!r}")
    return address


def hash_password(password: str) -> str:
    """An argon2id hash of a password long enough to be one."""
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AuthError(f"a password has at most {MAX_PASSWORD} characters")
    return HASHER.hash(password)


def create_user(
    session: Session, *, tenant_id: int, email: str, name: str, password: str, now: datetime
) -> User:
    """A new user of one tenant. The caller commits."""
    address = normal_email(email)
    if session.exec(select(User).where(col(User.email) == address)).first() is not None:
        raise AuthError(f"there is already a user {address}")
    user = User(
        tenant_id=tenant_id,
        email=address,
        name=name.strip()[:200],
        password_hash=hash_password(password),
        created_at=now,
    )
    session.add(user)
    session.flush()
    return user


def list_users(session: Session, *, tenant_id: int | None = None) -> list[User]:
    """Users by email, of one tenant or of all."""
    query = select(User).order_by(col(User.email))
    if tenant_id is not None:
        query = query.where(col(User.tenant_id) == tenant_id)
    return list(session.exec(query).all())


def disable_user(session: Session, email: str, *, now: datetime) -> User:
    """Sign a user out everywhere and refuse their sign-in from now on. The caller commits."""
    user = session.exec(select(User).where(col(User.email) == normal_email(email))).first()
    if user is None:
        raise NotFoundError(f"no user {email}")
    user.disabled_at = user.disabled_at or now
    for web in session.exec(
        select(WebSession).where(
            col(WebSession.user_id) == user.id, col(WebSession.revoked_at).is_(None)
        )
    ):
        web.revoked_at = now
        session.add(web)
    session.add(user)
    return user


@dataclass(frozen=True)
class Credentials:
    """What a sign-in checks a password against, read before argon2 runs."""

    user_id: int | None  # None: unknown, disabled or malformed (checked against a dummy hash)
    password_hash: str


def read_credentials(session: Session, email: str) -> Credentials:
    """The stored hash of the enabled user who signs in as ``email`` (any spelling that
    :func:`~mailer.address.canonical_login` takes to theirs), else a dummy one.

    Read-only and short: end the transaction before :func:`check_password`, so argon2's tens
    of milliseconds never hold a database lock (on SQLite they held the write lock, and a flood
    of sign-ins made every other writer time out).
    """
    address = canonical_login(email)
    user = session.exec(select(User).where(col(User.email) == address)).first()
    if user is None or user.disabled_at is not None:
        return Credentials(None, _dummy_hash())
    return Credentials(user.id, user.password_hash)


def check_password(credentials: Credentials, password: str) -> bool:
    """argon2: whether ``password`` is the user's. Unknown users, disabled ones and
    over-long passwords cost one verification like a real attempt, and are never right."""
    if len(password) > MAX_PASSWORD:
        _verify(credentials.password_hash, password[:MAX_PASSWORD])
        return False
    right = _verify(credentials.password_hash, password)
    return right and credentials.user_id is not None


def rehashed(credentials: Credentials, password: str) -> str | None:
    """A new hash of a right password whose stored hash used older parameters, else None.
    (argon2 again: compute it outside any transaction too.)"""
    if HASHER.check_needs_rehash(credentials.password_hash):
        return HASHER.hash(password)
    return None


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The enabled user with this email and password, else None (a hash made with older
    parameters is replaced; the caller commits). For callers without a flood to fear: the web
    sign-in runs the steps apart, argon2 outside the transaction."""
    credentials = read_credentials(session, email)
    if credentials.user_id is None or not check_password(credentials, password):
        return None
    user = session.get(User, credentials.user_id)
    if user is None:
        return None
    new_hash = rehashed(credentials, password)
    if new_hash is not None:
        user.password_hash = new_hash
        session.add(user)
    return user


def _verify(hashed: str, password: str) -> bool:
    try:
        return HASHER.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def token_hash(token: str) -> str:
    """What the database keeps of a session cookie."""
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(session: Session, user: User, *, now: datetime, hours: int) -> str:
    """A new signed-in session; returns the cookie token (never stored). The caller commits.

    Sessions that ended (expired or signed out) a day ago or more are deleted here, so the
    table holds roughly the sessions of the last day without a separate cleanup job.
    """
    session.execute(
        sa.delete(WebSession).where(
            sa.or_(
                col(WebSession.expires_at) < now - timedelta(days=1),
                col(WebSession.revoked_at) < now - timedelta(days=1),
            )
        )
    )
    token = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            token_hash=token_hash(token),
            user_id=user.id or 0,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + timedelta(hours=hours),
        )
    )
    session.flush()
    return token


def sign_in(
    session: Session,
    user_id: int,
    *,
    now: datetime,
    hours: int,
    previous: str | None = None,
    new_hash: str | None = None,
) -> str | None:
    """After a right password: a new session's cookie token (None when the user was disabled
    meanwhile). The browser's previous session ends, never reused; a fresh hash from
    :func:`rehashed` is stored. All short writes: the caller commits at once."""
    user = session.get(User, user_id)
    if user is None or user.disabled_at is not None:
        return None
    if new_hash is not None:
        user.password_hash = new_hash
        session.add(user)
    if previous:
        end_session(session, previous, now=now)
    return start_session(session, user, now=now, hours=hours)


def end_session(session: Session, token: str, *, now: datetime) -> None:
    """Revoke the session of this cookie token (logout). The caller commits."""
    web = session.exec(select(WebSession).where(col(WebSession.token_hash) == token_hash(token)))
    for row in web:
        row.revoked_at = row.revoked_at or now
        session.add(row)


def live_session(session: Session, token: str, *, now: datetime) -> tuple[WebSession, User] | None:
    """The web session of this cookie token and its user, if neither revoked, expired nor
    disabled."""
    found = session.exec(
        select(WebSession, User)
        .join(User, col(User.id) == col(WebSession.user_id))
        .where(col(WebSession.token_hash) == token_hash(token))
    ).first()
    if found is None:
        return None
    web, user = found
    if web.revoked_at is not None or web.expires_at <= now or user.disabled_at is not None:
        return None
    return web, user
