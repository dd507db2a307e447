"""``dunmail run`` on its embedded defaults: the newcomer's first command, end to end."""

from __future__ import annotations

import email
import mailbox
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from email import policy
from pathlib import Path

from tests.test_cli import ROOT, _env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> str:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_demo_engine_delivers_into_the_capture_maildir_and_stops_cleanly(tmp_path: Path) -> None:
    port = str(_free_port())
    web = _free_port()
    engine = subprocess.Popen(
        [sys.executable, "-m", "dunmail.cli", "run"],
        cwd=tmp_path,  # no config.toml here: the embedded defaults apply
        env=_env(
            PYTHONPATH=str(ROOT),
            DUNMAIL_CAPTURE__PORT=port,
            DUNMAIL_RELAY__PORT=port,
            DUNMAIL_WEB__PORT=str(web),
            DUNMAIL_INBOUND__PORT=str(_free_port()),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    maildir = tmp_path / "var" / "maildir"
    try:
        deadline = time.monotonic() + 60
        # Five emails; a copy per recipient (each its own envelope), so count Message-IDs.
        while not (maildir / "new").exists() or len(_message_ids(maildir)) < 5:
            assert engine.poll() is None, engine.communicate()[0]
            assert time.monotonic() < deadline, "the demo emails never arrived"
            time.sleep(0.2)
        # The web app serves the demo's start page: outbox, captured mail, inbox.
        start = _get(f"http://127.0.0.1:{web}/")
        assert "Captured mail" in start and "Overdue: invoice INV-1040" in start, start[:2000]
        assert _get(f"http://127.0.0.1:{web}/healthz") == '{"status":"ok"}'
        engine.send_signal(signal.SIGTERM)
        output, _ = engine.communicate(timeout=30)
    finally:
        if engine.poll() is None:
            engine.kill()
    assert engine.returncode == 0, output
    assert "Traceback" not in output
    messages = list(
        mailbox.Maildir(
            maildir,
            create=False,
            factory=lambda f: email.message_from_binary_file(f, policy=policy.default),
        )
    )
    subjects = sorted(str(m["Subject"]) for m in messages)
    assert len({str(m["Message-ID"]) for m in messages}) == 5
    assert any(s.startswith("Overdue: invoice INV-1040") for s in subjects), subjects
    assert all(m["DKIM-Signature"] for m in messages)
    assert (tmp_path / "var" / "dunmail.db").exists()


def _message_ids(maildir: Path) -> set[bytes]:
    """The distinct Message-IDs captured so far (files being written may lack one yet)."""
    ids = set()
    for path in (maildir / "new").iterdir():
        for line in path.read_bytes().split(b"\n\n", 1)[0].splitlines():
            if line.lower().startswith(b"message-id:"):
                ids.add(line.split(b":", 1)[1].strip())
    return ids
