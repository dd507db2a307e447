"""Transport contract for SMTP and memory, then SMTP against a real loopback aiosmtpd server."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import sys
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any

import pytest

from mailer.config import SMTPEndpoint, TLSMode
from mailer.errors import (
    AddressError,
    ConfigError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.smtp import SMTPTransport
from mailer.outbound.transport import SendResult, Transport
from tests.smtpd import RecordingServer

SENDER = "noreply-invoice@dunmail.test"
GOOD, BAD, LATER = "ar@customer.test", "bad@x.test", "later@x.test"
# A signed message is opaque bytes from here on: the transport must not re-serialize them.
DKIM_HEADER = (
    b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=dunmail.test; s=s1;\r\n"
    b" h=from:to:subject:message-id; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n"
    b" b=dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZQ==\r\n"
)


def build_message(*, body: str = "Invoice 1042 is overdue.\n", size: int = 0) -> bytes:
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = f"Acme Billing <{SENDER}>"
    msg["To"] = GOOD
    msg["Subject"] = "Reminder: invoice 1042 " + "is now due " * 8  # long enough to fold
    msg["Message-ID"] = "<1042.r1@dunmail.test>"
    # A line starting with "." exercises dot-stuffing (RFC 5321 s4.5.2) in both directions.
    msg.set_content(body + ".a line with a leading dot\nTrailing space \n" + "x" * size)
    return DKIM_HEADER + msg.as_bytes()


def endpoint_for(server: RecordingServer, **overrides: Any) -> SMTPEndpoint:
    settings: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "timeout_seconds": 5.0,
        "local_hostname": "client.test",
    }
    settings.update(overrides)
    return SMTPEndpoint(**settings)


@pytest.fixture
async def make_smtp(smtpd: RecordingServer) -> AsyncIterator[Callable[..., SMTPTransport]]:
    """SMTPTransport factory pointed at the test's server; everything made is closed after."""
    made: list[SMTPTransport] = []

    def make(**overrides: Any) -> SMTPTransport:
        made.append(SMTPTransport(endpoint_for(smtpd, **overrides)))
        return made[-1]

    yield make
    for transport in made:
        await transport.close()


# --- contract: every Transport -----------------------------------------------------------------


class SMTPHarness:
    def __init__(self, server: RecordingServer) -> None:
        self.server = server
        self.transport: Transport = SMTPTransport(endpoint_for(server))

    def refuse(self, replies: dict[str, str]) -> None:
        self.server.script(rcpt=replies)

    def delivered(self) -> list[tuple[str, tuple[str, ...], bytes]]:
        return [(e.mail_from, e.rcpt_tos, e.content) for e in self.server.envelopes]


class MemoryHarness:
    def __init__(self) -> None:
        self.transport: Transport = MemoryTransport()

    def refuse(self, replies: dict[str, str]) -> None:
        self.transport = MemoryTransport(
            refuse={a: (int(r[:3]), r[4:]) for a, r in replies.items()}
        )

    def delivered(self) -> list[tuple[str, tuple[str, ...], bytes]]:
        assert isinstance(self.transport, MemoryTransport)
        return [(m.sender, m.recipients, m.data) for m in self.transport.sent]


@pytest.fixture(params=["smtp", "memory"])
async def harness(
    request: pytest.FixtureRequest, smtpd: RecordingServer
) -> AsyncIterator[SMTPHarness | MemoryHarness]:
    h = SMTPHarness(smtpd) if request.param == "smtp" else MemoryHarness()
    yield h
    await h.transport.close()


async def test_accepted_send_returns_250_per_recipient(harness: SMTPHarness | MemoryHarness):
    result = await harness.transport.send(build_message(), sender=SENDER, recipients=[GOOD, LATER])

    assert isinstance(result, SendResult)
    assert result.code == 250
    assert [(r.address, r.code, r.accepted) for r in result.recipients] == [
        (GOOD, 250, True),
        (LATER, 250, True),
    ]
    assert result.accepted == (GOOD, LATER)
    assert result.endpoint == harness.transport.key
    assert [d[:2] for d in harness.delivered()] == [(SENDER, (GOOD, LATER))]


