"""A private, real Dovecot IMAP server on loopback for tests (Debian's dovecot-imapd, 2.3).

It runs in the foreground as a child of the test process (``dovecot -F -c DIR/dovecot.conf``),
with its sockets, state and log inside a temporary directory; no systemd, nothing system-wide.
It listens for plain IMAP and, with a certificate, implicit TLS (IMAPS) on 127.0.0.1. Every
user has the password ``PASSWORD``; ``DovecotServer.user()`` hands each test a fresh mailbox.
"""

from __future__ import annotations

import imaplib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

DOVECOT = "/usr/sbin/dovecot"
PASSWORD = "imap-Pa55-never-logged"
USERS = 40


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DovecotServer:
    """A running private Dovecot: its ports, CA (for IMAPS) and a supply of fresh users."""

    root: Path
    port: int
    tls_port: int
    ca: trustme.CA
    process: subprocess.Popen[bytes]
    _users: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.pem"

    def user(self) -> str:
        """A user name nobody has used yet in this server: an empty mailbox."""
        number = next(self._users)
        if number > USERS:
            raise RuntimeError("tests/dovecot.py: raise USERS, every user is taken")
        return f"user{number}"

    def connect(self, user: str) -> imaplib.IMAP4:
        """A logged-in client for arranging and inspecting a mailbox."""
        conn = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        conn.login(user, PASSWORD)
        return conn

    def append(self, user: str, *messages: bytes, mailbox: str = "INBOX") -> None:
        """Deliver ``messages`` into ``user``'s mailbox (IMAP APPEND, RFC 3501 s6.3.11)."""
        conn = self.connect(user)
        try:
            for raw in messages:
                typ, data = conn.append(mailbox, "", None, raw)
                if typ != "OK":
                    raise RuntimeError(f"APPEND failed: {data!r}")
        finally:
            conn.logout()

    def flags(self, user: str, mailbox: str = "INBOX") -> dict[int, set[str]]:
        """UID -> flags of every message in the mailbox."""
        conn = self.connect(user)
        try:
            conn.select(mailbox)
            typ, data = conn.uid("FETCH", "1:*", "(FLAGS)")
            result: dict[int, set[str]] = {}
            for item in data:
                if not isinstance(item, bytes):
                    continue
                text = item.decode()
                uid = int(text.split("UID ", 1)[1].split()[0].rstrip(")"))
                flags = text.split("FLAGS (", 1)[1].split(")", 1)[0]
                result[uid] = set(flags.split())
            return result
        finally:
            conn.logout()

    def log_tail(self, lines: int = 20) -> str:
        path = self.root / "dovecot.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _mail_owner() -> pwd.struct_passwd:
    # Dovecot will not run mail processes as root; as root, use the package's own user.
    if os.getuid() != 0:
        return pwd.getpwuid(os.getuid())
    return pwd.getpwnam("dovecot")


def _config(root: Path, *, port: int, tls_port: int, owner: pwd.struct_passwd) -> str:
    return f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = {owner.pw_uid}
last_valid_uid = {owner.pw_uid}
auth_mechanisms = plain login
auth_failure_delay = 0
disable_plaintext_auth = no
ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/users
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={root}/home/%u
}}
# No per-IP penalty after a failed login (2, 4, 8 ... s), which tests provoke on purpose:
# without its anvil socket, Dovecot's auth penalty is off.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
"""


def _wait_for(port: int, process: subprocess.Popen[bytes], deadline: float) -> bool:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                if sock.recv(100).startswith(b"* OK"):
                    return True
        except OSError:
            time.sleep(0.05)
    return False


class DovecotUnavailable(RuntimeError):
    """Dovecot is not installed here, or did not start (the message has its log)."""


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    """A private Dovecot for the module; skipped, with its log, where it cannot run."""
    try:
        with run_dovecot() as server:
            yield server
    except DovecotUnavailable as exc:
        pytest.skip(str(exc))


@contextmanager
def run_dovecot() -> Iterator[DovecotServer]:
    """Start a private Dovecot, yield it, stop it and remove its directory."""
    if not Path(DOVECOT).exists():
        raise DovecotUnavailable(f"{DOVECOT} is missing (Debian package dovecot-imapd)")
    owner = _mail_owner()
    # Not under pytest's tmp_path: that is mode 0700, and Dovecot's mail processes run as
    # ``owner`` and must reach the homes.
    root = Path(tempfile.mkdtemp(prefix="dunmail-dovecot-"))
    root.chmod(0o755)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    cert.private_key_pem.write_to_path(str(root / "key.pem"))
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    (root / "users").write_text(
        "".join(f"user{n}:{{PLAIN}}{PASSWORD}\n" for n in range(1, USERS + 1))
    )
    (root / "users").chmod(0o644)
    home = root / "home"
    home.mkdir()
    os.chown(home, owner.pw_uid, owner.pw_gid)
    port, tls_port = _free_port(), _free_port()
    (root / "dovecot.conf").write_text(_config(root, port=port, tls_port=tls_port, owner=owner))
    process = subprocess.Popen(
        [DOVECOT, "-F", "-c", str(root / "dovecot.conf")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    server = DovecotServer(root=root, port=port, tls_port=tls_port, ca=ca, process=process)
    try:
        if not _wait_for(port, process, time.monotonic() + 10):
            output = b""
            if process.poll() is not None and process.stdout is not None:
                output = process.stdout.read()
            raise DovecotUnavailable(
                f"dovecot did not start: {output.decode(errors='replace').strip()}\n"
                f"{server.log_tail()}"
            )
        yield server
    finally:
        if process.poll() is None:
            process.terminate()  # the master stops its children on SIGTERM
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(root, ignore_errors=True)
