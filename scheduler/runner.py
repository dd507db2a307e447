"""APScheduler 3.x wiring: thin interval jobs that call idempotent services; no business rules.

Every due time lives in the database, so the scheduler only ticks. Jobs have fixed ids with
``replace_existing=True``, never overlap (``max_instances=1``) and collapse missed runs
(``coalesce=True``): a tick after downtime simply finds everything that became due meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tick:
    """One periodic job: ``run`` is awaited every ``every_seconds``."""

    id: str
    every_seconds: float
    run: Callable[[], Awaitable[object]]


def _guarded(tick: Tick) -> Callable[[], Awaitable[None]]:
    async def job() -> None:
        try:
            await tick.run()
        except Exception:  # job boundary: log and let the next tick try again
            log.exception("job %s failed", tick.id)

    return job


def build_scheduler(ticks: Sequence[Tick]) -> AsyncIOScheduler:
    """A started-on-demand scheduler with one interval job per tick."""
    scheduler = AsyncIOScheduler(timezone="UTC")
    for tick in ticks:
        scheduler.add_job(
            _guarded(tick),
            "interval",
            seconds=tick.every_seconds,
            id=tick.id,
            replace_existing=True,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
    return scheduler