async def test_partial_refusal_is_per_address_and_data_goes_to_the_rest(
    harness: SMTPHarness | MemoryHarness,
):
    harness.refuse({BAD: "550 5.1.1 No such user", LATER: "450 4.2.0 Try later"})

    result = await harness.transport.send(
        build_message(), sender=SENDER, recipients=[GOOD, BAD, LATER]
    )

    assert result.code == 250
    by_address = {r.address: r for r in result.recipients}
    assert (by_address[GOOD].code, by_address[GOOD].accepted) == (250, True)
    assert (by_address[BAD].code, by_address[BAD].temporary) == (550, False)
    assert by_address[BAD].message == "5.1.1 No such user"
    assert (by_address[LATER].code, by_address[LATER].temporary) == (450, True)
    assert result.accepted == (GOOD,)
    assert [r.address for r in result.refused] == [BAD, LATER]
    assert [d[:2] for d in harness.delivered()] == [(SENDER, (GOOD,))]


async def test_all_refused_sends_no_data(harness: SMTPHarness | MemoryHarness):
    harness.refuse({BAD: "550 5.1.1 No such user", LATER: "451 4.3.0 Busy"})

    result = await harness.transport.send(build_message(), sender=SENDER, recipients=[BAD, LATER])

    assert result.code is None
    assert result.accepted == ()
    assert [r.code for r in result.recipients] == [550, 451]
    assert harness.delivered() == []
    # ...and the transport is still usable afterwards (the SMTP session was reset).
    again = await harness.transport.send(build_message(), sender=SENDER, recipients=[GOOD])
    assert again.code == 250


async def test_signed_bytes_arrive_byte_identical(harness: SMTPHarness | MemoryHarness):
    message = build_message()

    await harness.transport.send(message, sender=SENDER, recipients=[GOOD])

    [(_, _, received)] = harness.delivered()
    assert received == message
    assert received.startswith(DKIM_HEADER)


async def test_bare_newlines_become_crlf_the_same_way(harness: SMTPHarness | MemoryHarness):
    # RFC 5321 s2.3.8: the wire only has CRLF; both transports must show what really goes out.
    await harness.transport.send(
        b"From: a@x.test\nSubject: lf\n\nbody", sender=SENDER, recipients=[GOOD]
    )

    [(_, _, received)] = harness.delivered()
    assert received == b"From: a@x.test\r\nSubject: lf\r\n\r\nbody\r\n"


async def test_bad_input_is_refused_before_sending(harness: SMTPHarness | MemoryHarness):
    with pytest.raises(ValueError, match="at least one recipient"):
        await harness.transport.send(build_message(), sender=SENDER, recipients=[])
    with pytest.raises(TypeError):
        await harness.transport.send(build_message(), sender=SENDER, recipients=GOOD)
    with pytest.raises(AddressError):
        await harness.transport.send(
            build_message(), sender=SENDER, recipients=["x@y.test>\r\nRCPT TO:<z@y.test"]
        )
    assert harness.delivered() == []


# --- MemoryTransport specifics -----------------------------------------------------------------


async def test_memory_fail_next_raises_once_then_sends():
    transport = MemoryTransport()
    transport.fail_next(TransientDeliveryError(421, "4.7.0 Try again later"))

    with pytest.raises(TransientDeliveryError) as caught:
        await transport.send(build_message(), sender=SENDER, recipients=[GOOD])
    assert caught.value.code == 421
    result = await transport.send(build_message(), sender=SENDER, recipients=[GOOD])

    assert result.code == 250
    assert len(transport.sent) == 1
    assert transport.key == "memory"


@pytest.mark.parametrize(
    "data",
    [b"just some text\r\n", b"Subject: no sender\r\n\r\nbody\r\n"],
    ids=["no-headers", "no-from"],
)
async def test_memory_refuses_bytes_that_are_not_a_message(data: bytes):
    transport = MemoryTransport()

    with pytest.raises(PermanentDeliveryError) as caught:
        await transport.send(data, sender=SENDER, recipients=[GOOD])

    assert caught.value.code == 554
    assert transport.sent == []


def test_memory_refusals_must_be_error_codes():
    with pytest.raises(ValueError, match="4xx or 5xx"):
        MemoryTransport(refuse={BAD: (250, "OK")})


async def test_memory_refusal_matches_address_case_insensitively():
    transport = MemoryTransport(refuse={"Bad@X.test": (550, "5.1.1 No such user")})

    result = await transport.send(build_message(), sender=SENDER, recipients=[BAD])

    assert result.code is None
    assert result.recipients[0].code == 550


# --- SMTP: pooling -----------------------------------------------------------------------------


async def test_sequential_sends_reuse_one_connection(smtpd: RecordingServer, make_smtp):
    transport = make_smtp()

    for _ in range(5):
        assert (await transport.send(build_message(), sender=SENDER, recipients=[GOOD])).code == 250

    assert smtpd.connections == 1
    assert smtpd.commands.count("EHLO") == 1
    assert len(smtpd.envelopes) == 5


