"""Engine worker processes for the send benchmark: several deliver passes sharing one queue.

Each worker is a ``spawn``ed process that builds its own ``Services`` from the same settings
(database URL, workdir, sink address; the Config is rebuilt with ``make_config``), then waits on
a barrier with the other workers and the parent. Process start-up, imports and ``build_services``
all happen before the barrier, so the parent times only the passes: from the release until the
last worker's ``deliver()`` returns. The workers stay up between runs; each run sends a new job.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path
from types import TracebackType

from bench._sink import Address
from bench._workload import make_config
from dunmail.app import build_services
from mailer.clock import SystemClock

BARRIER_TIMEOUT = 120.0  # seconds for every worker to build its services and reach the start
PASS_TIMEOUT = 600.0  # seconds for a worker's pass to come back before the run is abandoned


@dataclass(frozen=True)
class Job:
    """What a worker needs to rebuild the benchmark's config (a Config is not sent as such)."""

    db_url: str
    workdir: str
    sink: Address
    connections: int


@dataclass(frozen=True)
class WorkerPass:
    """One worker's deliver pass: its PassReport counts, its clock and its own CPU seconds."""

    worker: int
    sent: int
    deferred: int
    failed: int
    throttled: int
    started_at: float  # time.monotonic(): one clock for every process on the machine
    finished_at: float
    cpu_seconds: float  # user + system, all of the worker's threads

    @property
    def seconds(self) -> float:
        return self.finished_at - self.started_at


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _deliver_at_barrier(index: int, job: Job, barrier: Barrier) -> WorkerPass:
    config = make_config(Path(job.workdir), job.db_url, job.sink, connections=job.connections)
    services = build_services(config, SystemClock(), migrate=False)
    try:
        # Blocking the loop here is fine: nothing else runs until the pass starts.
        barrier.wait(BARRIER_TIMEOUT)
        cpu, started = _cpu(), time.monotonic()
        report = await services.sending.deliver()
        finished, cpu = time.monotonic(), _cpu() - cpu
    finally:
        await services.close()  # after the clock stops, as in the one-process measurement
    return WorkerPass(
        index, report.sent, report.deferred, report.failed, report.throttled,
        started, finished, cpu,
    )  # fmt: skip


def serve(index: int, conn: Connection, barrier: Barrier) -> None:
    """A worker's main loop: one deliver pass per job received, until it receives None."""
    conn.send(("ready", None))  # imports are done: the parent may start measuring
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the parent is gone
            return
        if job is None:
            return
        try:
            done = asyncio.run(_deliver_at_barrier(index, job, barrier))
        except BaseException:
            barrier.abort()  # release the parent and the other worker instead of hanging them
            conn.send(("error", traceback.format_exc()))
        else:
            conn.send(("ok", done))


class WorkerPool:
    """``size`` worker processes and a start barrier shared with the parent."""

    def __init__(self, size: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._barrier = ctx.Barrier(size + 1)
        self._conns: list[Connection] = []
        self._processes = []
        for index in range(size):
            parent, child = ctx.Pipe()
            process = ctx.Process(
                target=serve, args=(index, child, self._barrier), name=f"bench-worker-{index}"
            )
            process.start()
            child.close()
            self._conns.append(parent)
            self._processes.append(process)
        for conn in self._conns:  # wait until every worker has imported, so none runs meanwhile
            if not conn.poll(BARRIER_TIMEOUT) or conn.recv()[0] != "ready":
                self.close()
                raise SystemExit("a benchmark worker process did not start")

    @property
    def size(self) -> int:
        return len(self._processes)

    def run(self, job: Job) -> tuple[float, list[WorkerPass]]:
        """Every worker delivers from ``job``'s database at once; returns the wall seconds from
        the release to the last pass's end, and each worker's pass.
        """
        for conn in self._conns:
            conn.send(job)
        try:
            self._barrier.wait(BARRIER_TIMEOUT)
            released = time.monotonic()
        except threading.BrokenBarrierError:  # a worker failed (or hung) before the start
            self._barrier.reset()
            raise SystemExit(f"a worker failed before the start:\n{self._errors()}") from None
        passes: list[WorkerPass] = []
        errors: list[str] = []
        for conn in self._conns:
            if not conn.poll(PASS_TIMEOUT):
                raise SystemExit(f"a worker's pass took over {PASS_TIMEOUT:.0f} s")
            status, value = conn.recv()
            (passes if status == "ok" else errors).append(value)
        if errors:
            raise SystemExit("a worker failed during its pass:\n" + "\n".join(errors))
        # Each process stamps its own start; the earliest of them and the parent's is the start.
        started = min([released, *(p.started_at for p in passes)])
        return max(p.finished_at for p in passes) - started, passes

    def _errors(self) -> str:
        out = []
        for conn in self._conns:
            if conn.poll(BARRIER_TIMEOUT):
                status, value = conn.recv()
                if status == "error":
                    out.append(str(value))
        return "\n".join(out) or "(no traceback came back)"

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(None)
            except OSError:
                pass  # that worker is gone already
        for process in self._processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
