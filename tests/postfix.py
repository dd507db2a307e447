"""A private Postfix on loopback for end-to-end bounce tests: Debian's postfix, no systemd.

Each instance lives in its own directory (``main.cf``, ``master.cf``, queue, data, Maildirs,
log) and runs as ``postfix -c DIR start``; nothing under ``/etc/postfix`` or ``/var`` is used
except the package's daemons and its ``postfix-files`` (which ``postfix start`` reads to
create the queue's subdirectories with the right owners). It routes three test domains:

- ``customer.test``: a virtual mailbox domain with one mailbox (``billing@``); any other user is
  accepted at RCPT time (``smtpd_reject_unlisted_recipient = no``) and then returned as Postfix
  returns an unknown user, a 5.1.1 DSN.
- ``slow.test``: sent to a loopback port that refuses connections, so the mail is deferred,
  warned about after ``delay_warning`` and returned as expired (``Action: failed``, a 4.4.1
  status) after ``queue_lifetime``.
- ``bounce.test``: the VERP domain; ``recipient_delimiter = +`` delivers every
  ``bounces+<token>@bounce.test`` to the one Maildir ``mail/bounces``.

Postfix's own ``maillog_file`` (postlogd) keeps the log in the instance directory, so a timeout
can show what Postfix did without syslog.

``private_postfix(milter=...)`` also hands every message received over SMTP to a milter
(``smtpd_milters``, such as the verifying OpenDKIM of tests/opendkim.py), with
``milter_default_action = tempfail`` so that a milter that is down shows up as a 4xx.
"""

from __future__ import annotations

import email.parser
import email.policy
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

POSTFIX = Path("/usr/sbin/postfix")
CUSTOMER_DOMAIN = "customer.test"
SLOW_DOMAIN = "slow.test"
BOUNCE_DOMAIN = "bounce.test"
KNOWN_MAILBOX = f"billing@{CUSTOMER_DOMAIN}"
# Unprivileged owner of the Maildirs: virtual(8) refuses uids below virtual_minimum_uid (100).
MAIL_USER = "nobody"

# Debian's master.cf services, without chroot (a chroot needs copies of /etc files) and with
# smtpd on a private loopback port instead of *:25.
_MASTER_CF = """\
{listen} inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _main_cf(
    root: Path,
    *,
    dead_port: int,
    queue_lifetime: str,
    delay_warning: str,
    milter: str | None,
    transports: Mapping[str, str] | None = None,
) -> str:
    uid = pwd.getpwnam(MAIL_USER)
    routes = {SLOW_DOMAIN: f"smtp:[127.0.0.1]:{dead_port}", **(transports or {})}
    transport_map = ", ".join(f"{key}={value}" for key, value in routes.items())
    return f"""\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
syslog_name = dunmail-test-postfix
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C
myhostname = mta.postfix.test
mydomain = postfix.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_reject_unlisted_recipient = no
smtp_dns_support_level = disabled
alias_maps =
alias_database =
local_recipient_maps =
recipient_delimiter = +
virtual_mailbox_domains = {CUSTOMER_DOMAIN} {BOUNCE_DOMAIN}
virtual_mailbox_base = {root}/mail
virtual_mailbox_maps = inline:{{ bounces@{BOUNCE_DOMAIN}=bounces/, {KNOWN_MAILBOX}=customer/ }}
virtual_uid_maps = static:{uid.pw_uid}
virtual_gid_maps = static:{uid.pw_gid}
relay_domains = {SLOW_DOMAIN}
transport_maps = inline:{{ {transport_map} }}
smtp_connect_timeout = 2s
maximal_queue_lifetime = {queue_lifetime}
bounce_queue_lifetime = {queue_lifetime}
delay_warning_time = {delay_warning}
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
""" + (_milter_cf(milter) if milter else "")


def _milter_cf(milter: str) -> str:
    # tempfail rather than the default accept: a milter that is down or crashes must show up
    # as a 4xx to the sender, not as mail that was silently never checked.
    return f"""\
smtpd_milters = {milter}
milter_default_action = tempfail
milter_connect_timeout = 5s
"""


def unavailable_reason() -> str | None:
    """Why a private Postfix cannot run here, or None when it can."""
    if not POSTFIX.exists():
        return f"Postfix is not installed ({POSTFIX} missing; Debian package 'postfix')"
    if os.geteuid() != 0:
        return "a private Postfix instance must be started as root (postfix start needs it)"
    try:
        pwd.getpwnam("postfix")
        pwd.getpwnam(MAIL_USER)
    except KeyError as exc:
        return f"the user Postfix needs does not exist: {exc}"
    return None


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _refusing_port() -> socket.socket:
    """A socket bound to a loopback port without listening: connections to it are refused,
    and no other process can take the port while the socket is open."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


class PostfixError(RuntimeError):
    """The private instance did not start, or did not do what a test waited for."""


