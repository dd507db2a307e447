"""APScheduler 3.x wiring: thin interval jobs that call idempotent services; no business rules.

Every due time lives in the database, so the scheduler only ticks. Jobs have fixed ids with
``replace_existing=True``, never overlap (``max_instances=1``) and collapse missed runs
(``coalesce=True``): a tick after downtime simply finds everything that became due meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tick:
    """One periodic job: ``run`` is awaited every ``every_seconds``."""

    id: str
    every_seconds: float
    run: Callable[[], Awaitable[object]]


def _guarded(tick: Tick, running: set[asyncio.Task[object]]) -> Callable[[], Awaitable[None]]:
    async def job() -> None:
        task = asyncio.current_task()
        if task is not None:
            running.add(task)
        try:
            await tick.run()
        except Exception:  # job boundary: log and let the next tick try again
            log.exception("job %s failed", tick.id)
        except asyncio.CancelledError:
            # Only a stop cancels a job (the loop closing under it); the pass's work is
            # committed or not by itself, and a clean stop prints no traceback.
            log.info("job %s stopped mid-pass", tick.id)
        finally:
            if task is not None:
                running.discard(task)

    return job


@dataclass
class Schedule:
    """The scheduler and the jobs it is running now, so that stopping can let them finish."""

    scheduler: AsyncIOScheduler
    running: set[asyncio.Task[object]] = field(default_factory=set)

    def start(self) -> None:
        self.scheduler.start()

    async def stop(self) -> None:
        """No new runs; the pass in flight completes (each pass commits its own work, but a
        pass cancelled in the middle of a thread it waits on would leave that thread running
        against a closing engine, and logs a traceback for a clean stop)."""
        self.scheduler.shutdown(wait=False)
        # A job the scheduler submitted just before the shutdown is a task that has not run its
        # first step yet, so it is not in ``running``: let it start, then wait for them all.
        await asyncio.sleep(0)
        while self.running:
            await asyncio.gather(*self.running, return_exceptions=True)
            await asyncio.sleep(0)


def build_scheduler(ticks: Sequence[Tick]) -> Schedule:
    """A started-on-demand scheduler with one interval job per tick."""
    schedule = Schedule(AsyncIOScheduler(timezone="UTC"))
    for tick in ticks:
        schedule.scheduler.add_job(
            _guarded(tick, schedule.running),
            "interval",
            seconds=tick.every_seconds,
            id=tick.id,
            replace_existing=True,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
    return schedule
