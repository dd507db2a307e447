"""A second private Postfix acting as the receiving server, so the first one gets real refusals.

tests/postfix.py runs the *sending* Postfix. This module starts a *receiving* one beside it, in
its own directory on its own loopback port, configured with the restrictions real servers use:

- ``receiver.test`` is a virtual mailbox domain; an address not in its table is refused at RCPT
  (``smtpd_reject_unlisted_recipient``, "550 5.1.1 ... User unknown in virtual mailbox table").
- ``full@receiver.test`` is an mbox file already close to the ``virtual_mailbox_limit`` of the
  ``virtual`` service that delivers it: accepted, then returned by the receiver itself when the
  append fails with EFBIG (5.2.2). (A Maildir cannot be made full this way: virtual(8) panics
  when the file size limit is below the message's size rather than bounce it.)
- ``quota@receiver.test`` is refused at RCPT with "552 5.2.2 Mailbox full" (an access map).
- ``message_size_limit`` is 20 kB: a larger message is refused (5.3.4).
- a client at 127.0.0.2 is refused by ``check_client_access``; one at 127.0.0.3 is listed in
  the local DNSBL ``dnsbl.test`` and refused by ``reject_rbl_client``; the sender
  ``bounces+rejected-sender@bounce.test`` by ``check_sender_access``; a From: header with
  more than one address by ``header_checks``; any other domain is not relayed (the sender is not in
  ``mynetworks``).
- returns it generates go back to the sending instance (``bounce.test``).

Name lookups: :class:`DNSResponder` is a tiny authoritative DNS server on a loopback address,
port 53. It answers the DNSBL's records and says NXDOMAIN to every other name, so a domain
sent to through it is one that does not exist (Postfix's "Host or domain name not found").
Postfix reads ``/etc/resolv.conf``; the services that use this responder run chrooted in their
queue directory (as Debian runs them by default), whose ``etc/resolv.conf`` names it, so the
machine's own resolver is never touched.

:class:`SilentListener` accepts TCP connections (the kernel completes the handshake) and never
says anything, so a client times out waiting for the greeting.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.postfix import (
    _MASTER_CF,
    BOUNCE_DOMAIN,
    MAIL_USER,
    POSTFIX,
    PostfixError,
    PrivatePostfix,
    _postfix,
    _wait_listening,
    free_port,
    unavailable_reason,
)

RECEIVER_DOMAIN = "receiver.test"
RELAY_DENIED_DOMAIN = "elsewhere.test"  # not the receiver's: "Relay access denied"
MISSING_DOMAIN = "nowhere.test"  # NXDOMAIN from the DNS responder
SILENT_DOMAIN = "silent.test"  # routed to a listener that never greets
DNSBL_ZONE = "dnsbl.test"
BLOCKED_CLIENT = "127.0.0.2"  # refused by check_client_access
LISTED_CLIENT = "127.0.0.3"  # listed in the DNSBL
REJECTED_SENDER = "bounces+rejected-sender@bounce.test"
RECEIVER_SIZE_LIMIT = 20_000
TINY_MAILBOX_LIMIT = 4_096  # the virtual mailbox limit of full@receiver.test's service
DNSBL_REASON = f"Listed in the test DNSBL; see https://{DNSBL_ZONE}/lookup?ip={LISTED_CLIENT}"

# Mailboxes that exist on the receiver (each case that must reach a policy check needs one).
MAILBOXES = ("billing", "full", "blocked", "listed", "toobig", "nosize", "twofrom", "sender")

_TYPE_A, _TYPE_TXT = 1, 16


class DNSResponder:
    """An authoritative DNS server on ``address``:53 (UDP) for tests.

    ``records`` maps ``(name, type)`` (lowercase, no trailing dot; type 1 = A, 16 = TXT) to
    answers; every other question gets NXDOMAIN (RFC 1035 s4.1.1 RCODE 3) with the AA bit.
    """

    def __init__(self, records: Mapping[tuple[str, int], list[str]]) -> None:
        self.records = {(name.lower(), kind): list(v) for (name, kind), v in records.items()}
        self.sock = _bind_port_53()
        self.address: str = self.sock.getsockname()[0]
        self.questions: list[tuple[str, int]] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                packet, peer = self.sock.recvfrom(4096)
            except OSError:
                return  # closed
            reply = self._answer(packet)
            if reply is not None:
                self.sock.sendto(reply, peer)

    def _answer(self, packet: bytes) -> bytes | None:
        if len(packet) < 12:
            return None
        ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
        if qdcount != 1:
            return None
        name, end = _read_name(packet, 12)
        qtype, _qclass = struct.unpack("!HH", packet[end : end + 4])
        question = packet[12 : end + 4]
        self.questions.append((name, qtype))
        answers = self.records.get((name, qtype), [])
        known = any(key[0] == name for key in self.records)
        rcode = 0 if known else 3  # NODATA for a known name asked the wrong type, else NXDOMAIN
        rd = flags & 0x0100
        header = struct.pack("!HHHHHH", ident, 0x8400 | rd | rcode, 1, len(answers), 0, 0)
        body = b"".join(_record(qtype, value) for value in answers)
        return header + question + body

    def close(self) -> None:
        self.sock.close()
        self._thread.join(timeout=2)


def _bind_port_53() -> socket.socket:
    """UDP port 53 on a random loopback address (several generators may run at once)."""
    for _ in range(50):
        address = f"127.{random.randint(64, 250)}.{random.randint(1, 250)}.{random.randint(1, 250)}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((address, 53))
        except OSError:
            sock.close()
            continue
        return sock
    raise PostfixError("no loopback address had UDP port 53 free for the test DNS responder")


def _read_name(packet: bytes, offset: int) -> tuple[str, int]:
    labels: list[str] = []
    while packet[offset]:
        length = packet[offset]
        labels.append(packet[offset + 1 : offset + 1 + length].decode("ascii").lower())
        offset += 1 + length
    return ".".join(labels), offset + 1


def _record(qtype: int, value: str) -> bytes:
    # The name is a pointer to the question's (offset 12, RFC 1035 s4.1.4); TTL 60 s.
    if qtype == _TYPE_A:
        rdata = socket.inet_aton(value)
    else:
        text = value.encode()
        rdata = bytes([len(text)]) + text
    return struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(rdata)) + rdata


class SilentListener:
    """A loopback TCP port that completes the handshake and never greets (a hung server)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)  # never accepted: connections wait in the backlog, unanswered
        self.port: int = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def dnsbl_records() -> dict[tuple[str, int], list[str]]:
    """The DNSBL entry for :data:`LISTED_CLIENT` (RFC 5782 s2.1: reversed octets, A + TXT)."""
    reversed_ip = ".".join(reversed(LISTED_CLIENT.split(".")))
    name = f"{reversed_ip}.{DNSBL_ZONE}"
    return {(name, _TYPE_A): ["127.0.0.2"], (name, _TYPE_TXT): [DNSBL_REASON]}


