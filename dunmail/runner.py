"""``dunmail run``: the long-running engine (dunning and delivery ticks, capture server, demo)."""

from __future__ import annotations

import asyncio
import logging
import signal

from dunmail.app import build_services
from dunmail.capture import start_capture
from dunmail.config import Config
from dunmail.demo import seed_demo
from mailer.clock import Clock
from scheduler.runner import Tick, build_scheduler

log = logging.getLogger(__name__)


async def run_engine(config: Config, clock: Clock, *, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set or SIGINT/SIGTERM arrives."""
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
    try:
        if config.demo.seed and services.tenant_ids:
            queued = seed_demo(services, tenant=sorted(services.tenant_ids)[0])
            if queued:
                log.info(
                    "demo: queued %d emails; watch them arrive in %s/new/",
                    queued,
                    config.capture.maildir,
                )
        # Catch up at once rather than after the first interval: everything that fell due
        # while the engine was down is evaluated once, here.
        await services.tick()
        scheduler = build_scheduler([Tick("tick", config.delivery.poll_seconds, services.tick)])
        scheduler.start()
        log.info(
            "dunmail running (database %s); Ctrl-C stops it",
            services.engine.url.render_as_string(hide_password=True),
        )
        await stop.wait()
        scheduler.shutdown(wait=False)
    finally:
        await services.close()
        if capture is not None:
            capture.close()
            await capture.wait_closed()
