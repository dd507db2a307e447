"""Stopping the scheduler: a pass in flight finishes, and a clean stop logs no traceback.

The engine's stop once raced a tick: APScheduler had submitted the job as a task that had not
run its first step when the stop looked for running jobs, so the loop's shutdown cancelled it
mid-pass and APScheduler logged the CancelledError's traceback (tests/test_attacks_http.py saw
it in `dunmail run`'s output).
"""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from scheduler.runner import Tick, _guarded, build_scheduler


class Pass:
    """A tick that waits on a thread, as the dunning pass does."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.finished = threading.Event()
        self.returned = False  # the pass's await came back (it was not cancelled halfway)

    async def run(self) -> None:
        def work() -> None:
            self.started.set()
            threading.Event().wait(0.2)
            self.finished.set()

        await asyncio.to_thread(work)
        self.returned = True


def test_stop_waits_for_a_job_submitted_but_not_yet_started() -> None:
    work = Pass()

    async def main() -> None:
        schedule = build_scheduler([Tick("tick", 3600, work.run)])
        # What the executor does when a run falls due: a task whose first step has not run.
        asyncio.get_running_loop().create_task(
            _guarded(Tick("tick", 3600, work.run), schedule.running)()
        )
        schedule.start()
        await schedule.stop()

    asyncio.run(main())
    assert work.returned  # waited for, not cancelled halfway by the loop's shutdown


def test_a_job_cancelled_by_the_loop_closing_logs_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    work = Pass()
    running: set[asyncio.Task[object]] = set()

    async def main() -> BaseException | None:
        task = asyncio.get_running_loop().create_task(
            _guarded(Tick("tick", 1, work.run), running)()
        )
        await asyncio.to_thread(work.started.wait, 5)
        task.cancel()
        done = await asyncio.gather(task, return_exceptions=True)
        return done[0] if isinstance(done[0], BaseException) else None

    with caplog.at_level(logging.INFO, logger="scheduler.runner"):
        raised = asyncio.run(main())
    assert raised is None  # the job ends quietly: APScheduler has nothing to log
    assert not running
    assert [r.getMessage() for r in caplog.records] == ["job tick stopped mid-pass"]
    assert all(r.exc_info is None for r in caplog.records)