@pytest.mark.smtpd_options(data_delay=0.02)
async def test_concurrency_is_capped_at_max_connections(smtpd: RecordingServer, make_smtp):
    transport = make_smtp(max_connections=2)

    results = await asyncio.gather(
        *(transport.send(build_message(), sender=SENDER, recipients=[GOOD]) for _ in range(10))
    )

    assert [r.code for r in results] == [250] * 10
    assert smtpd.peak_connections == 2
    assert smtpd.connections == 2
    assert len(smtpd.envelopes) == 10


async def test_connection_the_server_closed_while_idle_is_replaced(
    smtpd: RecordingServer, make_smtp
):
    transport = make_smtp()
    await transport.send(build_message(), sender=SENDER, recipients=[GOOD])

    smtpd.drop_connections()
    result = await transport.send(build_message(), sender=SENDER, recipients=[GOOD])

    assert result.code == 250
    assert smtpd.connections == 2
    assert len(smtpd.envelopes) == 2


async def test_dead_pooled_connection_is_retried_once_on_a_new_one(
    smtpd: RecordingServer, make_smtp
):
    transport = make_smtp()
    await transport.send(build_message(), sender=SENDER, recipients=[GOOD])
    # The client has not noticed yet: the hang-up only shows when MAIL goes out.
    smtpd.script(drop="mail", once=True)

    result = await transport.send(build_message(), sender=SENDER, recipients=[GOOD])

    assert result.code == 250
    assert smtpd.connections == 2
    assert smtpd.commands.count("MAIL") == 3
    assert len(smtpd.envelopes) == 2


@pytest.mark.smtpd_options(drop="mail")
async def test_fresh_connection_dropped_is_not_retried(smtpd: RecordingServer, make_smtp):
    transport = make_smtp()

    with pytest.raises(TransientDeliveryError) as caught:
        await transport.send(build_message(), sender=SENDER, recipients=[GOOD])

    assert caught.value.code == 0
    assert "connection lost during MAIL" in caught.value.message
    assert smtpd.connections == 1


@pytest.mark.smtpd_options(data="554 5.7.1 Rejected as spam")
async def test_connection_is_reset_after_a_refused_transaction_and_reused(
    smtpd: RecordingServer, make_smtp
):
    transport = make_smtp()
    with pytest.raises(PermanentDeliveryError):
        await transport.send(build_message(), sender=SENDER, recipients=[GOOD])

    smtpd.script(data=None)
    result = await transport.send(build_message(), sender=SENDER, recipients=[GOOD])

    assert result.code == 250
    assert smtpd.connections == 1
    assert smtpd.commands[smtpd.commands.index("DATA") + 1] == "RSET"


async def test_idle_connections_are_quit_after_the_idle_timeout(smtpd: RecordingServer, make_smtp):
    transport = make_smtp(idle_timeout_seconds=0.05)
    await transport.send(build_message(), sender=SENDER, recipients=[GOOD])

    for _ in range(250):  # wait for the expiry, without asserting on how long it took
        if "QUIT" in smtpd.commands:
            break
        await asyncio.sleep(0.02)
    await transport.send(build_message(), sender=SENDER, recipients=[GOOD])

    assert smtpd.commands.count("QUIT") == 1
    assert smtpd.connections == 2


async def test_close_quits_pooled_connections(smtpd: RecordingServer, make_smtp):
    transport = make_smtp()
    await asyncio.gather(
        *(transport.send(build_message(), sender=SENDER, recipients=[GOOD]) for _ in range(3))
    )

    await transport.close()

    assert smtpd.commands.count("QUIT") == smtpd.connections == 3
    # A closed transport can still send: it simply opens a new connection.
    assert (await transport.send(build_message(), sender=SENDER, recipients=[GOOD])).code == 250


async def test_mail_from_carries_size_and_8bitmime(smtpd: RecordingServer, make_smtp):
    message = build_message(body="Fällig: 12,00 €\n")  # policy.SMTP picks 8bit for this
    assert not message.isascii()

    await make_smtp().send(message, sender=SENDER, recipients=[GOOD])

    [envelope] = smtpd.envelopes
    assert envelope.mail_options == (f"SIZE={len(message)}", "BODY=8BITMIME")
    assert envelope.content == message
    assert smtpd.messages[0].get_content().startswith("Fällig: 12,00 €\r\n.a line")


