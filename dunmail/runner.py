"""``dunmail run``: the long-running engine (dunning and delivery ticks, capture server, inbound
SMTP server, IMAP polls, demo)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from multiprocessing import resource_tracker

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


class PortTaken(OSError):
    """A port the engine must listen on is in use (or may not be bound): ``dunmail run``
    says which, and where to change it, on one line."""

    def __init__(self, what: str, section: str, host: str, port: int, reason: OSError) -> None:
        self.what = what
        if reason.errno == errno.EADDRINUSE:
            why = "is in use"
            fix = f"set [{section}] port or stop the other process"
        else:
            why = f"cannot be opened ({reason.strerror or reason})"
            fix = f"set [{section}] host and port"
        super().__init__(reason.errno, f"port {port} on {host} {why} ({what}); {fix}")


@contextlib.contextmanager
def _listening(what: str, section: str, host: str, port: int) -> Iterator[None]:
    """Turn a failed bind of ``host:port`` into :class:`PortTaken`."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise PortTaken(what, section, host, port, exc) from None
        raise


def run_until_interrupted(config: Config, clock: Clock, *, workers: int) -> None:
    """``dunmail run``: the engine until Ctrl-C or SIGTERM, either a clean stop (exit 0).

    Ctrl-C reaches every process of the terminal's group, and a spawned Python process turns
    it into a KeyboardInterrupt and a traceback wherever it is (a PDF worker waiting for a job,
    a delivery worker still importing). So SIGINT is blocked here, before any thread or process
    exists: every thread and every child inherits the mask (fork and exec keep it), and one
    thread of this process takes the signal with ``sigwait`` and stops the engine, which stops
    its children itself (dunmail/workers.py, ``PDFRenderer.close``)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "pthread_sigmask"
    ):
        asyncio.run(run_engine(config, clock, workers=workers))
        return
    # multiprocessing starts its resource tracker at the first spawn, and unblocks SIGINT in
    # the calling thread when it has: started now, it is running before the mask is set.
    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def wait_for_ctrl_c() -> None:
            signal.sigwait({signal.SIGINT})
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=wait_for_ctrl_c, name="ctrl-c", daemon=True).start()
        await run_engine(config, clock, stop=stop, workers=workers)

    asyncio.run(main())


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
    # The web and capture ports before the database is opened, inbound SMTP's before any
    # pass: a port in use stops the engine before it has done anything.
    web_socket = _bind_web(config)
    if config.capture.enabled:
        settings = config.capture
        try:
            with _listening("capture", "capture", settings.host, settings.port):
                capture = await start_capture(settings.host, settings.port, settings.maildir)
        except BaseException:
            if web_socket is not None:
                web_socket.close()
            raise
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
        with _listening("inbound SMTP", "inbound", config.inbound.host, config.inbound.port):
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
        web = await _start_web(config, services, web_socket)
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
        if web_socket is not None:
            web_socket.close()
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


def _bind_web(config: Config) -> socket.socket | None:
    """The web app's listening socket, bound before anything else starts (uvicorn serves it)."""
    settings = config.web
    if not settings.enabled:
        return None
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
    with _listening("web", "web", settings.host, settings.port):
        try:
            sock.bind((settings.host, settings.port))
        except OSError:
            sock.close()
            raise
    sock.set_inheritable(True)
    return sock


async def _start_web(
    config: Config, services: Services, sock: socket.socket | None
) -> _WebServer | None:
    settings = config.web
    if not settings.enabled or sock is None:
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
    task = asyncio.create_task(server.serve(sockets=[sock]))
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
