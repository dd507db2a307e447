"""Attacks on the inbound SMTP server (issue 14, finding 4), with real sockets on loopback.

A client holding a thousand connections, a transaction naming a thousand recipients, idle and
slow-drip sessions, and a flood of refusals: each is refused or cut off with the reply Postfix
gives, while a legitimate sender still delivers, and the log stays a few lines long.

Linux routes all of 127.0.0.0/8 to loopback, so clients bind 127.0.0.x source addresses to be
different clients of the per-client limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiosmtplib
import pytest
from sqlmodel import Session, select

from bounce.inbound_smtp import build_inbound_addresses, start_inbound
from bounce.smtp_limits import ConnectionGate, LogThrottle, client_key
from dunmail.app import Services
from dunmail.config import load_config
from mailer.config import InboundConfig
from mailer.errors import ConfigError
from mailer.inbox_models import InboundMail

INBOX = "ar@acme.example"
REPLY = (
    b"From: Jane <jane@globex.example>\r\nTo: Acme <ar@acme.example>\r\n"
    b"Subject: Re: Invoice INV-1042\r\nMessage-ID: <r1@globex.example>\r\n\r\nPaid today.\r\n"
)


Serve = Callable[..., Awaitable[int]]


@pytest.fixture
async def serve(services: Services) -> AsyncIterator[Serve]:
    """Start the inbound server on a free loopback port with ``settings``; returns the port."""
    servers: list[asyncio.Server] = []

    async def start(**settings: object) -> int:
        config = InboundConfig.model_validate({"port": 0, "hostname": "mx.test", **settings})
        addresses = build_inbound_addresses(services.config.tenants, services.config.relay)
        server = await start_inbound(config, addresses, services.inbound.receive)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def _stored(services: Services) -> list[InboundMail]:
    with Session(services.engine) as session:
        return list(session.exec(select(InboundMail)).all())


async def _deliver(port: int, raw: bytes = REPLY, *, source: str = "127.0.0.1") -> None:
    """One message to the AR inbox, as an MTA at ``source`` sends it."""
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, timeout=10, source_address=(source, 0)
    ) as client:
        await client.sendmail("jane@globex.example", [INBOX], raw)


class Raw:
    """A bare SMTP client socket: reads reply lines, writes what it is told, holds on."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> Raw:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(source, 0), limit=2**16
        )
        return cls(reader, writer)

    async def line(self, timeout: float = 5) -> str:
        return (await asyncio.wait_for(self.reader.readline(), timeout)).decode()

    async def closed(self, timeout: float = 5) -> bool:
        """Whether the server closes the connection within ``timeout`` (read() returns at EOF,
        after any lines still pending)."""
        try:
            await asyncio.wait_for(self.reader.read(), timeout)
        except TimeoutError:
            return False
        return self.reader.at_eof()

    def send(self, text: str) -> None:
        self.writer.write(text.encode())

    def close(self) -> None:
        self.writer.close()


async def _flood(port: int, count: int, source: str = "127.0.0.1") -> list[Raw]:
    return list(await asyncio.gather(*(Raw.open(port, source) for _ in range(count))))


async def test_a_thousand_connections_from_one_client_are_refused_past_its_limit(
    services: Services, serve: Serve
) -> None:
    port = await serve(max_connections=200, max_connections_per_client=20)

    attackers = await _flood(port, 1000)
    greetings = await asyncio.gather(*(a.line() for a in attackers))

    held = [a for a, g in zip(attackers, greetings, strict=True) if g.startswith("220 ")]
    refused = [a for a, g in zip(attackers, greetings, strict=True) if g.startswith("421 ")]
    assert (len(held), len(refused)) == (20, 980)
    assert all("4.7.0" in g for g in greetings if g.startswith("421"))
    # Refused means closed at once: no session is kept for them.
    assert all(await asyncio.gather(*(a.closed() for a in refused)))

    # Another client delivers while the attacker holds its twenty.
    started = time.monotonic()
    await _deliver(port, source="127.0.0.2")
    assert time.monotonic() - started < 5
    for attacker in attackers:
        attacker.close()
    await asyncio.sleep(0.1)

    # And once they are gone, the attacker's own address is served again.
    await _deliver(port, REPLY.replace(b"Paid", b"Paid again"))
    assert len(_stored(services)) == 2


async def test_the_overall_limit_holds_across_clients_and_frees_on_close(
    services: Services, serve: Serve
) -> None:
    port = await serve(max_connections=30, max_connections_per_client=5)

    attackers = [a for i in range(10) for a in await _flood(port, 5, f"127.0.0.{10 + i}")]
    greetings = await asyncio.gather(*(a.line() for a in attackers))
    assert sum(g.startswith("220 ") for g in greetings) == 30
    assert sum(g.startswith("421 4.7.0") for g in greetings) == 20
    # Full: a newcomer is told to come back (421 is transient: an MTA retries later).
    with pytest.raises(aiosmtplib.SMTPConnectResponseError) as refused:
        await _deliver(port, source="127.0.0.2")
    assert refused.value.code == 421

    for attacker in attackers:
        attacker.close()
    await asyncio.sleep(0.1)
    await _deliver(port, source="127.0.0.2")
    assert len(_stored(services)) == 1


