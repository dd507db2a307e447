"""The inbound SMTP server on loopback, driven by aiosmtplib as a remote MTA would drive it.

Bounces of emails the engine really sent arrive at their VERP address and are stored before the
250; strangers are refused at RCPT; a storage failure is a 451; on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from sqlmodel import Session, select

from bounce.inbound_smtp import (
    InboundAddresses,
    Store,
    build_inbound_addresses,
    start_inbound,
)
from dunmail.app import Services
from dunmail.runner import run_engine
from mailer.clock import FixedClock
from mailer.config import InboundConfig
from mailer.db import make_engine
from mailer.inbox_models import InboundMail, InboundStatus
from mailer.outbound.memory import MemoryTransport, SentMail
from mailer.outbound.models import Suppression
from tests.conftest import make_config
from tests.test_bounce_ingest import dsn

REPLY = (
    b"From: Jane <jane@globex.example>\r\nTo: Acme <ar-inbox@acme.example>\r\n"
    b"Subject: Re: Invoice INV-1042\r\nMessage-ID: <r1@globex.example>\r\n\r\nPaid today.\r\n"
)


@pytest.fixture
def services_config(tmp_path: Path) -> dict[str, Any]:
    """This module's shared ``services``: acme with a Reply-To inbox, and a second tenant with
    its own bounce domain."""
    return {
        "tenants": {
            "acme": {
                "name": "Acme Supplies",
                "email": "ar@acme.example",
                "reply_to": "ar-inbox@acme.example",
                "dkim": [
                    {
                        "domain": "acme.example",
                        "selector": "s1",
                        "key_file": str(tmp_path / "keys" / "s1.pem"),
                    }
                ],
            },
            "initech": {
                "name": "Initech",
                "email": "billing@initech.example",
                "bounce_domain": "bounces.initech.example",
            },
        },
    }


@pytest.fixture
def services(relay_env: tuple[Services, MemoryTransport]) -> Services:
    """The shared services with DEMO_DOC imported."""
    return relay_env[0]


Serve = Callable[..., Awaitable[int]]


@pytest.fixture
async def serve(services: Services) -> AsyncIterator[Serve]:
    """Start the inbound server on a free loopback port; returns the port."""
    servers: list[asyncio.Server] = []

    async def start(store: Store | None = None, **settings: object) -> int:
        config = InboundConfig.model_validate({"port": 0, "hostname": "mx.test", **settings})
        addresses = build_inbound_addresses(services.config.tenants, services.config.relay)
        server = await start_inbound(config, addresses, store or services.inbound.receive)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _sent(services: Services) -> SentMail:
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    transport = services.transports[0]
    assert isinstance(transport, MemoryTransport)
    # ap@'s copy: one envelope per recipient, each with its own VERP return path.
    return next(m for m in transport.sent if m.recipients == ("ap@globex.example",))


async def _send(port: int, raw: bytes, *, to: str, sender: str = "") -> None:
    """One message, as an MTA sends it; ``sender=""`` is a bounce's null MAIL FROM:<>."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as client:
        await client.sendmail(sender, [to], raw)


def _inbound(services: Services) -> list[InboundMail]:
    with Session(services.engine) as session:
        return list(session.exec(select(InboundMail)).all())


async def test_a_bounce_at_its_verp_address_is_stored_matched_and_suppresses(
    services: Services, serve: Serve
) -> None:
    port = await serve()
    sent = await _sent(services)
    # The bounce names the VERP address only in the envelope, as many MTAs' DSNs do.
    bounce = dsn(sent, envelope_to="postmaster@acme.example")

    await _send(port, bounce, to=sent.sender)

    (row,) = _inbound(services)
    assert row.status is InboundStatus.PROCESSED and row.matched_by == "verp"
    assert row.source == f"smtp:{sent.sender} from:<>"
    assert row.recipients == [sent.sender]  # the envelope, kept with the one stored copy
    assert row.raw.endswith(bounce)
    assert row.raw.startswith(f"Return-Path: <>\r\nDelivered-To: {sent.sender}\r\n".encode())
    with Session(services.engine) as session:
        assert [s.address for s in session.exec(select(Suppression)).all()] == ["ap@globex.example"]

    await _send(port, bounce, to=sent.sender)  # the MTA retried after a lost 250
    assert len(_inbound(services)) == 1