@dataclass
class PrivatePostfix:
    """A running instance: its SMTP port on 127.0.0.1 and its directory (``etc/`` is its
    config directory; ``queue/``, ``data/``, ``mail/`` and ``maillog`` sit beside it)."""

    root: Path
    port: int

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def returns(self) -> Path:
        """The Maildir that every ``bounces+...@bounce.test`` lands in."""
        return self.root / "mail" / "bounces"

    @property
    def customer(self) -> Path:
        """The Maildir of the one known customer mailbox, ``billing@customer.test``."""
        return self.root / "mail" / "customer"

    def log(self) -> str:
        """Postfix's own log (``maillog_file``)."""
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        """The end of the log, for assertion messages."""
        return "\n".join(self.log().splitlines()[-lines:]) or "(empty maillog)"

    def queue(self) -> str:
        """``postqueue -p``: what is still queued and why."""
        done = _postfix(self.config_dir, "/usr/sbin/postqueue", "-p", check=False)
        return done.stdout + done.stderr

    def mail_for(self, maildir: Path, prefix: str) -> list[Path]:
        """Files in ``maildir`` whose Delivered-To starts with ``prefix``, oldest first.

        A VERP prefix ``bounces+<uid>-`` picks the returns of one outbound message.
        """
        found: list[tuple[float, str, Path]] = []
        for sub in ("new", "cur"):
            folder = maildir / sub
            if folder.is_dir():
                for path in folder.iterdir():
                    if _delivered_to(path).startswith(prefix.lower()):
                        found.append((path.stat().st_mtime, path.name, path))
        return [path for _, _, path in sorted(found)]

    def wait_for(
        self, maildir: Path, prefix: str, *, count: int = 1, timeout: float = 30.0
    ) -> list[Path]:
        """Poll until ``count`` messages for ``prefix`` are in ``maildir``; fail with the log."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.mail_for(maildir, prefix)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise PostfixError(
                    f"waited {timeout:.0f} s for {count} message(s) to {prefix}... in "
                    f"{maildir}, found {len(found)}\n--- postqueue -p ---\n{self.queue()}"
                    f"--- maillog ---\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """``postfix stop``; ``postfix abort`` if the master is still there 10 s later."""
        _postfix(self.config_dir, str(POSTFIX), "stop", check=False)
        pid_file = self.root / "queue" / "pid" / "master.pid"
        deadline = time.monotonic() + 10
        while _master_alive(pid_file) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _master_alive(pid_file):
            _postfix(self.config_dir, str(POSTFIX), "abort", check=False)


def _delivered_to(path: Path) -> str:
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    with path.open("rb") as handle:
        headers = parser.parse(handle)
    return str(headers.get("Delivered-To", "")).strip().lower()


def _master_alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def _postfix(
    config_dir: Path, *command: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a Postfix command on the private instance (``-c`` and ``MAIL_CONFIG`` both set)."""
    argv = [command[0], "-c", str(config_dir), *command[1:]]
    env = {**os.environ, "MAIL_CONFIG": str(config_dir), "LANG": "C"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    if check and done.returncode != 0:
        log = config_dir.parent / "maillog"
        raise PostfixError(
            f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}\n"
            + (log.read_text(errors="replace")[-3000:] if log.exists() else "")
        )
    return done


@contextmanager
def private_postfix(
    *,
    queue_lifetime: str = "4s",
    delay_warning: str = "1s",
    milter: str | None = None,
    transports: Mapping[str, str] | None = None,
    extra_master_cf: str = "",
) -> Iterator[PrivatePostfix]:
    """Start a private Postfix on 127.0.0.1; stop it and remove its directory afterwards.

    ``milter`` (such as ``inet:127.0.0.1:8891``) is passed every message received over SMTP
    (``smtpd_milters``); when it cannot be reached the message is refused with a 4xx.
    ``transports`` adds routes (``transport_maps`` keys: a domain or an address) beside
    ``slow.test``'s, and ``extra_master_cf`` is appended to master.cf (its services): this is
    how tests/postfix_receiver.py routes mail to a second, receiving instance.

    Raises :class:`PostfixError` when it cannot run here or does not start.
    """
    reason = unavailable_reason()
    if reason:
        raise PostfixError(reason)
    with ExitStack() as stack:
        # Not pytest's tmp_path: its parents are 0700, which the Maildir owner cannot traverse,
        # and Postfix's socket paths (queue/private/...) under it could pass the 108-byte limit.
        root = Path(tempfile.mkdtemp(prefix="dunmail-postfix-"))
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        root.chmod(0o755)
        mail_user = pwd.getpwnam(MAIL_USER)
        postfix_user = pwd.getpwnam("postfix")
        (root / "etc").mkdir(mode=0o755)
        # The queue directory is root's; `postfix start` creates its subdirectories with the
        # owners and modes of the package's postfix-files. The data directory is the mail owner's.
        (root / "queue").mkdir(mode=0o755)
        (root / "data").mkdir(mode=0o700)
        os.chown(root / "data", postfix_user.pw_uid, postfix_user.pw_gid)
        (root / "mail").mkdir(mode=0o755)
        os.chown(root / "mail", mail_user.pw_uid, mail_user.pw_gid)
        server = PrivatePostfix(root=root, port=free_port())
        dead = stack.enter_context(_refusing_port())
        (root / "etc" / "master.cf").write_text(
            _MASTER_CF.format(listen=f"127.0.0.1:{server.port}") + extra_master_cf
        )
        (root / "etc" / "main.cf").write_text(
            _main_cf(
                root,
                dead_port=dead.getsockname()[1],
                queue_lifetime=queue_lifetime,
                delay_warning=delay_warning,
                milter=milter,
                transports=transports,
            )
        )
        _postfix(server.config_dir, str(POSTFIX), "start")
        stack.callback(server.stop)
        _wait_listening(server)
        yield server


def _wait_listening(server: PrivatePostfix, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise PostfixError(
                    f"Postfix did not listen on 127.0.0.1:{server.port}\n{server.log_tail()}"
                ) from None
            time.sleep(0.1)


def postfix_fixture() -> Iterator[PrivatePostfix]:
    """The body of the ``postfix`` fixture: one private instance per test, or a skip that
    says why (not installed, not root, or it would not start: the log's last lines)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with ExitStack() as stack:
        try:
            server = stack.enter_context(private_postfix())
        except PostfixError as exc:
            pytest.skip(f"private Postfix did not start: {exc}")
        yield server