# --- SMTP: TLS ---------------------------------------------------------------------------------


@pytest.mark.smtpd_options(tls="starttls")
async def test_starttls_with_the_trusted_ca(smtpd: RecordingServer, make_smtp):
    transport = make_smtp(tls=TLSMode.STARTTLS, ca_file=smtpd.ca_file)

    result = await transport.send(build_message(), sender=SENDER, recipients=[GOOD])

    assert result.code == 250
    assert smtpd.commands[:3] == ["EHLO", "STARTTLS", "EHLO"]


@pytest.mark.smtpd_options(tls="starttls")
async def test_starttls_with_an_untrusted_certificate_fails(smtpd: RecordingServer, make_smtp):
    transport = make_smtp(tls=TLSMode.STARTTLS)  # no ca_file: the throwaway CA is unknown

    with pytest.raises(TransientDeliveryError) as caught:
        await transport.send(build_message(), sender=SENDER, recipients=[GOOD])

    assert caught.value.code == 0
    assert "certificate" in caught.value.message
    assert "MAIL" not in smtpd.commands


@pytest.mark.smtpd_options(tls="starttls")
async def test_starttls_without_verification_when_the_tenant_opted_out(
    smtpd: RecordingServer, make_smtp
):
    transport = make_smtp(tls=TLSMode.STARTTLS, verify_certificate=False)

    assert (await transport.send(build_message(), sender=SENDER, recipients=[GOOD])).code == 250


@pytest.mark.smtpd_options(tls="implicit")
async def test_implicit_tls(smtpd: RecordingServer, make_smtp):
    transport = make_smtp(tls=TLSMode.IMPLICIT, ca_file=smtpd.ca_file)

    assert (await transport.send(build_message(), sender=SENDER, recipients=[GOOD])).code == 250
    assert "STARTTLS" not in smtpd.commands


@pytest.mark.smtpd_options(tls="implicit")
async def test_implicit_tls_with_an_untrusted_certificate_fails(smtpd: RecordingServer, make_smtp):
    transport = make_smtp(tls=TLSMode.IMPLICIT)

    with pytest.raises(TransientDeliveryError) as caught:
        await transport.send(build_message(), sender=SENDER, recipients=[GOOD])

    assert "TLS handshake failed" in caught.value.message


async def test_required_starttls_that_the_server_lacks_is_refused(
    smtpd: RecordingServer, make_smtp
):
    transport = make_smtp(tls=TLSMode.STARTTLS, ca_file=smtpd.ca_file)

    with pytest.raises(TransientDeliveryError, match="does not offer STARTTLS"):
        await transport.send(build_message(), sender=SENDER, recipients=[GOOD])

    assert "MAIL" not in smtpd.commands  # never fell back to plain text


def test_missing_ca_file_is_a_config_error(tmp_path):
    endpoint = SMTPEndpoint(tls=TLSMode.STARTTLS, ca_file=tmp_path / "missing.pem")

    with pytest.raises(ConfigError, match="ca_file"):
        SMTPTransport(endpoint)


# --- SMTP: AUTH --------------------------------------------------------------------------------

PASSWORD = "correct-horse-battery-staple"