async def test_strangers_are_refused_at_rcpt(services: Services, serve: Serve) -> None:
    port = await serve()
    sent = await _sent(services)
    token = sent.sender.partition("@")[0]
    for stranger in (
        "someone@example.org",  # an open relay would take this
        f"{token}@example.org",  # a VERP shape at a domain not ours
        "postmaster@relay.example",  # our domain, not a VERP address
        "bounces+zz-notatoken@relay.example",
        "billing@initech.example.evil",
    ):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await _send(port, REPLY, to=stranger)
        assert refused.value.recipients[0].code == 550
        assert "5.1.1" in refused.value.recipients[0].message
    assert _inbound(services) == []


def test_accepted_addresses() -> None:
    addresses = InboundAddresses(
        bounce_domains=frozenset({"relay.example"}), inboxes=frozenset({"ar@acme.example"})
    )
    assert addresses.accepts("bounces+0123456789abcdef-abcdefghijklmnop@relay.example")
    assert addresses.accepts("Bounces+0123456789ABCDEF-ABCDEFGHIJKLMNOP@Relay.Example")
    assert addresses.accepts("AR@acme.example")
    assert not addresses.accepts("bounces+0123456789abcdef-abcdefghijklmnop@relay.example.com")
    assert not addresses.accepts("other+0123456789abcdef-abcdefghijklmnop@relay.example")
    assert not addresses.accepts("bounces+0123456789abcdef-abcdefghijklmnop")


async def test_a_reply_to_the_ar_inbox_and_a_bounce_at_another_tenants_domain_are_stored(
    services: Services, serve: Serve
) -> None:
    port = await serve()

    await _send(port, REPLY, to="ar-inbox@acme.example", sender="jane@globex.example")
    forged = "bounces+0123456789abcdef-abcdefghijklmnop@bounces.initech.example"
    await _send(port, REPLY.replace(b"Paid", b"Not paid"), to=forged)

    rows = sorted(_inbound(services), key=lambda r: r.id or 0)
    assert [r.source for r in rows] == [
        "smtp:ar-inbox@acme.example from:<jane@globex.example>",
        f"smtp:{forged} from:<>",
    ]
    # Neither is a bounce of ours (the second's VERP token is forged): kept, matched to nothing.
    assert [r.status for r in rows] == [InboundStatus.UNMATCHED, InboundStatus.UNMATCHED]


async def test_a_storage_failure_is_451_and_the_retry_is_stored(
    services: Services, serve: Serve, tmp_path: Path
) -> None:
    port = await serve()
    sent = await _sent(services)
    working = services.inbound.engine
    # A database that cannot be opened: every store raises, as when the server is down.
    services.inbound.engine = make_engine(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")
    try:
        with pytest.raises(aiosmtplib.SMTPDataError) as failed:
            await _send(port, dsn(sent), to=sent.sender)
    finally:
        services.inbound.engine.dispose()
        services.inbound.engine = working
    assert failed.value.code == 451
    assert "4.3.0" in failed.value.message
    assert _inbound(services) == []

    await _send(port, dsn(sent), to=sent.sender)  # the sending MTA tries again later

    assert [r.status for r in _inbound(services)] == [InboundStatus.PROCESSED]


async def test_a_decoding_failure_after_storing_still_answers_250(
    services: Services, serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = await serve()
    sent = await _sent(services)

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("decoder bug")

    # A crashing decoder cannot be provoked with real input (parse promises not to raise):
    # replace the processing step; storing stays real.
    monkeypatch.setattr(services.inbound, "process", broken)

    await _send(port, dsn(sent), to=sent.sender)

    (row,) = _inbound(services)
    assert row.status is InboundStatus.STORED  # kept for ``dunmail bounce reprocess``


async def test_an_oversized_message_is_552(services: Services, serve: Serve) -> None:
    port = await serve(max_message_bytes=4096)
    big = REPLY + b"x" * 10_000 + b"\r\n"

    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await _send(port, big, to="ar-inbox@acme.example")

    assert refused.value.code == 552
    assert _inbound(services) == []


async def test_dunmail_run_serves_inbound_smtp_and_stops_cleanly(
    tmp_path: Path, db_url: str, clock: FixedClock
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = make_config(tmp_path, db_url, inbound={"enabled": True, "port": port})
    stop = asyncio.Event()
    engine = asyncio.create_task(run_engine(config, clock, stop=stop))
    try:
        for _ in range(100):
            try:
                await _send(port, REPLY, to="ar@acme.example", sender="jane@globex.example")
                break
            except (aiosmtplib.SMTPConnectError, ConnectionError):
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(engine, 30)
    probe = make_engine(db_url)
    with Session(probe) as session:
        assert len(session.exec(select(InboundMail)).all()) == 1
    probe.dispose()
