"""Delivery worker processes for ``dunmail run --workers N``: N processes drain one queue.

One Python process delivers at most one CPU's worth of mail (rendering, composing and signing
hold the GIL), so ``dunmail run`` starts ``N - 1`` delivery workers beside itself; the engine
process delivers too, so N processes deliver in all. Each worker is a ``spawn``ed process with
its own :class:`~dunmail.app.Services` built from the same config: its own database pool, SMTP
connections and (lazily, one process, only when a PDF is missing from the store) PDF renderer.
The engine process keeps everything else: the dunning, statement and event passes, webhooks,
the web app, inbound SMTP, IMAP polls and its PDF pool, warmed at start.

Nothing is shared in memory: the queue's lease (``SKIP LOCKED`` on PostgreSQL, ``BEGIN
IMMEDIATE`` on SQLite) gives each message to one process, and rate limits and back-offs are
kept in the database, so the limits hold for all of them. ``/metrics`` reads the database, so
it reports every worker's mail. A worker that dies (killed, out of memory) is started again at
the engine's next tick; what it had claimed is claimed again once its lease runs out, as after
any crash.

Ctrl-C reaches every process of the terminal's group: workers ignore SIGINT and stop when the
engine tells them to, after the pass they are in, so no traceback is printed and no attempt is
cut between the SMTP server's answer and its record.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
import threading
from multiprocessing.context import SpawnProcess

from dunmail.config import Config
from dunmail.logs import setup_logging
from mailer.clock import SystemClock

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # prctl(2)
STOP_SECONDS = 30.0  # how long a worker may take to finish its pass once asked to stop
_CONTEXT = multiprocessing.get_context("spawn")  # no fork: no inherited sockets or pools


def default_workers() -> int:
    """One delivery process per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def worker_config(config: Config) -> Config:
    """The config a delivery worker builds its services from: the same, minus what only the
    engine process runs (web, inbound SMTP, capture, demo seeding) and with a PDF pool of one
    process, started only if a PDF it needs is not in the store yet."""
    return config.model_copy(
        update={
            "web": config.web.model_copy(update={"enabled": False}),
            "inbound": config.inbound.model_copy(update={"enabled": False}),
            "capture": config.capture.model_copy(update={"enabled": False}),
            "demo": config.demo.model_copy(update={"seed": False}),
            "pdf": config.pdf.model_copy(update={"workers": 1}),
        }
    )


class DeliveryWorkers:
    """The engine's delivery worker processes: started together, restarted when one dies,
    stopped together."""

    def __init__(self, config: Config, count: int) -> None:
        self._config = worker_config(config)
        self._count = count
        self._stopping = False
        self._processes: dict[int, SpawnProcess] = {}

    @property
    def pids(self) -> list[int]:
        return sorted(p.pid for p in self._processes.values() if p.pid is not None)

    def start(self) -> None:
        for slot in range(self._count):
            self._spawn(slot)

    def supervise(self) -> None:
        """Start again every worker that has exited while the engine runs."""
        if self._stopping:
            return
        for slot, process in list(self._processes.items()):
            if not process.is_alive():
                log.warning(
                    "delivery worker %d (pid %s) exited with %s; starting it again",
                    slot + 1,
                    process.pid,
                    process.exitcode,
                )
                process.close()
                self._spawn(slot)

    async def stop(self) -> None:
        """Ask every worker to stop after its pass (SIGTERM); kill one that is still running
        after ``STOP_SECONDS`` (its claims return to the queue when their lease runs out).

        A signal, not a shared event: a worker killed while it held a shared lock would leave
        the engine waiting on that lock for ever."""
        self._stopping = True
        for process in self._processes.values():
            if process.is_alive():
                process.terminate()
        for slot, process in self._processes.items():
            await asyncio.to_thread(process.join, STOP_SECONDS)
            if process.is_alive():
                log.warning("delivery worker %d did not stop in time; killing it", slot + 1)
                process.kill()
                await asyncio.to_thread(process.join)
        self._processes.clear()

    def _spawn(self, slot: int) -> None:
        process = _CONTEXT.Process(
            target=_worker_main,
            args=(self._config, slot + 1),
            name=f"dunmail-delivery-{slot + 1}",
            daemon=True,  # never outlives the engine, even if the engine is killed
        )
        process.start()
        self._processes[slot] = process
        log.info("delivery worker %d started (pid %s)", slot + 1, process.pid)


def _worker_main(config: Config, number: int) -> None:
    """A worker process's entry point: SIGTERM (from the engine, or from Linux when the engine
    dies) stops it after its pass."""
    leaving = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine owns Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: leaving.set())
    _stop_with_the_engine()
    setup_logging(config.log.level, fmt=config.log.format)
    asyncio.run(_deliver_until_stopped(config, number, leaving))


def _stop_with_the_engine() -> None:
    """Ask Linux for SIGTERM when the engine dies (killed, out of memory): a worker finishes
    its pass and exits rather than deliver on alone. Elsewhere the loop's parent check does."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


async def _deliver_until_stopped(config: Config, number: int, leaving: threading.Event) -> None:
    from dunmail.app import build_services  # after spawn: the parent's imports are not ours

    engine = multiprocessing.parent_process()
    services = build_services(config, SystemClock(), migrate=False)
    try:
        await services.pdfs.start(warm=False)  # a pass waits at most pass_wait_seconds for a PDF
        log.info("delivery worker %d ready (pid %d)", number, os.getpid())
        while not leaving.is_set() and (engine is None or engine.is_alive()):
            report = await services.sending.deliver()
            if report.attempted:
                log.info(
                    "delivery worker %d: sent %d, deferred %d, failed %d, throttled %d",
                    number,
                    report.sent,
                    report.deferred,
                    report.failed,
                    report.throttled,
                )
            else:
                # Nothing due: look again after the engine's poll interval (or sooner, to stop).
                await asyncio.to_thread(leaving.wait, config.delivery.poll_seconds)
    finally:
        await services.close()
    log.info("delivery worker %d stopped", number)
