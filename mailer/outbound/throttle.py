"""EDGE: rate limits and back-offs kept in the database, shared by every delivery process.

One ``throttle`` row per key (``tenant:7``, ``domain:example.com``, ``endpoint:...``) holds the
key's GCRA theoretical arrival time (``tat``) and any back-off (``paused_until``), in whole
microseconds since the epoch. A take is one atomic upsert per key::

    INSERT INTO throttle (key, scope, tat) SELECT :key, :scope, :now + :interval
      WHERE NOT EXISTS (SELECT 1 FROM throttle WHERE key = :relay AND paused_until > :now)
    ON CONFLICT (key) DO UPDATE SET tat = GREATEST(throttle.tat, :now) + :interval
    WHERE GREATEST(throttle.tat, :now) + :interval - :burst * :interval <= :now
      AND (throttle.paused_until IS NULL OR throttle.paused_until <= :now)
    RETURNING tat

(SQLite: ``max()`` for ``GREATEST``, under the writer lock its BEGIN IMMEDIATE takes; ``:relay``
is the ``closed`` key, paused but never metered, checked in the same statement). A row
comes back when the take conforms; none when it does not, and nothing changed. The keys of one
message are taken in one transaction, in sorted order (PostgreSQL's row locks then never
deadlock), and rolled back together when any refuses, as ``ratelimit.Throttle.delay`` does in
one process. The arithmetic is ``ratelimit.gcra``'s; this module only asks the database.

The only memory kept here is of refusals: a key the database said waits until T is refused
locally until T. That never lets more through than the database would, so N processes together
stay within each key's limit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from mailer.outbound.models import ThrottleState
from mailer.outbound.ratelimit import ZERO, from_micros, gcra, gcra_interval, to_micros

log = logging.getLogger(__name__)

_TABLE: sa.Table = ThrottleState.__table__  # type: ignore[attr-defined]
_PARAMS = ("key", "scope", "fresh", "now", "step", "tolerance", "closed")
# The closed key's pause is checked in the same statement: no row to insert while it holds.
_TAKE = (
    "INSERT INTO throttle (key, scope, tat) SELECT {key}, {scope}, {fresh} WHERE NOT EXISTS "
    "(SELECT 1 FROM throttle WHERE key = {closed} AND paused_until > {now}) "
    "ON CONFLICT (key) DO UPDATE SET tat = {greatest}(throttle.tat, {now}) + {step} "
    "WHERE {greatest}(throttle.tat, {now}) + {step} - {tolerance} <= {now} "
    "AND (throttle.paused_until IS NULL OR throttle.paused_until <= {now}) "
    "RETURNING tat"
)
_PAUSED = "SELECT paused_until FROM throttle WHERE key = {key} AND paused_until > {now}"
_MICROSECOND = timedelta(microseconds=1)
_REMEMBERED = 10_000  # refusals kept in memory before the passed ones are forgotten


class SharedThrottle:
    """``ratelimit.Throttle``'s contract, kept in the database for every process at once.

    ``rate_for(key)`` is the key's rate a minute; ``burst_for(key)`` how many may go at once
    (None: one minute's worth, as ``TokenBucket``). Every method takes ``now`` from the
    caller's injected clock; nothing here reads a clock.
    """

    def __init__(
        self,
        engine: Engine,
        rate_for: Callable[[str], int],
        *,
        burst_for: Callable[[str], int | None] | None = None,
    ) -> None:
        self._engine = engine
        self._rate_for = rate_for
        self._burst_for = burst_for
        postgres = engine.dialect.name == "postgresql"
        self._insert = postgresql.insert if postgres else sqlite.insert
        mark = "%({})s" if postgres else ":{}"  # psycopg's and sqlite3's named parameters
        self._take_sql = _TAKE.format(
            greatest="GREATEST" if postgres else "max", **{n: mark.format(n) for n in _PARAMS}
        )
        self._pause_sql = _PAUSED.format(**{n: mark.format(n) for n in _PARAMS})
        self._refused_until: dict[str, datetime] = {}  # what the database said, kept till then

    def limits(self, key: str) -> tuple[int, int]:
        """``(interval in microseconds, burst)`` of ``key``."""
        rate = self._rate_for(key)
        burst = self._burst_for(key) if self._burst_for is not None else None
        return gcra_interval(rate), rate if burst is None else burst

    def delay(self, keys: Sequence[str], now: datetime, *, closed: Iterable[str] = ()) -> timedelta:
        """Zero, having taken one from every key; else the longest wait, taking nothing.

        ``closed`` keys are only checked for a back-off, never metered (a relay: its pause
        holds every message sent through it, its rate is its domains' and tenants')."""
        unique = sorted(set(keys))
        paused = sorted(set(closed) - set(unique))
        known = self._known_wait([*unique, *paused], now)
        if known > ZERO:
            return known
        # The first closed key goes into every take's statement; any others (none from the
        # dispatcher) are asked on their own first.
        first, others = (paused[0], paused[1:]) if paused else ("", [])
        with self._engine.connect() as connection, connection.begin() as transaction:
            wait = max(self._pauses(connection, others, now).values(), default=ZERO)
            if wait > ZERO:
                return wait
            for n, key in enumerate(unique):
                if not self._take(connection, key, first, now):
                    wait = self._wait(connection, unique[n:], paused, now)
                    transaction.rollback()  # the keys taken before this one get theirs back
                    return wait
            if not unique:
                return max(self._pauses(connection, paused[:1], now).values(), default=ZERO)
        return ZERO

    def back_off(self, key: str, until: datetime, now: datetime, *, reason: str = "") -> None:
        """Close ``key`` for every process until ``until``; an earlier time never shortens a
        back-off in force."""
        micros = to_micros(until)
        stmt = self._insert(_TABLE).values(
            key=key, scope=_scope(key), tat=0, paused_until=micros, reason=reason[:300]
        )
        current = _TABLE.c.paused_until
        stmt = stmt.on_conflict_do_update(
            index_elements=[_TABLE.c.key],
            set_={"paused_until": micros, "reason": reason[:300]},
            where=sa.or_(current.is_(None), current < micros),
        )
        with self._engine.begin() as connection:
            connection.execute(stmt)
        self._remember(key, until)
        log.info("throttle %s paused until %s: %s", key, until.isoformat(), reason)

    def paused_for(self, key: str, now: datetime) -> timedelta:
        """How long a back-off still holds ``key`` closed; zero if open."""
        with self._engine.begin() as connection:
            return self._pauses(connection, [key], now).get(key, ZERO)

    # -- the database ----------------------------------------------------------------------

    def _take(self, connection: Connection, key: str, closed: str, now: datetime) -> bool:
        interval, burst = self.limits(key)
        at = to_micros(now)
        params = {
            "key": key,
            "scope": _scope(key),
            "fresh": at + interval,
            "now": at,
            "step": interval,
            "tolerance": burst * interval,
            "closed": closed,
        }
        # Plain SQL, written once per dialect: building and caching a Core statement per take
        # cost more CPU than the database's own work.
        return connection.exec_driver_sql(self._take_sql, params).first() is not None

    def _wait(
        self, connection: Connection, keys: Sequence[str], closed: Sequence[str], now: datetime
    ) -> timedelta:
        """The longest wait of ``keys`` (GCRA or back-off) and ``closed`` (back-off only),
        each remembered until it passes."""
        rows = connection.execute(
            sa.select(_TABLE.c.key, _TABLE.c.tat, _TABLE.c.paused_until).where(
                _TABLE.c.key.in_([*keys, *closed])
            )
        ).all()
        at = to_micros(now)
        longest = ZERO
        for key, tat, paused_until in rows:
            micros = (paused_until or 0) - at
            if key in keys:
                interval, burst = self.limits(key)
                micros = max(micros, gcra(tat, at, interval=interval, burst=burst).wait)
            if micros > 0:
                wait = micros * _MICROSECOND
                self._remember(key, now + wait)
                longest = max(longest, wait)
        return longest

    def _pauses(
        self, connection: Connection, keys: Sequence[str], now: datetime
    ) -> dict[str, timedelta]:
        waits = {}
        for key in keys:
            row = connection.exec_driver_sql(
                self._pause_sql, {"key": key, "now": to_micros(now)}
            ).first()
            if row is not None:
                waits[key] = from_micros(row[0]) - now
                self._remember(key, now + waits[key])
        return waits

    # -- what the database said ------------------------------------------------------------

    def _known_wait(self, keys: Sequence[str], now: datetime) -> timedelta:
        longest = ZERO
        for key in keys:
            until = self._refused_until.get(key)
            if until is None:
                continue
            if until <= now:
                del self._refused_until[key]
            else:
                longest = max(longest, until - now)
        return longest

    def _remember(self, key: str, until: datetime) -> None:
        if len(self._refused_until) >= _REMEMBERED:  # one-off keys must not pile up; the
            self._refused_until.clear()  # database still knows, so forgetting is always safe
        current = self._refused_until.get(key)
        if current is None or until > current:
            self._refused_until[key] = until


def _scope(key: str) -> str:
    return key.partition(":")[0][:20] if ":" in key else "key"
