"""EDGE: the inbound SMTP server (aiosmtpd): bounces at the VERP addresses, replies at AR inboxes.

It accepts mail only for ``<prefix>+<token>@<bounce domain>`` addresses and the tenants' AR inbox
addresses (no open relay), and answers 250 at the end of DATA only once the raw message is
committed to the database: accepted means stored (RFC 5321 s6.1). A storage failure is a 451, so
the sending MTA keeps the message and tries again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiosmtpd.smtp import SMTP, Envelope, Session

from bounce.smtp_limits import (
    ConnectionGate,
    GateProtocol,
    LimitedSMTP,
    SessionLimits,
    check_file_limit,
    install_log_throttle,
)
from mailer.config import InboundConfig, RelayConfig
from mailer.outbound.identity import bounce_domain
from mailer.tenant_config import TenantConfig

log = logging.getLogger(__name__)

# mailer/outbound/verp.py::issue_verp's default prefix; the uid and MAC shapes are those it issues.
VERP_PREFIX = "bounces"
_VERP_LOCAL = r"\+[0-9a-f]{8,32}-[a-z2-7]{16}"


class Store(Protocol):
    """Commits ``(source, raw)`` with the envelope's ``recipients`` to the database, or raises:
    the handler answers 250 only on return."""

    def __call__(
        self, source: str, raw: bytes, *, recipients: Sequence[str] | None = None
    ) -> object: ...


@dataclass(frozen=True)
class InboundAddresses:
    """Which recipients this server takes mail for: VERP addresses at the bounce domains, and
    the AR inbox addresses. Matching is case-insensitive (RFC 5321 s2.4: domains are, and every
    address here is one dunmail issued or was configured with)."""

    bounce_domains: frozenset[str]
    inboxes: frozenset[str]
    prefix: str = VERP_PREFIX

    def accepts(self, address: str) -> bool:
        """Whether ``address`` is one of ours; the VERP token's MAC is checked later, on ingest."""
        address = address.strip().lower()
        if address in self.inboxes:
            return True
        local, at, domain = address.rpartition("@")
        if not at or domain not in self.bounce_domains:
            return False
        return re.fullmatch(re.escape(self.prefix) + _VERP_LOCAL, local) is not None


def build_inbound_addresses(
    tenants: Mapping[str, TenantConfig], relay: RelayConfig
) -> InboundAddresses:
    """Every tenant's bounce domain (its own, else the relay's) and AR inbox (reply_to, else
    its email: where its Reply-To points, mailer/outbound/identity.py)."""
    return InboundAddresses(
        bounce_domains=frozenset(bounce_domain(t, relay).lower() for t in tenants.values()),
        inboxes=frozenset((t.reply_to or t.email).lower() for t in tenants.values()),
    )


def build_source(mail_from: str | None, rcpts: Sequence[str]) -> str:
    """The ``source`` recorded with the stored mail: the envelope it came with (max 300; the
    full recipient list is in ``InboundMail.recipients``)."""
    return f"smtp:{','.join(rcpts)} from:<{_reverse_path(mail_from)}>"[:300]


def _reverse_path(mail_from: str | None) -> str:
    # aiosmtpd keeps a bounce's null reverse-path (RFC 5321 s4.5.5) as the literal "<>".
    return "" if mail_from in (None, "<>") else str(mail_from)


def _delivery_headers(mail_from: str | None, rcpts: Sequence[str]) -> bytes:
    # What a final delivery agent adds (RFC 5321 s4.4 Return-Path; Delivered-To as Postfix
    # writes it, one per envelope recipient): a reader of the raw mail sees where it arrived;
    # ingest takes the recipients from the stored envelope, never from these lines. No
    # Received: line with a timestamp, so a message the sender retries after a lost 250 has
    # the same bytes and is stored once (sha256 dedup), while the same content for other
    # recipients (another transaction) is another copy.
    lines = [f"Return-Path: <{_reverse_path(mail_from)}>"]
    lines += [f"Delivered-To: {rcpt}" for rcpt in rcpts]
    text = "".join(f"{line}\r\n" for line in lines)
    return text.encode("utf-8", "replace")  # SMTPUTF8 addresses are UTF-8 (RFC 6532)


class InboundHandler:
    """aiosmtpd handler: refuses strangers at RCPT, stores each message before answering 250."""

    def __init__(self, addresses: InboundAddresses, store: Store) -> None:
        self.addresses = addresses
        self._store = store

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self.addresses.accepts(address):
            # Not ours: no relaying, and no hint which addresses exist (RFC 5321 s3.6.2). The
            # refusal is logged (throttled) and counted as an error by LimitedSMTP.
            return "550 5.1.1 No such recipient here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        # One copy per message with its envelope recipients (a copy per RCPT let one 1 MB
        # message with 100 RCPTs take 100 MB): ingest looks at each recipient, so a VERP
        # address proves its message and an AR inbox says which tenant received the mail.
        rcpts = list(dict.fromkeys(a.strip().lower() for a in envelope.rcpt_tos))
        source = build_source(envelope.mail_from, rcpts)
        raw = _delivery_headers(envelope.mail_from, rcpts) + content
        try:
            # The database work runs in a thread: the event loop keeps serving others.
            await asyncio.to_thread(self._store, source, raw, recipients=rcpts)
        except Exception as exc:  # SMTP boundary: whatever failed, the sender must retry
            log.error("inbound: cannot store a message (%s); answered 451", type(exc).__name__)
            return "451 4.3.0 Could not store the message, try again later"
        log.info(
            "inbound: stored a message of %d bytes for %d recipient(s)",
            len(content),
            len(envelope.rcpt_tos),
        )
        return "250 2.0.0 Stored"


async def start_inbound(
    config: InboundConfig, addresses: InboundAddresses, store: Store
) -> asyncio.Server:
    """Listen on ``config.host:config.port`` and store what arrives for ``addresses``, within
    the connection, recipient, time and error limits of ``config`` (bounce/smtp_limits.py)."""
    check_file_limit(config.max_connections)
    install_log_throttle(config.log_interval_seconds)
    handler = InboundHandler(addresses, store)
    loop = asyncio.get_running_loop()
    gate = ConnectionGate(
        max_total=config.max_connections,
        max_per_client=config.max_connections_per_client,
        ipv6_prefix=config.client_ipv6_prefix,
    )
    limits = SessionLimits.from_config(config)
    # Resolved once: aiosmtpd would call socket.getfqdn() (a blocking DNS lookup) per connection.
    hostname = config.hostname or socket.getfqdn()

    def session(client: str) -> LimitedSMTP:
        return LimitedSMTP(
            handler,
            gate=gate,
            client=client,
            limits=limits,
            hostname=hostname,
            data_size_limit=config.max_message_bytes,  # SIZE in EHLO; larger is 552 (RFC 1870)
            decode_data=False,
            enable_SMTPUTF8=True,
            timeout=config.idle_timeout_seconds,
        )

    def factory() -> GateProtocol:
        return GateProtocol(gate, session, hostname)

    # The listen queue holds a connection burst until the gate answers it (421 or greeting).
    return await loop.create_server(factory, host=config.host, port=config.port, backlog=1024)
