"""The ``dunmail`` command as a user runs it: real processes, a real SMTP server, real kills."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from dunmail.config import load_config
from tests.conftest import DEMO_DOC, NO_PDFS, START, seed_dev_keys

ROOT = Path(__file__).resolve().parents[1]
AT = START.isoformat()


@dataclass
class Sink:
    """The recording SMTP server from tests/smtpd.py, running as its own process."""

    port: int
    record: Path
    process: subprocess.Popen[str]

    def accepted(self) -> list[str]:
        if not self.record.exists():
            return []
        return [line for line in self.record.read_text().splitlines() if line]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=10)


def start_sink(tmp_path: Path, *, data_delay: float = 0.0, name: str = "sink") -> Sink:
    record = tmp_path / f"{name}.ids"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.smtpd",
            "--port",
            "0",
            "--print-port",
            "--record",
            str(record),
            "--data-delay",
            str(data_delay),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return Sink(port, record, process)


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    server = start_sink(tmp_path)
    yield server
    server.stop()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUNMAIL_")}
    env["PYTHONPATH"] = str(ROOT)
    # Let the CLI processes keep compiled modules (in the gitignored __pycache__ folders): the
    # suite starts a few hundred of them, and compiling the project's modules afresh in each
    # one cost about 0.3 s.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra)
    return env


def write_config(
    tmp_path: Path, db_url: str, port: int, *, pdfs: bool = False, dev_keys: bool = True
) -> Path:
    """A config file for the CLI; like ``make_config``, it attaches no PDFs unless ``pdfs``
    and writes its DKIM key (``seed_dev_keys``) unless ``dev_keys`` is False, when the CLI's
    ``env = "dev"`` start-up must make it."""
    path = tmp_path / "config.toml"
    no_pdfs = "".join(f"[tenants.acme.emails.{kind}]\nattach_pdf = false\n" for kind in NO_PDFS)
    path.write_text(f"""
env = "dev"
[database]
url = "{db_url}"
[relay]
host = "127.0.0.1"
port = {port}
domain = "relay.example"
timeout_seconds = 5
[tenants.acme]
name = "Acme Supplies"
email = "ar@acme.example"
[[tenants.acme.dkim]]
domain = "acme.example"
selector = "s1"
key_file = "{tmp_path / "keys" / "s1.pem"}"
{"" if pdfs else no_pdfs}""")
    if dev_keys:
        seed_dev_keys(load_config(path))
    return path


def dunmail(
    config: Path | None, *args: str, isolated: bool = False, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``dunmail ARGS --config CONFIG`` as a user would, in the config's folder.

    By default the real CLI parses and runs the command in this process (in a thread of its
    own, as it runs its own event loop): a fresh interpreter per call cost about a second of
    start-up and imports, over a hundred times in the suite. ``isolated=True`` runs it as its
    own process, for what only a process shows (environment read at start-up, being killed).
    """
    command = [*args]
    if config is not None:
        command += ["--config", str(config)]
    cwd = config.parent if config else ROOT
    if isolated:
        return subprocess.run(
            [sys.executable, "-m", "dunmail.cli", *command],
            cwd=cwd,
            capture_output=True,
            text=True,
            env=_env(**env),
            timeout=120,
        )
    return in_process(command, cwd=cwd, env=env)


def in_process(
    argv: list[str], *, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """The CLI's ``app`` on ``argv`` through Typer's runner, with what a process would have
    had: the caller's environment without ``DUNMAIL_*`` plus ``env``, ``cwd`` as the working
    folder, and the root logger's handlers as they were (the CLI installs its own)."""
    from typer.testing import CliRunner

    from dunmail.cli import app

    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("DUNMAIL_")}
    runner = CliRunner(env={**unset, **env})
    handlers = list(logging.root.handlers)
    level = logging.root.level
    here = Path.cwd()
    box: list[Any] = []

    def invoke() -> None:
        box.append(runner.invoke(app, argv, catch_exceptions=True))

    os.chdir(cwd)
    try:
        # A thread of its own: the command may call asyncio.run, which a running loop forbids.
        worker = threading.Thread(target=invoke)
        worker.start()
        worker.join()
    finally:
        os.chdir(here)
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)
    [result] = box
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return subprocess.CompletedProcess(argv, result.exit_code, result.stdout, stderr)


@pytest.fixture
def configured(tmp_path: Path, db_url: str, sink: Sink) -> Path:
    config = write_config(tmp_path, db_url, sink.port)
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(DEMO_DOC))
    result = dunmail(config, "import", str(doc), "--at", AT)
    assert result.returncode == 0, result.stderr
    return config


def test_import_send_outbox_round_trip(configured: Path, sink: Sink) -> None:
    sent = dunmail(configured, "send", "--invoice", "INV-1042", "--at", AT)
    assert sent.returncode == 0, sent.stderr
    assert "new_invoice for INV-1042: sent" in sent.stdout
    again = dunmail(configured, "send", "--invoice", "INV-1042", "--at", AT)
    assert again.returncode == 0 and "sent" in again.stdout
    assert len(set(sink.accepted())) == 1  # a manual send is idempotent (a copy per recipient)
    rows = json.loads(dunmail(configured, "outbox", "--json").stdout)
    assert [(r["kind"], r["status"], r["attempts"]) for r in rows] == [("new_invoice", "sent", 1)]
    assert sink.accepted() == [f"<{rows[0]['uid']}@acme.example>"] * 2  # ap@ and billing@


