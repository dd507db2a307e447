"""The sign-in throttle: attempts counted in the database, checked and counted in one statement.

Every attempt is counted *before* its password is checked, under four keys: the name with the
client, the name, the client, and every sign-in. One upsert adds one to each key and returns
the new counts, so no two attempts can both see "under the limit" and both go on to argon2
(a separate check and count let 59 of 60 concurrent guesses through). When any count passes
its limit the attempt is refused and its additions are taken back in the same transaction:
a refused attempt costs one short write and never counts, so a client hammering a locked name
does not spend the limits of others. A sign-in that succeeds is taken back too.

Windows are fixed per key: the first attempt opens one for ``window``; a key past its window
starts again at one. Retry-After says when the window that refused ends.

The writes are short and never wait on argon2. SQLite takes its write lock for each (the
engine begins every transaction IMMEDIATE; its busy timeout queues the rest); on PostgreSQL
rows are locked in key order, so two attempts cannot deadlock, and a lock timeout, deadlock or
busy database is retried a few times before :class:`ThrottleUnavailable` (a 503, never a 500).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import col

from dunmail.web.models import LoginCounter
from mailer.address import canonical_login
from mailer.columns import UTCDateTime
from mailer.config import LoginConfig
from mailer.db import session_scope
from mailer.errors import MailerError

log = logging.getLogger(__name__)

EVERYONE = "*"
MAX_CLIENT = 64  # an IPv6 address with a zone fits; anything longer is cut, never refused
ATTEMPTS = 5  # tries of one write on a locked or deadlocked database
T = TypeVar("T")
_TABLE: sa.Table = LoginCounter.__table__  # type: ignore[attr-defined]


class ThrottleUnavailable(MailerError):
    """The throttle's database did not answer in time: refuse the sign-in (503), retry later."""


@dataclass(frozen=True)
class Refused:
    """An attempt over a limit: which one, and whole seconds until its window ends."""

    limit: str  # "address_and_client", "address", "client" or "overall"
    retry_after: int


@dataclass(frozen=True)
class Keys:
    """The four keys of one attempt, and the limit each is held to."""

    pair: str  # the name-and-client key: a success clears it
    limits: dict[str, tuple[str, int]]  # key -> (limit name, allowed attempts per window)

    @property
    def ordered(self) -> list[str]:
        """Lock order: the same for every attempt (PostgreSQL deadlocks otherwise)."""
        return sorted(self.limits)


def plan_keys(email: str, client: str, config: LoginConfig) -> Keys:
    """PURE: the keys an attempt by ``email`` from ``client`` counts under.

    The name is :func:`~mailer.address.canonical_login`'s spelling, the one the user lookup
    searches for: any spelling that reaches an account counts as that account.
    """
    address = canonical_login(email)[:320]
    client = client[:MAX_CLIENT]
    pair = f"p:{client} {address}"
    return Keys(
        pair,
        {
            pair: ("address_and_client", config.per_address_and_client),
            f"a:{address}": ("address", config.per_address),
            f"c:{client}": ("client", config.per_client),
            EVERYONE: ("overall", config.overall),
        },
    )


def decide(
    keys: Keys, counts: Sequence[tuple[str, int, datetime]], *, now: datetime, window: timedelta
) -> Refused | None:
    """PURE: the refusal for these counts (key, count after this attempt, window start), if any
    count is over its limit; it waits for the latest window that refused to end."""
    over = [
        (keys.limits[key][0], start + window - now)
        for key, count, start in counts
        if count > keys.limits[key][1]
    ]
    if not over:
        return None
    name, wait = max(over, key=lambda item: item[1])
    return Refused(name, max(1, math.ceil(wait.total_seconds())))


@dataclass(frozen=True)
class LoginThrottle:
    """Sign-in attempts per window in ``LoginCounter``, under the limits of ``config``."""

    engine: Engine
    config: LoginConfig = LoginConfig()

    @property
    def window(self) -> timedelta:
        """How long a key's window lasts."""
        return timedelta(minutes=self.config.window_minutes)

    def claim(self, email: str, client: str, now: datetime) -> Refused | None:
        """Count this attempt under every key, unless one is spent: then nothing is counted
        and the refusal says which limit and for how long. Call before checking the password."""
        keys = plan_keys(email, client, self.config)
        refused, opened = self._write(lambda conn: self._claim(conn, keys, now))
        if opened:  # once per window: drop the keys whose windows ended (separately, see _sweep)
            self._write(lambda conn: self._sweep(conn, now))
        return refused

    def succeeded(self, email: str, client: str) -> None:
        """Take back a sign-in that succeeded: its name-and-client count starts again at zero,
        and the other keys lose this one attempt."""
        keys = plan_keys(email, client, self.config)
        table = _TABLE
        stmt = (
            sa.update(table)
            .where(table.c.key.in_(keys.ordered))
            .values(
                count=sa.case(
                    (table.c.key == keys.pair, 0),
                    (table.c.count > 0, table.c.count - 1),
                    else_=0,
                )
            )
        )
        self._write(lambda conn: conn.execute(stmt))

    def count(self, email: str, client: str, now: datetime) -> dict[str, int]:
        """The live counts of an attempt's limits, by limit name (for tests and operators)."""
        keys = plan_keys(email, client, self.config)
        table = _TABLE
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(table.c.key, table.c.count).where(
                    table.c.key.in_(keys.ordered),
                    table.c.window_start > sa.literal(now - self.window, UTCDateTime()),
                )
            ).all()
        found: dict[str, int] = {str(key): int(n) for key, n in rows}
        return {name: found.get(key, 0) for key, (name, _) in keys.limits.items()}

    # -- the writes ------------------------------------------------------------------------

    def _claim(self, conn: sa.Connection, keys: Keys, now: datetime) -> tuple[Refused | None, bool]:
        table = _TABLE
        at = sa.literal(now, UTCDateTime())
        expired = table.c.window_start <= sa.literal(now - self.window, UTCDateTime())
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        rows = insert(table).values(
            [{"key": k, "window_start": now, "count": 1} for k in keys.ordered]
        )
        upsert = rows.on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                "count": sa.case((expired, 1), else_=table.c.count + 1),
                "window_start": sa.case((expired, at), else_=table.c.window_start),
            },
        ).returning(table.c.key, table.c.count, table.c.window_start)
        counts = [(str(k), int(n), start) for k, n, start in conn.execute(upsert).all()]
        opened = any(k == EVERYONE and start == now for k, _, start in counts)
        refused = decide(keys, counts, now=now, window=self.window)
        if refused is not None:  # not counted: a refused attempt spends nobody's limit...
            mine = table.c.key.in_(keys.ordered)
            conn.execute(sa.update(table).where(mine).values(count=table.c.count - 1))
            # ...and leaves no row behind: a flood of refused new names cannot grow the table
            conn.execute(sa.delete(table).where(mine, table.c.count <= 0))
        return refused, opened

    def _sweep(self, conn: sa.Connection, now: datetime) -> None:
        # Its own transaction, and SKIP LOCKED on PostgreSQL: it never waits for a row an
        # attempt holds, so it cannot join a deadlock (SQLite ignores the clause).
        table = _TABLE
        stale = (
            sa.select(table.c.key)
            .where(table.c.window_start <= sa.literal(now - self.window, UTCDateTime()))
            .with_for_update(skip_locked=True)
        )
        conn.execute(sa.delete(table).where(col(LoginCounter.key).in_(stale.scalar_subquery())))

    def _write(self, work: Callable[[sa.Connection], T]) -> T:
        """One short transaction, retried when the database is locked or chose it as a
        deadlock victim (SQLAlchemy's OperationalError covers both)."""
        for attempt in range(ATTEMPTS):
            try:
                with session_scope(self.engine) as session:
                    return work(session.connection())
            except sa.exc.OperationalError as exc:
                log.warning("login throttle write failed (try %d): %s", attempt + 1, _first(exc))
                time.sleep(0.05 * 2**attempt)
        raise ThrottleUnavailable("the sign-in throttle's database is busy: try again shortly")


def _first(exc: Any) -> str:
    return str(exc).splitlines()[0][:200]
