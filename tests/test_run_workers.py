"""``dunmail run --workers N``: N processes drain one queue, every email once; a killed worker
is started again; Ctrl-C stops them all without a traceback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, select

from dunmail.app import Services, build_services
from dunmail.config import load_config
from mailer.clock import SystemClock
from mailer.outbound.models import Message
from mailer.outbound.requests import EnqueueRequest
from tests.test_cli import Sink, _env, start_sink, write_config
from tests.test_outbox import _context
from tests.test_run import _free_port

MESSAGES = 400


@pytest.fixture
def slow_sink(tmp_path: Path) -> Iterator[Sink]:
    """A sink that takes 0.05 s per message: one process alone needs seconds for the queue,
    so every delivery process gets a share."""
    server = start_sink(tmp_path, data_delay=0.05)
    yield server
    server.stop()


def _wait_for(what: str, done: Callable[[], bool], log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"{what}; the engine said:\n{log.read_text()[-4000:]}"
        time.sleep(0.2)


def _enqueue(services: Services, count: int) -> None:
    tenant_id = services.tenants.id(None)
    with Session(services.engine) as session:
        for n in range(count):
            services.sending.queue.enqueue(
                session,
                EnqueueRequest(
                    tenant_id=tenant_id,
                    kind="invoice_reminder",
                    recipients=[f"ap{n}@x{n % 7}.test"],
                    context=_context(),
                    document=f"invoice:{n}",
                    version=1,
                ),
                now=services.clock.now(),
            )
        session.commit()


def test_three_delivery_processes_share_the_queue_and_stop_together(
    tmp_path: Path, db_url: str, slow_sink: Sink
) -> None:
    config = write_config(tmp_path, db_url, slow_sink.port)
    log = tmp_path / "engine.log"
    with log.open("w") as out:
        engine = subprocess.Popen(
            [sys.executable, "-m", "dunmail.cli", "run", "--workers", "3", "--config", str(config)],
            cwd=tmp_path,
            env=_env(
                DUNMAIL_WEB__PORT=str(_free_port()),
                DUNMAIL_INBOUND__ENABLED="false",
                DUNMAIL_DELIVERY__BATCH_SIZE="20",
                DUNMAIL_DELIVERY__POLL_SECONDS="0.5",
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
    try:

        def ready() -> dict[int, int]:
            found = re.findall(r"delivery worker (\d+) ready \(pid (\d+)\)", log.read_text())
            return {int(n): int(pid) for n, pid in found}

        _wait_for("the two delivery workers never got ready", lambda: len(ready()) == 2, log)
        services = build_services(load_config(config), SystemClock(), migrate=False)
        try:
            _enqueue(services, MESSAGES)
            _wait_for(
                "the queue was never drained",
                lambda: len(slow_sink.accepted()) >= MESSAGES,
                log,
                seconds=120,
            )

            def statuses() -> Counter[str]:
                with Session(services.engine) as session:
                    return Counter(m.status.value for m in session.exec(select(Message)))

            # The sink has every message before the last batch's results are committed.
            _wait_for(
                "the results were never all recorded",
                lambda: statuses()["sent"] >= MESSAGES,
                log,
                seconds=30,
            )
            recorded = statuses()
        finally:
            services.engine.dispose()
        accepted = Counter(slow_sink.accepted())
        assert len(accepted) == MESSAGES and max(accepted.values()) == 1  # each once
        assert recorded == {"sent": MESSAGES}
        sent_by = Counter[int]()
        for number, sent in re.findall(r"delivery worker (\d+): sent (\d+)", log.read_text()):
            sent_by[int(number)] += int(sent)
        assert len([n for n in sent_by if sent_by[n]]) == 2, sent_by  # both workers delivered
        assert sum(sent_by.values()) < MESSAGES  # and so did the engine process itself

        # A worker killed outright is started again (its claims wait out their lease).
        first = ready()[1]
        os.kill(first, signal.SIGKILL)
        _wait_for(
            "the killed worker was not started again",
            lambda: len(re.findall(r"delivery worker 1 ready", log.read_text())) == 2,
            log,
        )
        workers = list(ready().values())

        # Ctrl-C reaches the whole group: everything stops, no traceback.
        os.killpg(engine.pid, signal.SIGINT)
        try:
            engine.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"Ctrl-C did not stop the engine:\n{log.read_text()[-4000:]}")
    finally:
        if engine.poll() is None:
            os.killpg(engine.pid, signal.SIGKILL)
            engine.wait()
    output = log.read_text()
    assert engine.returncode == 0, output[-4000:]
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-4000:]
    assert output.count("stopped") >= 2  # each worker said it stopped after its pass
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_worker_does_not_outlive_a_killed_engine(tmp_path: Path) -> None:
    """Killed with SIGKILL (no chance to stop its workers), the engine takes its delivery
    workers with it: none keeps delivering alone. (Processes, not the database: SQLite.)"""
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'dunmail.db'}", _free_port())
    log = tmp_path / "engine.log"
    with log.open("w") as out:
        engine = subprocess.Popen(
            [sys.executable, "-m", "dunmail.cli", "run", "--workers", "2", "--config", str(config)],
            cwd=tmp_path,
            env=_env(DUNMAIL_WEB__ENABLED="false", DUNMAIL_INBOUND__ENABLED="false"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(
            "the delivery worker never got ready",
            lambda: "delivery worker 1 ready" in log.read_text(),
            log,
        )
        pid = int(re.findall(r"delivery worker 1 ready \(pid (\d+)\)", log.read_text())[0])
        engine.kill()
        engine.wait()
        _wait_for("the worker outlived the engine", lambda: not _alive(pid), log, seconds=30)
    finally:
        if engine.poll() is None:
            engine.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing
