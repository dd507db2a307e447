"""A discarding SMTP server in its own process for the benchmarks: Postfix's smtp-sink, or aiosmtpd.

Run alone, this module is the aiosmtpd fallback: ``python bench/_sink.py PORT`` accepts mail on
127.0.0.1:PORT, throws it away and prints smtp-sink's ``mesg=N`` counter after each message.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

POSTFIX_DIR = Path("/usr/sbin")  # Debian's postfix package puts its test tools here
_COUNTER = re.compile(rb"mesg=(\d+)")


class Address(NamedTuple):
    """Where a sink listens: what a worker process needs to reach it (a Sink holds a Popen)."""

    host: str
    port: int


class Sink:
    """A sink process on a free loopback port that reports how many messages it took."""

    def __init__(self, name: str, process: subprocess.Popen[bytes], output: Path, port: int):
        self.name = name
        self.host = "127.0.0.1"
        self.port = port
        self._process = process
        self._output = output

    @classmethod
    def start(cls, wanted: str, workdir: Path) -> Sink:
        """``wanted``: "smtp-sink", "aiosmtpd", or "auto" (smtp-sink when it is installed)."""
        port = _free_port()
        output = workdir / "sink.out"
        path = postfix_tool("smtp-sink")
        if wanted == "smtp-sink" and path is None:
            raise SystemExit("smtp-sink is not installed (Debian: apt-get install postfix)")
        if path is not None and wanted in ("auto", "smtp-sink"):
            # -c: running counters on stdout ("sess=1 quit=0 mesg=3"); as root it must be told
            # which user to switch to once the socket is open.
            user = ["-u", "nobody"] if os.geteuid() == 0 else []
            args = [path, "-c", *user, f"127.0.0.1:{port}", "256"]
            name = "Postfix smtp-sink (C)"
        else:
            args = [sys.executable, str(Path(__file__).resolve()), str(port)]
            name = "aiosmtpd sink (Python)"
        with output.open("wb") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        sink = cls(name, process, output, port)
        sink._wait_until_listening()
        return sink

    @property
    def address(self) -> Address:
        return Address(self.host, self.port)

    def received(self) -> int:
        """Messages taken so far: the last ``mesg=N`` counter the sink printed."""
        counts = _COUNTER.findall(self._output.read_bytes())
        return int(counts[-1]) if counts else 0

    def wait_for(self, count: int, *, timeout: float = 3.0) -> int:
        """Wait until the counter reaches ``count`` (it is written around the 250)."""
        deadline = time.monotonic() + timeout
        while (seen := self.received()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return seen

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                text = self._output.read_text(errors="replace").strip()
                raise SystemExit(f"{self.name} exited at start: {text}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as probe:
                    if probe.recv(64).startswith(b"220"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise SystemExit(f"{self.name} did not start listening on port {self.port}")


def postfix_tool(name: str) -> str | None:
    """Path of Postfix's ``smtp-sink`` or ``smtp-source``, which are often not on a user's PATH."""
    return shutil.which(name) or shutil.which(name, path=str(POSTFIX_DIR))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def serve(port: int) -> None:
    """The fallback: aiosmtpd on loopback, counting like smtp-sink -c."""
    from aiosmtpd.smtp import SMTP, Envelope, Session

    class Counter:
        taken = 0

        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            self.taken += 1
            sys.stdout.write(f"mesg={self.taken}\n")
            sys.stdout.flush()
            return "250 2.0.0 Ok"

    handler = Counter()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="bench-sink", loop=loop), "127.0.0.1", port, backlog=256
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
