"""``dunmail run`` as an operator meets it: ``--version``, one line for a port in use, and a
Ctrl-C that stops every process without a traceback. Real processes, real sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from tests.test_cli import ROOT, _env

DUNMAIL = [sys.executable, "-m", "dunmail.cli"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ports(**taken: int) -> dict[str, str]:
    """Environment for ``dunmail run`` on its embedded defaults with free ports, except those
    given (WEB, CAPTURE or INBOUND); the relay is the capture server, as in the defaults."""
    ports = {name: _free_port() for name in ("WEB", "CAPTURE", "INBOUND")}
    ports.update(taken)
    env = {f"DUNMAIL_{name}__PORT": str(port) for name, port in ports.items()}
    env["DUNMAIL_RELAY__PORT"] = env["DUNMAIL_CAPTURE__PORT"]
    env["DUNMAIL_PDF__WORKERS"] = "1"  # a pool all the same, at the least cost
    return env


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_is_the_installed_package_version(flag: str) -> None:
    done = subprocess.run(
        [*DUNMAIL, flag], env=_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"dunmail {metadata.version('dunmail')}\n"


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("name", "what", "section"),
    [
        ("WEB", "web", "web"),
        ("CAPTURE", "capture", "capture"),
        ("INBOUND", "inbound SMTP", "inbound"),
    ],
)
def test_a_port_in_use_is_one_line_and_exit_1(
    tmp_path: Path, taken_port: int, name: str, what: str, section: str
) -> None:
    done = subprocess.run(
        [*DUNMAIL, "run", "--workers", "2"],
        cwd=tmp_path,  # the embedded defaults: web, capture and inbound SMTP all listen
        env=_env(**_ports(**{name: taken_port})),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        f"dunmail: port {taken_port} on 127.0.0.1 is in use ({what}); "
        f"set [{section}] port or stop the other process"
    )
    assert "Traceback" not in done.stderr


def _wait_healthy(engine: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 90
    while True:
        assert engine.poll() is None, engine.communicate()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, "the engine never answered /healthz"
        time.sleep(0.2)


@pytest.mark.parametrize("to_group", [True, False], ids=["terminal-group", "engine-only"])
def test_ctrl_c_stops_every_process_quietly(tmp_path: Path, to_group: bool) -> None:
    """SIGINT as a terminal sends it (to the whole process group: engine, delivery worker, PDF
    workers) or to the engine alone: a clean stop (exit 0), no KeyboardInterrupt from any
    process, no child left behind."""
    ports = _ports()
    engine = subprocess.Popen(
        [*DUNMAIL, "run", "--workers", "2"],
        cwd=tmp_path,
        env=_env(PYTHONPATH=str(ROOT), **ports),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, as a shell's foreground job
    )
    try:
        _wait_healthy(engine, int(ports["DUNMAIL_WEB__PORT"]))
        children = _children(engine.pid)
        assert len(children) >= 3, children  # a delivery worker and PDF workers at least
        if to_group:
            os.killpg(engine.pid, signal.SIGINT)
        else:
            engine.send_signal(signal.SIGINT)
        out, err = engine.communicate(timeout=60)
    finally:
        if engine.poll() is None:
            os.killpg(engine.pid, signal.SIGKILL)
    assert engine.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    time.sleep(0.5)
    assert not [pid for pid in children if _alive(pid)], "a child outlived the engine"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