@pytest.mark.smtpd_options(auth={"alice": PASSWORD})
@pytest.mark.parametrize("mechanism", ["auto", "plain", "login"])
async def test_auth_with_the_password_from_the_environment(
    smtpd: RecordingServer, make_smtp, monkeypatch, caplog, mechanism: str
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("DUNMAIL_TEST_SMTP_PASSWORD", PASSWORD)
    transport = make_smtp(
        username="alice", password_env="DUNMAIL_TEST_SMTP_PASSWORD", auth=mechanism
    )

    result = await transport.send(build_message(), sender=SENDER, recipients=[GOOD])

    assert result.code == 250
    assert smtpd.logins == ["alice"]
    assert "AUTH" in smtpd.commands
    logged = caplog.text
    assert PASSWORD not in logged
    assert base64.b64encode(PASSWORD.encode()).decode() not in logged
    assert base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode() not in logged
    assert PASSWORD not in transport.key


@pytest.mark.smtpd_options(auth={"alice": PASSWORD})
async def test_auth_failure_is_permanent(smtpd: RecordingServer, make_smtp, monkeypatch, caplog):
    monkeypatch.setenv("DUNMAIL_TEST_SMTP_PASSWORD", "wrong-password")
    transport = make_smtp(username="alice", password_env="DUNMAIL_TEST_SMTP_PASSWORD")

    with pytest.raises(PermanentDeliveryError) as caught:
        await transport.send(build_message(), sender=SENDER, recipients=[GOOD])

    assert caught.value.code == 535
    assert "wrong-password" not in str(caught.value)
    assert "wrong-password" not in caplog.text
    assert "MAIL" not in smtpd.commands


async def test_unset_password_variable_is_a_config_error(make_smtp, monkeypatch):
    monkeypatch.delenv("DUNMAIL_TEST_SMTP_PASSWORD", raising=False)
    transport = make_smtp(username="alice", password_env="DUNMAIL_TEST_SMTP_PASSWORD")

    with pytest.raises(ConfigError, match="DUNMAIL_TEST_SMTP_PASSWORD"):
        await transport.send(build_message(), sender=SENDER, recipients=[GOOD])


async def test_server_without_auth_is_refused(smtpd: RecordingServer, make_smtp, monkeypatch):
    monkeypatch.setenv("DUNMAIL_TEST_SMTP_PASSWORD", PASSWORD)
    transport = make_smtp(username="alice", password_env="DUNMAIL_TEST_SMTP_PASSWORD")

    with pytest.raises(PermanentDeliveryError, match="does not offer AUTH"):
        await transport.send(build_message(), sender=SENDER, recipients=[GOOD])


@pytest.mark.smtpd_options(oauth={"alice@tenant.test": "ya29.token"})
@pytest.mark.parametrize("auth", ["xoauth2", "auto"])
async def test_xoauth2(smtpd: RecordingServer, make_smtp, monkeypatch, caplog, auth: str):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("DUNMAIL_TEST_OAUTH", "ya29.token")
    transport = make_smtp(
        username="alice@tenant.test", oauth_token_env="DUNMAIL_TEST_OAUTH", auth=auth
    )

    assert (await transport.send(build_message(), sender=SENDER, recipients=[GOOD])).code == 250
    assert smtpd.logins == ["alice@tenant.test"]
    assert "ya29.token" not in caplog.text


@pytest.mark.smtpd_options(oauth={"alice@tenant.test": "ya29.token"})
async def test_xoauth2_with_a_bad_token_is_permanent(make_smtp, monkeypatch):
    monkeypatch.setenv("DUNMAIL_TEST_OAUTH", "expired")
    transport = make_smtp(username="alice@tenant.test", oauth_token_env="DUNMAIL_TEST_OAUTH")

    with pytest.raises(PermanentDeliveryError) as caught:
        await transport.send(build_message(), sender=SENDER, recipients=[GOOD])

    assert caught.value.code == 535


# --- SMTP: replies and failures ----------------------------------------------------------------


@pytest.mark.smtpd_options(greeting="421 4.3.2 Service not available")
async def test_421_greeting_is_transient(make_smtp):
    with pytest.raises(TransientDeliveryError) as caught:
        await make_smtp().send(build_message(), sender=SENDER, recipients=[GOOD])

    assert (caught.value.code, caught.value.message) == (421, "4.3.2 Service not available")


@pytest.mark.parametrize(
    ("reply", "temporary"),
    [
        ("450 4.2.1 Mailbox busy", True),
        ("451 4.3.0 Local error", True),
        ("452 4.5.3 Too many recipients", True),
        ("550 5.1.1 No such user", False),
        ("553 5.1.3 Bad address syntax", False),
    ],
)
async def test_rcpt_refusal_comes_back_per_recipient(
    smtpd: RecordingServer, make_smtp, reply: str, temporary: bool
):
    smtpd.script(rcpt={LATER: reply})

    result = await make_smtp().send(build_message(), sender=SENDER, recipients=[GOOD, LATER])

    assert result.code == 250
    refused = result.recipients[1]
    assert (refused.address, refused.code, refused.temporary) == (LATER, int(reply[:3]), temporary)
    assert smtpd.envelopes[0].rcpt_tos == (GOOD,)


@pytest.mark.smtpd_options(rcpt="421 4.7.0 Too many connections")
async def test_421_at_rcpt_fails_the_transaction(make_smtp):
    with pytest.raises(TransientDeliveryError) as caught:
        await make_smtp().send(build_message(), sender=SENDER, recipients=[GOOD])

    assert caught.value.code == 421


async def test_all_recipients_refused_skips_data_and_resets(smtpd: RecordingServer, make_smtp):
    smtpd.script(rcpt="550 5.1.1 No such user")

    result = await make_smtp().send(build_message(), sender=SENDER, recipients=[BAD, LATER])

    assert result.code is None
    assert "DATA" not in smtpd.commands
    assert smtpd.commands[-1] == "RSET"


@pytest.mark.parametrize(
    ("stage", "reply", "error"),
    [
        ("mail", "451 4.3.0 Try again", TransientDeliveryError),
        ("mail", "452 4.3.1 Insufficient storage", TransientDeliveryError),
        ("mail", "552 5.3.4 Message too big", PermanentDeliveryError),
        ("mail", "550 5.7.1 Sender blocked", PermanentDeliveryError),
        ("data", "552 5.3.4 Message too big", PermanentDeliveryError),
        ("data", "554 5.7.1 Rejected as spam", PermanentDeliveryError),
        ("data", "451 4.7.1 Greylisted", TransientDeliveryError),
    ],
)
async def test_transaction_replies_raise_by_class(
    smtpd: RecordingServer, make_smtp, stage: str, reply: str, error: type[Exception]
):
    smtpd.script(**{stage: reply})

    with pytest.raises(error) as caught:
        await make_smtp().send(build_message(), sender=SENDER, recipients=[GOOD])

    assert caught.value.code == int(reply[:3])
    assert caught.value.message == reply[4:]
    assert smtpd.envelopes == []


@pytest.mark.parametrize("stage", ["rcpt", "data", "data_end"])
async def test_dropped_connection_is_transient(smtpd: RecordingServer, make_smtp, stage: str):
    smtpd.script(drop=stage)

    with pytest.raises(TransientDeliveryError) as caught:
        await make_smtp().send(build_message(size=20_000), sender=SENDER, recipients=[GOOD])

    assert caught.value.code == 0
    assert "connection lost" in caught.value.message


@pytest.mark.parametrize("stage", ["greeting", "data_end"])
async def test_silent_server_times_out(smtpd: RecordingServer, make_smtp, stage: str):
    smtpd.script(silent=stage)
    transport = make_smtp(timeout_seconds=0.5)

    with pytest.raises(TransientDeliveryError) as caught:
        await transport.send(build_message(), sender=SENDER, recipients=[GOOD])

    assert caught.value.code == 0
    assert "timed out" in caught.value.message


async def test_connection_refused_is_transient():
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = SMTPTransport(SMTPEndpoint(host="127.0.0.1", port=port, timeout_seconds=2))

    with pytest.raises(TransientDeliveryError) as caught:
        await transport.send(build_message(), sender=SENDER, recipients=[GOOD])

    assert caught.value.code == 0
    assert str(port) in caught.value.message
    await transport.close()


async def test_oversize_message_is_refused_before_connecting(smtpd: RecordingServer, make_smtp):
    transport = make_smtp(max_message_bytes=2048)

    with pytest.raises(PermanentDeliveryError) as caught:
        await transport.send(build_message(size=4096), sender=SENDER, recipients=[GOOD])

    assert caught.value.code == 552
    assert smtpd.connections == 0


@pytest.mark.smtpd_options(size_limit=2048)
async def test_message_over_the_servers_size_is_refused_before_mail(
    smtpd: RecordingServer, make_smtp
):
    with pytest.raises(PermanentDeliveryError) as caught:
        await make_smtp().send(build_message(size=4096), sender=SENDER, recipients=[GOOD])

    assert caught.value.code == 552
    assert "MAIL" not in smtpd.commands


async def test_non_ascii_address_needs_smtputf8(smtpd: RecordingServer, make_smtp):
    with pytest.raises(PermanentDeliveryError) as caught:
        await make_smtp().send(build_message(), sender=SENDER, recipients=["jörg@example.test"])

    assert caught.value.code == 553
    assert "MAIL" not in smtpd.commands


# --- the standalone recording server -----------------------------------------------------------


async def test_standalone_server_records_message_ids(tmp_path):
    record = tmp_path / "ids.txt"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.smtpd",
        "--port",
        "0",
        "--print-port",
        "--record",
        str(record),
        cwd=Path(__file__).resolve().parent.parent,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        port = int(await asyncio.wait_for(process.stdout.readline(), timeout=20))
        transport = SMTPTransport(SMTPEndpoint(port=port, local_hostname="client.test"))
        await transport.send(build_message(), sender=SENDER, recipients=[GOOD])
        await transport.close()
        # The 250 only goes out after the line is flushed, so it is already there.
        assert record.read_text() == "<1042.r1@dunmail.test>\n"
    finally:
        process.terminate()
        assert await process.wait() == 0