async def test_a_thousand_recipients_in_one_transaction(services: Services, serve: Serve) -> None:
    port = await serve(max_recipients=100)
    # VERP-shaped addresses pass RCPT (their MAC is checked on ingest): all distinct, all taken
    # by today's main, which then stored one copy of the message per recipient.
    recipients = [f"bounces+{i:016x}-{'a' * 16}@relay.example" for i in range(1000)]
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as client:
        await client.ehlo()
        await client.mail("")
        codes: list[int] = []
        for rcpt in recipients:
            reply = await client.execute_command(b"RCPT", f"TO:<{rcpt}>".encode())
            codes.append(reply.code)
            if reply.code == 452:
                assert reply.message.startswith("4.5.3 Too many recipients")
        assert codes == [250] * 100 + [452] * 900
        # The transaction goes on with the hundred accepted (RFC 5321 s4.5.3.1.10).
        code, _ = await client.data(REPLY)
        assert code == 250
        # The next transaction starts with a fresh count.
        await client.mail("")
        assert (await client.rcpt(recipients[500]))[0] == 250
        await client.rset()

    (row,) = _stored(services)  # one copy of the message, not one per recipient
    assert row.raw.endswith(REPLY)


async def test_an_idle_connection_is_closed_at_the_idle_timeout(
    services: Services, serve: Serve
) -> None:
    port = await serve(idle_timeout_seconds=0.3, session_timeout_seconds=10)
    idle = await Raw.open(port)
    assert (await idle.line()).startswith("220 ")
    dripping = await Raw.open(port, "127.0.0.3")
    assert (await dripping.line()).startswith("220 ")

    started = time.monotonic()
    dripping.send("EHL")  # a command never finished counts as idle
    reply = await idle.line(timeout=3)
    assert reply.startswith("421 4.4.2")
    assert 0.25 < time.monotonic() - started < 2
    assert await idle.closed()
    assert (await dripping.line(timeout=3)).startswith("421 4.4.2")
    assert await dripping.closed()
    idle.close()
    dripping.close()


async def test_a_slow_drip_session_is_closed_at_the_session_limit(
    services: Services, serve: Serve
) -> None:
    port = await serve(idle_timeout_seconds=1, session_timeout_seconds=2)
    client = await Raw.open(port)
    assert (await client.line()).startswith("220 ")
    started = time.monotonic()
    replies: list[str] = []
    # A command well before each idle timeout: the idle timer never fires.
    while time.monotonic() - started < 5:
        client.send("NOOP\r\n")
        line = await client.line()
        replies.append(line)
        if not line.startswith("250"):
            break
        await asyncio.sleep(0.2)
    elapsed = time.monotonic() - started
    assert replies[-1].startswith("421 4.4.2") and "session" in replies[-1]
    assert len(replies) > 3  # it was served until then
    assert 1.8 < elapsed < 4
    assert await client.closed()
    client.close()

    await _deliver(port)  # the limit is per session: the next one is served
    assert len(_stored(services)) == 1


async def test_too_many_errors_end_the_session(services: Services, serve: Serve) -> None:
    port = await serve(max_errors_per_session=5)
    client = await Raw.open(port)
    await client.line()
    client.send("EHLO probe.example\r\n")
    while (await client.line()).startswith("250-"):
        pass
    client.send("MAIL FROM:<>\r\n")
    assert (await client.line()).startswith("250")
    replies = []
    for i in range(10):  # harvesting addresses: every guess is a 550
        client.send(f"RCPT TO:<guess{i}@acme.example>\r\n")
        replies.append(await client.line())
        if replies[-1].startswith("421"):
            break
    assert [r[:3] for r in replies] == ["550"] * 5 + ["421"]
    assert "4.7.0" in replies[-1]
    assert await client.closed()
    client.close()