def write_resolv_conf(queue_dir: Path, nameserver: str) -> None:
    """The resolver configuration seen by the instance's chrooted services."""
    etc = queue_dir / "etc"
    etc.mkdir(mode=0o755, exist_ok=True)
    # One try, short timeout: a lookup that is not answered must not hold a test for minutes.
    (etc / "resolv.conf").write_text(f"nameserver {nameserver}\noptions timeout:1 attempts:1\n")


def sender_routes(receiver_port: int, silent_port: int) -> dict[str, str]:
    """``transport_maps`` entries for the sending instance (tests/postfix.py ``transports``)."""
    to_receiver = f"[127.0.0.1]:{receiver_port}"
    return {
        RECEIVER_DOMAIN: f"smtp:{to_receiver}",
        RELAY_DENIED_DOMAIN: f"smtp:{to_receiver}",
        f"blocked@{RECEIVER_DOMAIN}": f"fromtwo:{to_receiver}",
        f"listed@{RECEIVER_DOMAIN}": f"fromthree:{to_receiver}",
        f"nosize@{RECEIVER_DOMAIN}": f"heloonly:{to_receiver}",
        MISSING_DOMAIN: "dnssmtp:",  # no next hop: the MX lookup of the domain itself
        SILENT_DOMAIN: f"greeting:[127.0.0.1]:{silent_port}",
    }


# The sender's extra smtp(8) clients: each is one way real clients differ.
SENDER_MASTER_CF = f"""\
dnssmtp   unix  -       -       y       -       -       smtp
    -o smtp_dns_support_level=enabled -o smtp_host_lookup=dns
greeting  unix  -       -       n       -       -       smtp
    -o smtp_helo_timeout=2s
fromtwo   unix  -       -       n       -       -       smtp
    -o smtp_bind_address={BLOCKED_CLIENT}
fromthree unix  -       -       n       -       -       smtp
    -o smtp_bind_address={LISTED_CLIENT}
heloonly  unix  -       -       n       -       -       smtp
    -o smtp_never_send_ehlo=yes
"""


def _receiver_master_cf(port: int) -> str:
    # smtpd chrooted (Debian's default) so that its DNSBL lookups read the queue's resolv.conf.
    smtpd = "{listen} inet  n       -       n       -       -       smtpd"
    if smtpd not in _MASTER_CF:
        raise PostfixError("tests/postfix.py's master.cf no longer has the expected smtpd line")
    chrooted = smtpd.replace("n       -       n", "n       -       y")
    master = _MASTER_CF.replace(smtpd, chrooted)
    return master.format(listen=f"127.0.0.1:{port}") + (
        "tinybox   unix  -       n       n       -       -       virtual\n"
        f"    -o virtual_mailbox_limit={TINY_MAILBOX_LIMIT}"
        f" -o message_size_limit={TINY_MAILBOX_LIMIT}\n"
    )


