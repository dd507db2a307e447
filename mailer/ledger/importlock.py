"""SERVICE: how a long import shares the database: one import per tenant at a time (a leased row
in ``import_lock``), its work committed in short batches, and a pause between batches on SQLite.

Why a row and not PostgreSQL's advisory locks or one long ``BEGIN IMMEDIATE`` on SQLite: an
import commits in batches (so logins, link opens, API writes and inbound mail keep getting the
database while 40,000 customers go in), so no transaction or connection spans it. A row outlives
transactions, works the same on both backends, and the engine's passes read it
(:func:`tenants_importing`) to leave a half-imported ledger alone until the import is done.

The lease runs on the wall clock, whatever ``--at`` says: it tells whether a process is alive,
not what time the business acts at. Every batch renews it. A holder that died without releasing
(SIGKILL, power loss) is replaced at once when it ran on this host and its process is gone,
otherwise when its lease runs out; the batches it committed stay, and re-running the same file
completes the import (records are upserted by external id, events keyed by occasion).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, col, select

from mailer.clock import Clock, SystemClock
from mailer.db import session_scope
from mailer.errors import BusyError
from mailer.ledger.models import ImportLock

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # how often a waiting import looks at the lock again


@dataclass(frozen=True)
class ImportLease:
    """Proof that this process holds ``tenant_id``'s import lock (``token`` is in the row)."""

    tenant_id: int
    token: str


class ImportLocks:
    """The import lock of every tenant in one database, held by lease."""

    def __init__(
        self,
        engine: Engine,
        *,
        lease: timedelta = timedelta(minutes=5),
        clock: Clock | None = None,
        holder: str | None = None,
    ) -> None:
        self._engine = engine
        self._lease = lease
        self._clock = clock or SystemClock()
        self._holder = holder or f"{socket.gethostname()} pid {os.getpid()}"

    @contextmanager
    def held(self, tenant_id: int, *, wait: float = 0.0) -> Iterator[ImportLease]:
        """Hold the tenant's lock for the block; released however the block ends."""
        lease = self.acquire(tenant_id, wait=wait)
        try:
            yield lease
        finally:
            self.release(lease)

    def acquire(self, tenant_id: int, *, wait: float = 0.0) -> ImportLease:
        """Take the lock, waiting up to ``wait`` seconds for the import holding it to end.

        Raises :class:`BusyError` naming the holder when it is still held after that.
        """
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            try:
                lease, busy = self._try(tenant_id)
            except IntegrityError:  # PostgreSQL: another import inserted the row just now
                continue
            if lease is not None:
                return lease
            left = deadline - time.monotonic()
            if left <= 0:
                raise BusyError(
                    f"another import for this tenant is running ({busy}); "
                    "try again when it has finished, or wait for it with --wait SECONDS"
                )
            time.sleep(min(POLL_SECONDS, left))

    def _try(self, tenant_id: int) -> tuple[ImportLease | None, str]:
        with session_scope(self._engine) as session:
            now = self._clock.now()
            row = session.get(ImportLock, tenant_id, with_for_update=True)
            if row is not None and row.expires_at > now and _alive(row.holder):
                return None, f"{row.holder}, since {row.started_at:%Y-%m-%d %H:%M:%S} UTC"
            lease = ImportLease(tenant_id, secrets.token_hex(16))
            if row is None:
                row = ImportLock(tenant_id=tenant_id, token=lease.token, holder=self._holder)
            else:
                gone = "its lease ran out" if row.expires_at <= now else "its process is gone"
                log.warning(
                    "tenant %s: taking over the import lock of %s (%s); the batches it "
                    "committed stay, and re-running its file completes it",
                    tenant_id,
                    row.holder,
                    gone,
                )
            row.token, row.holder = lease.token, self._holder[:300]
            row.started_at, row.expires_at = now, now + self._lease
            session.add(row)
            session.flush()
        return lease, ""

    def renew(self, session: Session, lease: ImportLease) -> None:
        """Extend the lease in the caller's transaction (each batch's commit carries it).

        Raises :class:`BusyError` when the lock is no longer ours: our lease ran out and another
        import took over, so this one must stop before it writes over the other's work.
        """
        renewed = session.execute(
            sa.update(ImportLock)
            .where(
                col(ImportLock.tenant_id) == lease.tenant_id, col(ImportLock.token) == lease.token
            )
            .values(expires_at=self._clock.now() + self._lease)
        )
        if getattr(renewed, "rowcount", 0) != 1:  # an UPDATE's CursorResult
            raise BusyError(
                "this import lost its lock (its lease ran out and another import took over); "
                "the batches committed so far stay: run the file again"
            )

    def release(self, lease: ImportLease) -> None:
        """Give the lock up. A failure is logged, not raised: the lease runs out by itself."""
        try:
            with session_scope(self._engine) as session:
                session.execute(
                    sa.delete(ImportLock).where(
                        col(ImportLock.tenant_id) == lease.tenant_id,
                        col(ImportLock.token) == lease.token,
                    )
                )
        except SQLAlchemyError as exc:
            log.warning("tenant %s: could not release the import lock: %s", lease.tenant_id, exc)


def tenants_importing(session: Session, *, clock: Clock | None = None) -> set[int]:
    """The tenants with an import running now (a live lease, and not a process of this host
    that is gone): their ledger may be half applied, so the passes that decide emails from it
    wait until it is done."""
    now = (clock or SystemClock()).now()
    query = select(ImportLock.tenant_id, ImportLock.holder).where(col(ImportLock.expires_at) > now)
    return {tenant_id for tenant_id, holder in session.exec(query).all() if _alive(holder)}


def _alive(holder: str) -> bool:
    """False only when ``holder`` ran on this host and its process no longer exists."""
    host, _, pid = holder.rpartition(" pid ")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class BatchCommits:
    """Ends an import's transaction every ``records`` records or ``seconds`` seconds, with the
    lock's renewal in each commit, then pauses ``pause_ratio`` times the batch's duration.

    The pause is for SQLite, where a writer holds the one write lock for its whole transaction
    and a waiting writer (a login, a link open, inbound mail) retries on a back-off of up to
    100 ms (SQLite's busy handler): without a gap, the importer takes the lock again at once and
    the others keep missing it. PostgreSQL has row locks and needs no pause (ratio 0).
    """

    def __init__(
        self,
        session: Session,
        *,
        renew: Callable[[], None],
        records: int,
        seconds: float,
        pause_ratio: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._session = session
        self._renew = renew
        self._records = max(records, 1)
        self._seconds = seconds
        self._pause_ratio = pause_ratio
        self._sleep = sleep
        self._count = 0
        self._began = time.monotonic()
        self.batches = 0

    def step(self) -> None:
        """A record is done and no SAVEPOINT is open: commit if the batch is full."""
        self._count += 1
        if self._count >= self._records or time.monotonic() - self._began >= self._seconds:
            self.commit()

    def commit(self) -> None:
        """Commit now (what follows for a while writes nothing, or the import is done)."""
        if not self._session.in_transaction():
            self._began = time.monotonic()
            return
        if self._count:
            self._renew()
        self._session.commit()
        self.batches += 1 if self._count else 0
        elapsed = time.monotonic() - self._began
        if self._count and self._pause_ratio:
            self._sleep(min(elapsed * self._pause_ratio, 1.0))
        self._count = 0
        self._began = time.monotonic()
