"""``dunmail run``: the long-running engine (dunning and delivery ticks, capture server, inbound
SMTP server, IMAP polls, demo)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator

import uvicorn

from bounce.inbound_smtp import build_inbound_addresses, start_inbound
from dunmail.app import Services, build_services
from dunmail.capture import start_capture
from dunmail.config import Config
from dunmail.demo import seed_demo
from dunmail.workers import DeliveryWorkers
from mailer.clock import Clock
from mailer.errors import MailerError
from scheduler.runner import Tick, build_scheduler

log = logging.getLogger(__name__)


async def run_engine(
    config: Config, clock: Clock, *, stop: asyncio.Event | None = None, workers: int = 1
) -> None:
    """Run until ``stop`` is set or SIGINT/SIGTERM arrives, delivering in ``workers``
    processes: this one and ``workers - 1`` delivery workers (dunmail/workers.py)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass
    capture = None
    if config.capture.enabled:
        capture = await start_capture(
            config.capture.host, config.capture.port, config.capture.maildir
        )
        log.info(
            "capture SMTP server on %s:%d filing into %s/",
            config.capture.host,
            config.capture.port,
            config.capture.maildir,
        )
    services = build_services(config, clock)
    inbound: asyncio.Server | None = None
    delivery = DeliveryWorkers(config, workers - 1) if workers > 1 else None
    try:
        inbound = await _start_inbound(config, services)
        if config.demo.seed and services.tenants.ids:
            queued = seed_demo(services, tenant=sorted(services.tenants.ids)[0])
            if queued:
                log.info(
                    "demo: queued %d emails; watch them arrive in %s/new/",
                    queued,
                    config.capture.maildir,
                )
        # Warm PDF workers, and renders slower than [pdf] pass_wait_seconds finish off the
        # pass: one tenant's long document never makes the scheduler skip everyone's passes.
        await services.pdfs.start()
        # Catch up at once rather than after the first interval: everything that fell due
        # while the engine was down is evaluated once, here.
        if delivery is not None:
            delivery.start()  # after the migration: they share the catch-up pass's mail
        await services.dunning.tick()
        ticks = [Tick("tick", config.delivery.poll_seconds, services.dunning.tick)]
        ticks += mailbox_ticks(services)
        if delivery is not None:
            ticks.append(Tick("workers", config.delivery.poll_seconds, _supervisor(delivery)))
        scheduler = build_scheduler(ticks)
        scheduler.start()
        log.info(
            "dunmail running (database %s); Ctrl-C stops it",
            services.engine.url.render_as_string(hide_password=True),
        )
        web = await _start_web(config, services)
        await stop.wait()
        await scheduler.stop()
        if web is not None:
            await web.stop()
    finally:
        if delivery is not None:
            await delivery.stop()
        if inbound is not None:
            inbound.close()
            await inbound.wait_closed()
        await services.close()
        if capture is not None:
            capture.close()
            await capture.wait_closed()


def _supervisor(delivery: DeliveryWorkers) -> Callable[[], Awaitable[None]]:
    async def supervise() -> None:
        delivery.supervise()

    return supervise


async def _start_inbound(config: Config, services: Services) -> asyncio.Server | None:
    settings = config.inbound
    if not settings.enabled:
        return None
    addresses = build_inbound_addresses(config.tenants, config.relay)
    server = await start_inbound(settings, addresses, services.inbound.receive)
    log.info(
        "inbound SMTP server on %s:%d for %s and %d AR inbox address(es)",
        settings.host,
        settings.port,
        ", ".join(sorted(addresses.bounce_domains)) or "no bounce domain",
        len(addresses.inboxes),
    )
    return server


def mailbox_ticks(services: Services) -> list[Tick]:
    """One periodic IMAP poll per tenant with a mailbox: a failure is logged (never with the
    password) and the next interval tries again; one tenant's failure never stops another."""

    def poll(slug: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            try:
                # imaplib blocks: the poll runs in a thread, the event loop keeps serving.
                await asyncio.to_thread(services.inbound.poll_mailbox, slug)
            except MailerError as exc:
                log.warning("imap: polling %s failed, retrying next interval: %s", slug, exc)

        return run

    return [
        Tick(f"imap-{slug}", imap.poll_seconds, poll(slug))
        for slug in services.inbound.imap_tenants()
        if (imap := services.config.tenants[slug].imap) is not None
    ]


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: ``dunmail run`` owns SIGINT and SIGTERM and
    stops the web server with everything else."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _WebServer:
    """uvicorn serving the web app on the engine's event loop (so the app and the engine share
    the outbox and its SMTP connections)."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None]) -> None:
        self._server = server
        self._task = task

    async def stop(self) -> None:
        self._server.should_exit = True
        await self._task


async def _start_web(config: Config, services: Services) -> _WebServer | None:
    settings = config.web
    if not settings.enabled:
        return None
    from dunmail.web.app import create_app

    server = _QuietServer(
        uvicorn.Config(
            create_app(services),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,  # request lines carry link tokens: never logged
            log_config=None,  # uvicorn's records go through our handler (dunmail/logs.py)
            lifespan="off",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if task.done():
        task.result()  # the port was taken or the app failed: say so now
    log.info(
        "web app on http://%s:%d/ (public URL %s)",
        settings.host,
        settings.port,
        settings.public_url,
    )
    return _WebServer(server, task)