def _receiver_main_cf(root: Path, *, sender_port: int) -> str:
    uid = pwd.getpwnam(MAIL_USER)
    returns = f"{BOUNCE_DOMAIN}=smtp:[127.0.0.1]:{sender_port}"  # to the sending instance
    # Maildirs (trailing slash) but for full@, an mbox file (see fill_mailbox).
    mailboxes = ", ".join(
        f"{name}@{RECEIVER_DOMAIN}={name}{'' if name == 'full' else '/'}" for name in MAILBOXES
    )
    return f"""\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
syslog_name = dunmail-test-receiver
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C
myhostname = mx.{RECEIVER_DOMAIN}
mydomain = {RECEIVER_DOMAIN}
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# Nobody is trusted: the sending instance is an outside client like any other.
mynetworks = 127.255.255.254/32
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions =
    check_client_access inline:{{ {BLOCKED_CLIENT}=REJECT }}
    reject_rbl_client {DNSBL_ZONE}
    check_sender_access inline:{{ {REJECTED_SENDER}=REJECT }}
    check_recipient_access inline:{{ {{ quota@{RECEIVER_DOMAIN} = 552 5.2.2 Mailbox full }} }}
header_checks = regexp:{root}/etc/header_checks
message_size_limit = {RECEIVER_SIZE_LIMIT}
alias_maps =
alias_database =
local_recipient_maps =
virtual_mailbox_domains = {RECEIVER_DOMAIN}
virtual_mailbox_base = {root}/mail
virtual_mailbox_maps = inline:{{ {mailboxes}, quota@{RECEIVER_DOMAIN}=billing/ }}
virtual_uid_maps = static:{uid.pw_uid}
virtual_gid_maps = static:{uid.pw_gid}
virtual_mailbox_limit = {RECEIVER_SIZE_LIMIT * 10}
transport_maps = inline:{{ full@{RECEIVER_DOMAIN}=tinybox:, {returns} }}
smtp_dns_support_level = disabled
smtp_connect_timeout = 2s
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"""


def _fill_mailbox(path: Path, owner: pwd.struct_passwd) -> None:
    """An mbox with earlier mail up to 512 bytes short of :data:`TINY_MAILBOX_LIMIT`."""
    head = (
        "From billing@acme.example Mon Mar  2 09:00:00 2026\n"
        "From: billing@acme.example\nSubject: earlier mail\n\n"
    )
    line = "an earlier message that keeps this mailbox nearly full\n"
    body = line * ((TINY_MAILBOX_LIMIT - 512 - len(head)) // len(line))
    path.write_text(head + body + "\n")
    os.chown(path, owner.pw_uid, owner.pw_gid)
    path.chmod(0o600)


# RFC 5322 s3.6.2 allows several From: addresses (with a Sender:); many sites refuse them.
HEADER_CHECKS = (
    "/^From:.*@.*,.*@/ REJECT More than one address in the From: header is not accepted "
    "here (local policy)\n"
)


@contextmanager
def receiving_postfix(
    *, sender_port: int, nameserver: str, port: int | None = None
) -> Iterator[PrivatePostfix]:
    """Start the receiving instance on ``port`` (default: a free one); its returns go to
    ``sender_port``, its DNSBL lookups to ``nameserver`` (a :class:`DNSResponder`).
    Stopped and removed afterwards."""
    reason = unavailable_reason()
    if reason:
        raise PostfixError(reason)
    with ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="dunmail-receiver-"))
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        root.chmod(0o755)
        mail_user = pwd.getpwnam(MAIL_USER)
        postfix_user = pwd.getpwnam("postfix")
        (root / "etc").mkdir(mode=0o755)
        (root / "queue").mkdir(mode=0o755)
        write_resolv_conf(root / "queue", nameserver)
        (root / "data").mkdir(mode=0o700)
        os.chown(root / "data", postfix_user.pw_uid, postfix_user.pw_gid)
        (root / "mail").mkdir(mode=0o755)
        os.chown(root / "mail", mail_user.pw_uid, mail_user.pw_gid)
        server = PrivatePostfix(root=root, port=port or free_port())
        (root / "etc" / "master.cf").write_text(_receiver_master_cf(server.port))
        (root / "etc" / "main.cf").write_text(_receiver_main_cf(root, sender_port=sender_port))
        (root / "etc" / "header_checks").write_text(HEADER_CHECKS)
        _fill_mailbox(root / "mail" / "full", mail_user)
        _postfix(server.config_dir, str(POSTFIX), "start")
        stack.callback(server.stop)
        _wait_listening(server)
        yield server
