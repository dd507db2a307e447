"""Three engine processes on one PostgreSQL database share one domain's limit and its back-off.

Each worker is a ``spawn``ed process that builds its own ``Services`` from the same settings and
runs the engine's delivery pass over and over into one loopback sink, as ``dunmail run`` would.
The sink stamps every RCPT and every accepted message on the machine's monotonic clock.

The domain's bucket is emptied before the workers start (its row written as a minute of mail
just sent would leave it), so what the sink receives shows the rate, not the first minute's
burst: GCRA then lets exactly one message through per interval, whoever asks, so the count over
a window is deterministic and only a worker too slow to ask could lower it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from dunmail.app import Services, build_services
from dunmail.config import Config
from mailer.clock import FixedClock, SystemClock
from mailer.db import make_engine
from mailer.outbound.models import ThrottleState
from mailer.outbound.ratelimit import gcra_interval, to_micros
from mailer.outbound.requests import EnqueueRequest
from tests.conftest import make_config
from tests.smtpd import RecordingServer
from tests.test_outbox import _context

WORKERS = 3
DOMAIN = "busy.test"
BARRIER_TIMEOUT = 120.0  # spawning and building services on a loaded 2-CPU machine

postgresql_only = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def _config(tmp_path: Path, db_url: str, host: str, port: int, rate: int, backoff: str) -> Config:
    return make_config(
        tmp_path,
        db_url,
        relay={"host": host, "port": port},
        tenants={"acme": {"name": "Acme", "email": "ar@acme.example", "rate_per_minute": 10**6}},
        delivery={
            "batch_size": 10,
            "domain_rate_per_minute": rate,
            "domain_backoff": backoff,
            "first_retry_after": "PT1H",  # the 421'd message is not retried within the test
        },
    )


def _worker(
    args: tuple[str, str, str, int, int, str, float], ready: Barrier, go: Barrier, out: Any
) -> None:
    """One engine process: build services, wait for the start, deliver for ``seconds``."""
    tmp, db_url, host, port, rate, backoff, seconds = args
    config = _config(Path(tmp), db_url, host, port, rate, backoff)

    async def run() -> int:
        services = build_services(config, SystemClock(), migrate=False)
        sent = 0
        try:
            ready.wait(BARRIER_TIMEOUT)
            go.wait(BARRIER_TIMEOUT)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                sent += (await services.sending.deliver()).sent
                await asyncio.sleep(0.01)
        finally:
            await services.close()
        return sent

    out.put(asyncio.run(run()))


@dataclass
class Stamps:
    """What the sink saw, on the machine's monotonic clock."""

    rcpt: list[float] = field(default_factory=list)
    emptied_at: float = 0.0  # when the domain's bucket was emptied: the rate's start
    accepted: list[float] = field(default_factory=list)


def _stamp(smtpd: RecordingServer, first_rcpt: str | None) -> Stamps:
    """Stamp RCPTs and accepted messages; answer ``first_rcpt`` to the very first RCPT."""
    stamps = Stamps()
    handler = smtpd.handler
    rcpt: Callable[..., Awaitable[str]] = handler.handle_RCPT
    data: Callable[..., Awaitable[str]] = handler.handle_DATA

    async def handle_rcpt(*args: Any) -> str:
        stamps.rcpt.append(time.monotonic())
        if first_rcpt is not None and len(stamps.rcpt) == 1:
            return first_rcpt
        return await rcpt(*args)

    async def handle_data(*args: Any) -> str:
        reply = await data(*args)
        if reply.startswith("250"):
            stamps.accepted.append(time.monotonic())
        return reply

    # Instance attributes: aiosmtpd reads the hooks off the handler for each new connection.
    setattr(handler, "handle_RCPT", handle_rcpt)  # noqa: B010
    setattr(handler, "handle_DATA", handle_data)  # noqa: B010
    return stamps


def _enqueue(services: Services, count: int) -> None:
    tenant_id = services.tenants.id(None)
    with Session(services.engine) as session:
        for n in range(count):
            services.sending.queue.enqueue(
                session,
                EnqueueRequest(
                    tenant_id=tenant_id,
                    kind="invoice_reminder",
                    recipients=[f"ap{n}@{DOMAIN}"],
                    context=_context(),
                    document=f"invoice:{n}",
                    version=1,
                ),
                now=services.clock.now(),
            )
        session.commit()


def _empty_bucket(db_url: str, rate: int) -> None:
    """Write the domain's row as if a minute's burst had just gone: the next take may go now,
    the one after a whole interval later."""
    interval = gcra_interval(rate)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(ThrottleState.__table__),  # type: ignore[attr-defined]
                {
                    "key": f"domain:{DOMAIN}",
                    "scope": "domain",
                    "tat": to_micros(SystemClock().now()) + (rate - 1) * interval,
                },
            )
    finally:
        engine.dispose()