def test_import_reports_bad_records_and_applies_the_rest(configured: Path, tmp_path: Path) -> None:
    doc = tmp_path / "bad.json"
    doc.write_text(
        json.dumps(
            {
                "invoices": [
                    {**DEMO_DOC["invoices"][0], "id": "i-2", "number": "INV-2", "currency": "XXQ"},
                    {**DEMO_DOC["invoices"][0], "id": "i-3", "number": "INV-3"},
                ]
            }
        )
    )
    result = dunmail(configured, "import", str(doc), "--at", AT)
    assert result.returncode == 1
    assert "invoices[0].currency" in result.stderr
    sent = dunmail(configured, "send", "--invoice", "INV-3", "--at", AT)
    assert sent.returncode == 0, sent.stderr


def test_clear_errors(configured: Path, tmp_path: Path) -> None:
    unknown = dunmail(configured, "send", "--invoice", "INV-404", "--at", AT)
    assert unknown.returncode == 2 and "INV-404" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    typo = tmp_path / "typo.toml"
    typo.write_text(configured.read_text().replace("[relay]", "[relay]\nprot = 25"))
    bad = dunmail(typo, "outbox")
    assert bad.returncode == 2 and "relay.prot" in bad.stderr and "Traceback" not in bad.stderr
    notjson = tmp_path / "x.json"
    notjson.write_text("{nope")
    result = dunmail(configured, "import", str(notjson))
    assert result.returncode == 2 and "not JSON" in result.stderr


def test_unreachable_server_defers_with_a_clear_exit(configured: Path) -> None:
    result = dunmail(
        configured, "send", "--invoice", "INV-1042", "--at", AT, DUNMAIL_RELAY__PORT="1"
    )  # the environment overrides the file
    assert result.returncode == 5, result.stdout + result.stderr
    assert "deferred" in result.stdout and "port 1" in result.stdout


def _row(db_url: str) -> dict[str, object]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            row = (
                conn.execute(sa.text("select status, attempts, claimed_by, uid from message"))
                .mappings()
                .one()
            )
            return dict(row)
    finally:
        engine.dispose()


@pytest.mark.slow
def test_worker_killed_mid_send_loses_nothing_and_sends_once(tmp_path: Path, db_url: str) -> None:
    """SIGKILL a real ``dunmail deliver`` while the server holds the DATA reply."""
    stuck = start_sink(tmp_path, data_delay=60, name="stuck")
    config = write_config(tmp_path, db_url, stuck.port)
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(DEMO_DOC))
    assert dunmail(config, "import", str(doc), "--at", AT).returncode == 0
    enqueue = [
        sys.executable,
        "-c",
        (
            "from dunmail.app import build_services; from dunmail.config import load_config;"
            "from mailer.clock import FixedClock; from datetime import datetime;"
            f"s = build_services(load_config(__import__('pathlib').Path({str(config)!r})),"
            f" FixedClock(datetime.fromisoformat({AT!r})));"
            "s.sending.enqueue_invoice_email("
            "'INV-1042', kind='new_invoice', tenant=None, manual=False)"
        ),
    ]
    subprocess.run(enqueue, check=True, cwd=tmp_path, env=_env(), timeout=60)
    worker = subprocess.Popen(
        [sys.executable, "-m", "dunmail.cli", "deliver", "--config", str(config), "--at", AT],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while _row(db_url)["claimed_by"] is None:
            assert time.monotonic() < deadline, "the worker never claimed the message"
            time.sleep(0.05)
        time.sleep(0.5)  # let it reach DATA, where the server now sits on its reply
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
        stuck.stop()
    row = _row(db_url)
    assert (row["status"], row["attempts"]) == ("queued", 0)  # not lost, not counted as sent
    assert stuck.accepted() == []

    fresh = start_sink(tmp_path, name="fresh")
    try:
        # Within the dead worker's lease nobody takes the message...
        early = (START + timedelta(seconds=10)).isoformat()
        assert (
            dunmail(
                config, "deliver", "--at", early, DUNMAIL_RELAY__PORT=str(fresh.port)
            ).returncode
            == 0
        )
        assert fresh.accepted() == []
        # ...after it, the next worker sends it exactly once, with its original Message-ID.
        late = (START + timedelta(seconds=301)).isoformat()
        result = dunmail(config, "deliver", "--at", late, DUNMAIL_RELAY__PORT=str(fresh.port))
        assert result.returncode == 0, result.stderr
        assert "sent 1" in result.stdout
        again = dunmail(config, "deliver", "--at", late, DUNMAIL_RELAY__PORT=str(fresh.port))
        assert "attempted 0" in again.stdout
    finally:
        fresh.stop()
    row = _row(db_url)
    assert row["status"] == "sent"
    # once to each of its two recipients, in its own envelope
    assert fresh.accepted() == [f"<{row['uid']}@acme.example>"] * 2


def test_init_prepares_database_tenants_and_dev_keys(tmp_path: Path, db_url: str) -> None:
    config = write_config(tmp_path, db_url, 2525, dev_keys=False)
    result = dunmail(config, "init")
    assert result.returncode == 0, result.stderr
    assert "tenants: acme" in result.stdout
    assert (tmp_path / "keys" / "s1.pem").exists()  # env = "dev" makes a missing DKIM key
    assert oct((tmp_path / "keys" / "s1.pem").stat().st_mode & 0o777) == "0o600"
    again = dunmail(config, "init")  # idempotent
    assert again.returncode == 0 and "tenants: acme" in again.stdout
    bad_time = dunmail(config, "deliver", "--at", "next tuesday")
    assert bad_time.returncode == 2 and "ISO 8601" in bad_time.stderr
