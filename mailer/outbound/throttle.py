"""EDGE: rate limits and back-offs kept in the database, shared by every delivery process.

One ``throttle`` row per key (``tenant:7``, ``domain:example.com``, ``endpoint:...``) holds the
key's GCRA theoretical arrival time (``tat``) and any back-off (``paused_until``), in whole
microseconds since the epoch.

A claimed batch asks once (:meth:`SharedThrottle.delay_many`): in one transaction the rows of
every key its messages name are created if new, locked in key order (``SELECT ... FOR UPDATE``
on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` holds the writer lock), each message's take decided
in order by the pure ``ratelimit.gcra`` (all its metered keys conform and are taken, or the
longest wait is returned and nothing is taken; a paused ``closed`` key, the relay, holds it
too), and the new times written back in one executemany before the commit. Key order means
PostgreSQL's row locks never deadlock; the lock means N processes together never take more
than a key allows. Asking per message instead cost a transaction per message and made every
worker of a tenant queue on that tenant's row.

The only memory kept here is of refusals: a key the database said waits until T is refused
locally until T. That never lets more through than the database would.
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
_PARAMS = ("key", "now")
_PAUSED = "SELECT paused_until FROM throttle WHERE key = {key} AND paused_until > {now}"
_MICROSECOND = timedelta(microseconds=1)
_REMEMBERED = 10_000  # refusals kept in memory before the passed ones are forgotten


class SharedThrottle:
    """``ratelimit.Throttle``'s contract, kept in the database for every process at once.

    ``rate_for(key)`` is the key's rate a minute; ``burst_for(key)`` how many may go at once
    (None: one minute's worth). Every method takes ``now`` from the
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
        return self.delay_many([(keys, tuple(closed))], now)[0]

    def delay_many(
        self, requests: Sequence[tuple[Sequence[str], Sequence[str]]], now: datetime
    ) -> list[timedelta]:
        """:meth:`delay` for each ``(keys, closed)`` in order, in one transaction: a claimed
        batch asks once, not once per message, so the throttle costs one round trip and one
        short lock of each key's row per batch, whatever the batch's size.

        The rows of every key named are locked in key order (``FOR UPDATE`` on PostgreSQL,
        ``BEGIN IMMEDIATE`` on SQLite), the takes are decided in order by the pure ``gcra``
        against the locked values, and the new times written back before the commit: what N
        processes take together never exceeds any key's limit."""
        waits = [self._known_wait([*keys, *closed], now) for keys, closed in requests]
        asking = [n for n, wait in enumerate(waits) if wait <= ZERO]
        metered = sorted({k for n in asking for k in requests[n][0]})
        named = sorted({*metered, *(k for n in asking for k in requests[n][1])})
        if not named:
            return waits
        at = to_micros(now)
        with self._engine.begin() as connection:
            connection.execute(
                self._insert(_TABLE).on_conflict_do_nothing(index_elements=[_TABLE.c.key]),
                [{"key": key, "scope": _scope(key), "tat": 0} for key in metered],
            )
            query = (
                sa.select(_TABLE.c.key, _TABLE.c.tat, _TABLE.c.paused_until)
                .where(_TABLE.c.key.in_(named))
                .order_by(_TABLE.c.key)
            )
            if connection.dialect.name == "postgresql":
                query = query.with_for_update()
            rows = {key: (tat, paused) for key, tat, paused in connection.execute(query)}
            tats = {key: rows[key][0] for key in metered}
            changed: set[str] = set()
            for n in asking:
                keys, closed = requests[n]
                waits[n] = self._decide(keys, closed, rows, tats, changed, at, now)
            if changed:
                connection.execute(
                    _TABLE.update()
                    .where(_TABLE.c.key == sa.bindparam("b_key"))
                    .values(tat=sa.bindparam("b_tat")),
                    [{"b_key": key, "b_tat": tats[key]} for key in sorted(changed)],
                )
        return waits

    def _decide(
        self,
        keys: Sequence[str],
        closed: Sequence[str],
        rows: dict[str, tuple[int, int | None]],
        tats: dict[str, int],
        changed: set[str],
        at: int,
        now: datetime,
    ) -> timedelta:
        """One message's take against the batch's running times: every key conforms and is
        taken, or the longest wait (a back-off, or GCRA's) is returned and nothing taken."""
        longest = 0
        for key in sorted({*keys, *closed}):
            paused = (rows.get(key, (0, None))[1] or 0) - at
            if paused > 0:
                self._remember(key, now + paused * _MICROSECOND)
                longest = max(longest, paused)
        cells = {}
        for key in sorted(set(keys)):
            interval, burst = self.limits(key)
            cells[key] = gcra(tats[key], at, interval=interval, burst=burst)
            if not cells[key].conforms:
                self._remember(key, now + cells[key].wait * _MICROSECOND)
                longest = max(longest, cells[key].wait)
        if longest > 0:
            return longest * _MICROSECOND
        for key, cell in cells.items():
            tats[key] = cell.tat
            changed.add(key)
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
