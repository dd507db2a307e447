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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailer.config import InboundConfig, RelayConfig, TenantConfig
from mailer.identity import bounce_domain

log = logging.getLogger(__name__)

# mailer/verp.py::issue_verp's default prefix; the uid and MAC shapes are those it issues.
VERP_PREFIX = "bounces"
_VERP_LOCAL = r"\+[0-9a-f]{8,32}-[a-z2-7]{16}"

# Commits ``(source, raw)`` to the database, or raises: the handler answers 250 only on return.
Store = Callable[[str, bytes], object]


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
    its email: where its Reply-To points, mailer/identity.py)."""
    return InboundAddresses(
        bounce_domains=frozenset(bounce_domain(t, relay).lower() for t in tenants.values()),
        inboxes=frozenset((t.reply_to or t.email).lower() for t in tenants.values()),
    )


def build_source(mail_from: str | None, rcpt: str) -> str:
    """The ``source`` recorded with the stored mail: the envelope it came with (max 300)."""
    return f"smtp:{rcpt} from:<{_reverse_path(mail_from)}>"[:300]


def _reverse_path(mail_from: str | None) -> str:
    # aiosmtpd keeps a bounce's null reverse-path (RFC 5321 s4.5.5) as the literal "<>".
    return "" if mail_from in (None, "<>") else str(mail_from)


def _delivery_headers(mail_from: str | None, rcpt: str) -> bytes:
    # What a final delivery agent adds (RFC 5321 s4.4 Return-Path; Delivered-To as Postfix
    # writes it): the decoder finds the VERP address there when the DSN's To: lacks it. No
    # Received: line with a timestamp, so a message the sender retries after a lost 250 has
    # the same bytes and is stored once (sha256 dedup).
    text = f"Return-Path: <{_reverse_path(mail_from)}>\r\nDelivered-To: {rcpt}\r\n"
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
            # Not ours: no relaying, and no hint which addresses exist (RFC 5321 s3.6.2).
            log.info("inbound: refused recipient from %s", session.peer)
            return "550 5.1.1 No such recipient here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        # One copy per recipient, as a delivery agent files one per mailbox: each carries its
        # own Delivered-To, so each is matched on the address it arrived at.
        for rcpt in dict.fromkeys(envelope.rcpt_tos):
            source = build_source(envelope.mail_from, rcpt)
            raw = _delivery_headers(envelope.mail_from, rcpt) + content
            try:
                # The database work runs in a thread: the event loop keeps serving others.
                await asyncio.to_thread(self._store, source, raw)
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
    """Listen on ``config.host:config.port`` and store what arrives for ``addresses``."""
    handler = InboundHandler(addresses, store)
    loop = asyncio.get_running_loop()

    def factory() -> Any:
        return SMTP(
            handler,
            hostname=config.hostname,
            data_size_limit=config.max_message_bytes,  # SIZE in EHLO; larger is 552 (RFC 1870)
            decode_data=False,
            enable_SMTPUTF8=True,
        )

    return await loop.create_server(factory, host=config.host, port=config.port)
