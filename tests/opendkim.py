"""A private OpenDKIM verifier on loopback for end-to-end DKIM tests: Debian's opendkim, no systemd.

Each instance lives in its own temporary directory (``opendkim.conf``, the key table, the pid
file and what the daemon writes to stdout/stderr) and runs as ``opendkim -f -x CONF`` in the
foreground, so the test owns the process. It only verifies (``Mode v``) and listens on a
loopback TCP port for a Postfix ``smtpd_milters = inet:127.0.0.1:<port>``. ``TestPublicKeys``
answers the ``<selector>._domainkey.<domain>`` TXT look-ups from a file instead of DNS.

OpenDKIM logs only through syslog, which a test run has none of; what it decided is in the
``Authentication-Results`` header it adds (``AlwaysAddARHeader``, even for unsigned mail) and
why a message was refused is in the MTA's log. Start-up errors go to its stderr, kept here.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

OPENDKIM = Path("/usr/sbin/opendkim")
# Debian's package creates this user; the daemon drops root for it (``UserID``) after binding.
RUN_AS = "opendkim"


def unavailable_reason() -> str | None:
    """Why a private OpenDKIM cannot run here, or None when it can."""
    if not OPENDKIM.exists():
        return f"OpenDKIM is not installed ({OPENDKIM} missing; Debian package 'opendkim')"
    if os.geteuid() != 0:
        return f"a private OpenDKIM is started as root and drops to the {RUN_AS!r} user"
    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        return f"the user OpenDKIM runs as does not exist: {RUN_AS!r}"
    return None


class OpenDKIMError(RuntimeError):
    """The private instance did not start or stopped early."""


@dataclass
class PrivateOpenDKIM:
    """A running verifier: its milter port on 127.0.0.1 and its directory."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def milter(self) -> str:
        """The Postfix ``smtpd_milters`` value that reaches this instance."""
        return f"inet:127.0.0.1:{self.port}"

    def output(self) -> str:
        """What the daemon wrote to stdout/stderr (start-up and configuration errors)."""
        path = self.root / "output"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it is still there a quarter of a second later.

        After it has handled a connection, libmilter takes about 3.5 s to act on SIGTERM;
        a verifier holds no state worth a clean shutdown, so the test does not wait for it.
        """
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def build_key_table(public_keys: Mapping[str, str]) -> str:
    """``TestPublicKeys`` lines: ``<selector>._domainkey.<domain> <TXT value>``, one a key."""
    lines = []
    for name, record in public_keys.items():
        if any(c.isspace() for c in name) or "\n" in record:
            raise ValueError(f"not a key table entry: {name!r}")
        lines.append(f"{name} {record}\n")
    return "".join(lines)


def _conf(root: Path, *, port: int, authserv_id: str) -> str:
    # InternalHosts keeps its default (127.0.0.1, where Postfix connects from): that only
    # decides what a signing filter signs; in Mode v every message is verified, whoever sends.
    # No LogWhy: it only adds detail to syslog, and Syslog is off.
    return f"""\
Mode v
Socket inet:{port}@127.0.0.1
TestPublicKeys {root}/keys.txt
AuthservID {authserv_id}
AlwaysAddARHeader yes
PidFile {root}/opendkim.pid
UserID {RUN_AS}:{RUN_AS}
Syslog no
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def private_opendkim(
    public_keys: Mapping[str, str], *, authserv_id: str
) -> Iterator[PrivateOpenDKIM]:
    """Start a verifying OpenDKIM on 127.0.0.1 that knows ``public_keys`` (name -> TXT value).

    Stops it and removes its directory afterwards. Raises :class:`OpenDKIMError` when it
    cannot run here or does not listen.
    """
    reason = unavailable_reason()
    if reason:
        raise OpenDKIMError(reason)
    with ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="dunmail-opendkim-"))
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        # Readable by the user the daemon drops to; only public keys live here.
        root.chmod(0o755)
        (root / "keys.txt").write_text(build_key_table(public_keys))
        port = _free_port()
        (root / "opendkim.conf").write_text(_conf(root, port=port, authserv_id=authserv_id))
        output = stack.enter_context((root / "output").open("wb"))
        process = subprocess.Popen(
            [str(OPENDKIM), "-f", "-x", str(root / "opendkim.conf")],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        server = PrivateOpenDKIM(root=root, port=port, process=process)
        stack.callback(server.stop)
        _wait_listening(server)
        yield server


def _wait_listening(server: PrivateOpenDKIM, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise OpenDKIMError(
                f"opendkim exited {server.process.returncode}: {server.output().strip()}"
            )
        try:
            # A bare connect and close: libmilter drops it without a milter negotiation.
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise OpenDKIMError(
                    f"opendkim did not listen on 127.0.0.1:{server.port}: {server.output()}"
                ) from None
            time.sleep(0.05)