async def _run_cluster(
    tmp_path: Path,
    db_url: str,
    smtpd: RecordingServer,
    stamps: Stamps,
    *,
    rate: int,
    backoff: str,
    messages: int,
    seconds: float,
) -> list[int]:
    """Start the workers, empty the bucket once they are all built, let them deliver."""
    config = _config(tmp_path, db_url, smtpd.host, smtpd.port, rate, backoff)
    # Built once here first: it migrates and writes the DKIM key the workers then only read.
    services = build_services(config, FixedClock(SystemClock().now()))
    try:
        _enqueue(services, messages)
    finally:
        await services.close()
    context = multiprocessing.get_context("spawn")
    ready, go = context.Barrier(WORKERS + 1), context.Barrier(WORKERS + 1)
    out = context.Queue()
    args = (str(tmp_path), db_url, smtpd.host, smtpd.port, rate, backoff, seconds)
    workers = [
        context.Process(target=_worker, args=(args, ready, go, out), daemon=True)
        for _ in range(WORKERS)
    ]
    for process in workers:
        process.start()
    try:
        await asyncio.to_thread(ready.wait, BARRIER_TIMEOUT)
        stamps.emptied_at = time.monotonic()
        _empty_bucket(db_url, rate)
        await asyncio.to_thread(go.wait, BARRIER_TIMEOUT)
        sent = []
        for _ in workers:  # the sink keeps serving in this loop while the workers deliver
            try:
                sent.append(await asyncio.to_thread(out.get, True, seconds + 60))
            except Empty:
                pytest.fail("a worker never reported")
        for process in workers:
            await asyncio.to_thread(process.join, 30)
            assert process.exitcode == 0
    finally:
        for process in workers:
            if process.is_alive():
                process.kill()
    return sent


@postgresql_only
async def test_three_processes_together_keep_one_domain_limit(
    tmp_path: Path, db_url: str, smtpd: RecordingServer
) -> None:
    rate, window = 600, 8.0  # ten a second: eighty in the window, each process could send all
    stamps = _stamp(smtpd, first_rcpt=None)
    sent = await _run_cluster(
        tmp_path, db_url, smtpd, stamps, rate=rate, backoff="PT5M", messages=100, seconds=window
    )
    assert stamps.accepted, "nothing reached the sink"
    # From the moment the bucket was emptied: one take then, one per interval after, whichever
    # process asks. The first message's latency (a connection, a template) is caught up later.
    in_window = sum(1 for t in stamps.accepted if t - stamps.emptied_at < window)
    limit = rate * window / 60
    assert in_window <= 1 + limit, (in_window, limit, sent)  # GCRA's bound, never more
    assert abs(in_window - limit) <= 0.05 * limit, (in_window, limit, sent)
    assert sum(sent) == len(stamps.accepted)
    assert sum(1 for n in sent if n) >= 2, f"one process did all the work: {sent}"


@postgresql_only
@pytest.mark.parametrize(
    "reply,key",
    [
        # The server closes the channel: the relay is paused, for every domain sent through it.
        ("421 4.7.0 Too much mail, slow down", "endpoint:"),
        # A policy refusal of the recipient: that domain is paused.
        ("451 4.7.1 Rate limited, try later", f"domain:{DOMAIN}"),
    ],
)
async def test_a_back_off_seen_by_one_process_pauses_all_three(
    tmp_path: Path, db_url: str, smtpd: RecordingServer, reply: str, key: str
) -> None:
    rate, pause = 60, 3.0  # a take a second: without the shared pause, the next in one second
    stamps = _stamp(smtpd, first_rcpt=reply)
    await _run_cluster(
        tmp_path,
        db_url,
        smtpd,
        stamps,
        rate=rate,
        backoff=f"PT{pause:g}S",
        messages=20,
        seconds=6.0,
    )
    assert len(stamps.rcpt) >= 2, "no mail went after the pause"
    refused, after = stamps.rcpt[0], stamps.rcpt[1]
    # The pause runs from the reply, which the sink sent just after stamping the RCPT.
    assert after - refused >= pause - 0.05, [round(t - refused, 3) for t in stamps.rcpt[:4]]
    assert stamps.accepted and stamps.accepted[0] >= after
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(ThrottleState.key, ThrottleState.reason).where(  # type: ignore[call-overload]
                    ThrottleState.reason.is_not(None)  # type: ignore[union-attr]
                )
            ).all()
    finally:
        engine.dispose()
    assert [(k.startswith(key), reply[4:] in r) for k, r in rows] == [(True, True)], rows