async def test_a_flood_of_refusals_writes_a_few_log_lines(
    services: Services, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # aiosmtpd's per-command chatter included, at its worst
    port = await serve(max_connections_per_client=5, max_connections=50, log_interval_seconds=1)
    caplog.clear()
    started = time.monotonic()

    for _ in range(3):  # three waves of 200 connections, 195 refused each time
        attackers = await _flood(port, 200)
        await asyncio.gather(*(a.line() for a in attackers))
        for a in attackers:
            a.close()
    strangers = await Raw.open(port, "127.0.0.4")
    await strangers.line()
    strangers.send("HELO x\r\nMAIL FROM:<>\r\n")
    await strangers.line()
    await strangers.line()
    for i in range(15):
        strangers.send(f"RCPT TO:<nobody{i}@example.org>\r\n")
        await strangers.line()
    strangers.close()
    await asyncio.sleep(1.3)  # the interval ends: the summaries are written

    elapsed = time.monotonic() - started
    ours = [r.getMessage() for r in caplog.records if r.name == "bounce.smtp_limits"]
    refusal = (
        "inbound: refused a connection from 127.0.0.1: 5 connections open from 127.0.0.1, "
        "the limit is 5"
    )
    # 585 refused connections: the first line, then one summary per interval of the rest.
    _assert_summarised([m for m in ours if refusal in m], refusal, 585, elapsed)
    # 15 refused recipients: likewise.
    answer = "inbound: answered '550 5.1.1 No such recipient here' to 127.0.0.4"
    _assert_summarised([m for m in ours if answer in m], answer, 15, elapsed)
    assert len(caplog.records) < 60
    assert sum(len(r.getMessage()) for r in caplog.records) < 10_000


def _assert_summarised(lines: list[str], first: str, events: int, elapsed: float) -> None:
    """``lines`` are ``first``, then summaries of the other ``events - 1``, one per interval."""
    assert lines[0] == first
    counts = [int(line.split(" ", 1)[0]) for line in lines[1:]]
    assert all(" similar messages suppressed in the last 1s; the last: " in x for x in lines[1:])
    assert sum(counts) == events - 1
    assert len(lines) <= 2 + elapsed  # one interval is a second


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        (
            "max_recipients = 0",
            "inbound.max_recipients: Input should be greater than or equal to 1",
        ),
        (
            "idle_timeout_seconds = -1",
            "inbound.idle_timeout_seconds: Input should be greater than 0",
        ),
        ("max_connections = 'many'", "inbound.max_connections: Input should be a valid integer"),
        (
            "max_connections = 10\nmax_connections_per_client = 50",
            "max_connections_per_client (50) is more than max_connections (10)",
        ),
        (
            "idle_timeout_seconds = 900\nsession_timeout_seconds = 60",
            "idle_timeout_seconds (900) is more than session_timeout_seconds (60)",
        ),
    ],
)
def test_bad_limits_are_refused_naming_the_key(
    tmp_path: Path, setting: str, complaint: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text('env = "dev"\n[database]\nurl = "sqlite:///x.db"\n[inbound]\n' + setting + "\n")
    with pytest.raises(ConfigError) as bad:
        load_config(path)
    assert complaint in str(bad.value)


async def test_more_connections_than_open_files_is_refused_at_start(
    services: Services, serve: Serve
) -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > 100_000:
        pytest.skip(f"open-file limit {soft} is above any max_connections allowed")
    too_many = min(100_000, soft)
    with pytest.raises(ConfigError, match=r"inbound\.max_connections = \d+ needs"):
        await serve(max_connections=too_many, max_connections_per_client=1)


def test_clients_are_counted_per_ipv4_address_and_per_ipv6_network() -> None:
    key = client_key
    assert key(("192.0.2.7", 2525), ipv6_prefix=64) == "192.0.2.7"
    assert key(("::ffff:192.0.2.7", 2525, 0, 0), ipv6_prefix=64) == "192.0.2.7"
    # One host commonly holds a /64: every address in it is the same client.
    a = key(("2001:db8:1:2::1", 25, 0, 0), ipv6_prefix=64)
    b = key(("2001:db8:1:2:ffff:ffff:ffff:fffe", 25, 0, 0), ipv6_prefix=64)
    c = key(("2001:db8:1:3::1", 25, 0, 0), ipv6_prefix=64)
    assert a == b == "2001:db8:1:2::/64" and c != a
    assert key(("fe80::1%eth0", 25, 0, 2), ipv6_prefix=128) == "fe80::1/128"

    gate = ConnectionGate(max_total=3, max_per_client=2, ipv6_prefix=64)
    assert gate.admit(("2001:db8::1", 1))[0] == "2001:db8::/64"
    assert gate.admit(("2001:db8::2", 1))[0] == "2001:db8::/64"
    refused, why = gate.admit(("2001:db8::3", 1))
    assert refused is None and "2 connections open from 2001:db8::/64" in why
    assert gate.admit(("192.0.2.1", 1))[0] == "192.0.2.1"
    refused, why = gate.admit(("192.0.2.2", 1))
    assert refused is None and "3 connections open, the limit is 3" in why
    gate.release("2001:db8::/64")
    assert gate.admit(("192.0.2.2", 1))[0] == "192.0.2.2"
    for released in ("2001:db8::/64", "192.0.2.1", "192.0.2.2"):
        gate.release(released)
    assert (gate.total, gate.per_client) == (0, {})


def test_the_log_throttle_passes_one_line_per_interval_and_counts_the_rest() -> None:
    throttle = LogThrottle(interval=5)
    assert throttle.admit("refused", 0.0) == (True, 0)
    assert [throttle.admit("refused", t, f"line {t}") for t in (1.0, 2.0, 3.0)] == [(False, 0)] * 3
    assert throttle.admit("other", 3.0) == (True, 0)  # each kind has its own interval
    assert throttle.pending_flush("refused", 3.0) == 2.0  # the summary is due at 5 s
    assert throttle.pending_flush("refused", 3.5) is None  # ... and scheduled once
    assert throttle.take("refused", 5.0) == (3, "line 3.0")
    assert throttle.take("refused", 5.0) == (0, "")
    # Without a summary timer the count rides on the next line let through.
    assert throttle.admit("other", 4.0) == (False, 0)
    assert throttle.admit("other", 8.5) == (True, 1)
