"""IMAP polling against a real, private Dovecot on loopback (tests/dovecot.py).

Bounces of emails the engine really sent are put into a tenant's mailbox, polled, stored before
they are marked on the server, matched, and never fetched twice; on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from bounce.imap import STORED_KEYWORD, MailboxError, poll_mailbox
from dunmail.app import Services
from dunmail.runner import mailbox_ticks
from mailer.config import IMAPConfig
from mailer.errors import ConfigError
from mailer.inbox_models import InboundMail, InboundStatus
from mailer.outbound.memory import MemoryTransport, SentMail
from tests.conftest import DEMO_DOC
from tests.dovecot import PASSWORD, DovecotServer, dovecot  # noqa: F401  (the fixture)
from tests.test_bounce_ingest import dsn
from tests.test_cli import dunmail, write_config

PASSWORD_ENV = "DUNMAIL_TEST_IMAP_PASSWORD"
ORDINARY = (
    b"From: Jane <jane@globex.example>\r\nTo: ar@acme.example\r\nSubject: Question about "
    b"INV-1042\r\nMessage-ID: <q1@globex.example>\r\n\r\nCan you send a copy?\r\n"
)


def _imap(server: DovecotServer, user: str, **extra: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": server.port,
        "tls": "none",
        "username": user,
        "password_env": PASSWORD_ENV,
        **extra,
    }


def _tenant(tmp_path: Path, imap: dict[str, Any]) -> dict[str, Any]:
    return {
        "acme": {
            "name": "Acme Supplies",
            "email": "ar@acme.example",
            "dkim": [
                {
                    "domain": "acme.example",
                    "selector": "s1",
                    "key_file": str(tmp_path / "keys" / "s1.pem"),
                }
            ],
            "imap": imap,
        }
    }


Settings = Callable[[DovecotServer], dict[str, Any]]


@pytest.fixture
def user(dovecot: DovecotServer) -> str:  # noqa: F811
    """A mailbox nobody has used yet on ``dovecot``."""
    return dovecot.user()


@pytest.fixture
def imap(request: pytest.FixtureRequest) -> dict[str, Any]:
    """acme's ``[tenants.acme.imap]``: ``user``'s mailbox on ``dovecot``, with the settings a
    test parametrizes indirectly (a function of the server); or, given None, a closed port on
    loopback and no server at all."""
    extra: Settings | None = getattr(request, "param", lambda _: {})
    if extra is None:
        # Port 9 on loopback (discard) is closed here: the connection is refused at once.
        return {
            "host": "127.0.0.1",
            "port": 9,
            "tls": "none",
            "username": "u",
            "password_env": PASSWORD_ENV,
        }
    server: DovecotServer = request.getfixturevalue("dovecot")
    return _imap(server, request.getfixturevalue("user"), **extra(server))


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every record captured, formatted as ``caplog.text`` formats them, those of set-up (where
    the shared ``services`` are built) included: ``caplog.text`` has the test's call alone."""
    records = [*caplog.get_records("setup"), *caplog.records]
    return "\n".join(caplog.handler.format(r) for r in records)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record captured from before the services are built (ask for it first)."""
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.fixture
def services_config(
    tmp_path: Path, imap: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """This module's shared ``services``: a tenant whose mailbox is ``imap``."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    return {"tenants": _tenant(tmp_path, imap)}


@pytest.fixture
def services(services: Services) -> Services:
    """conftest's ``services`` on this module's settings, with DEMO_DOC imported."""
    assert services.ledger.import_document(DEMO_DOC, tenant="acme").errors == []
    return services


async def _two_bounces(services: Services) -> list[bytes]:
    transport = services.transports[0]
    assert isinstance(transport, MemoryTransport)
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    await services.sending.send_invoice("INV-1042", kind="invoice_reminder", tenant="acme")
    sent: list[SentMail] = transport.sent
    assert len(sent) == 4  # two emails, one envelope (and VERP return path) per recipient
    first = next(m for m in sent[:2] if m.recipients == ("ap@globex.example",))
    second = next(m for m in sent[2:] if m.recipients == ("billing@globex.example",))
    return [dsn(first), dsn(second, recipient="billing@globex.example")]


def _inbound(services: Services) -> list[InboundMail]:
    with Session(services.engine) as session:
        return list(session.exec(select(InboundMail).order_by(col(InboundMail.id))).all())


async def test_poll_stores_matches_and_flags_then_fetches_nothing_twice(
    dovecot: DovecotServer,  # noqa: F811
    user: str,
    services: Services,
) -> None:
    dovecot.append(user, *await _two_bounces(services), ORDINARY)

    summary, failed = services.inbound.poll_mailboxes(tenant="acme")

    assert failed == {}
    assert (summary.stored, summary.matched, summary.unmatched) == (3, 2, 1)
    assert sorted(summary.suppressed) == ["ap@globex.example", "billing@globex.example"]
    rows = _inbound(services)
    assert [r.status for r in rows] == [
        InboundStatus.PROCESSED,
        InboundStatus.PROCESSED,
        InboundStatus.UNMATCHED,
    ]
    assert all(r.source.startswith("imap:acme/INBOX/") for r in rows)
    assert [r.source.rsplit(":", 1)[1] for r in rows] == ["1", "2", "3"]
    flags = dovecot.flags(user)
    assert all({"\\Seen", STORED_KEYWORD} <= f for f in flags.values()), flags

    again, failed = services.inbound.poll_mailboxes()
    assert failed == {}
    assert (again.stored, again.duplicates, again.matched) == (0, 0, 0)
    assert len(_inbound(services)) == 3


async def test_a_read_message_is_still_fetched_and_one_not_stored_is_left_for_next_time(
    dovecot: DovecotServer,  # noqa: F811
    user: str,
    services: Services,
) -> None:
    bounces = await _two_bounces(services)
    dovecot.append(user, *bounces)
    # A person opened the first bounce in their mail client: \Seen alone must not hide it.
    conn = dovecot.connect(user)
    conn.select("INBOX")
    conn.uid("STORE", "1", "+FLAGS", "(\\Seen)")
    conn.logout()
    imap = services.config.tenants["acme"].imap
    assert imap is not None

    def flaky(source: str, raw: bytes) -> None:
        # The database refusing one message, as a broken connection would mid-poll.
        if raw == bounces[1]:
            raise OSError("database went away")
        services.inbound.receive(source, raw)

    result = poll_mailbox(imap, tenant="acme", deliver=flaky)

    assert (result.found, result.done, result.failed) == (2, 1, 1)
    flags = dovecot.flags(user)
    assert STORED_KEYWORD in flags[1]
    assert STORED_KEYWORD not in flags[2] and "\\Seen" not in flags[2]
    assert [r.status for r in _inbound(services)] == [InboundStatus.PROCESSED]

    summary = services.inbound.poll_mailbox("acme")  # the next poll picks up the one left behind

    assert (summary.stored, summary.matched) == (1, 1)
    assert STORED_KEYWORD in dovecot.flags(user)[2]
    assert len(_inbound(services)) == 2


async def test_a_crash_after_storing_refetches_and_dedup_keeps_it_once(
    dovecot: DovecotServer,  # noqa: F811
    user: str,
    services: Services,
) -> None:
    dovecot.append(user, ORDINARY)
    # Stored by an earlier poll that died before it could flag the message on the server.
    services.inbound.receive("imap:acme/INBOX/1:1", ORDINARY)

    summary = services.inbound.poll_mailbox("acme")

    assert (summary.stored, summary.duplicates) == (0, 1)
    assert len(_inbound(services)) == 1
    assert STORED_KEYWORD in dovecot.flags(user)[1]


@pytest.mark.parametrize("imap", [lambda _: {"after": "delete"}], indirect=True, ids=["delete"])
async def test_after_delete_removes_stored_messages(
    dovecot: DovecotServer,  # noqa: F811
    user: str,
    services: Services,
) -> None:
    dovecot.append(user, *await _two_bounces(services), ORDINARY)

    summary = services.inbound.poll_mailbox("acme")

    assert (summary.stored, summary.matched) == (3, 2)
    assert dovecot.flags(user) == {}


async def test_the_password_never_reaches_logs_or_errors(
    debug_logs: pytest.LogCaptureFixture,
    dovecot: DovecotServer,  # noqa: F811
    user: str,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog = debug_logs
    dovecot.append(user, ORDINARY)
    assert services.inbound.poll_mailbox("acme").stored == 1

    wrong = PASSWORD + "-wrong"
    monkeypatch.setenv(PASSWORD_ENV, wrong)
    with pytest.raises(MailboxError, match="login refused") as refused:
        services.inbound.poll_mailbox("acme")
    summary, failed = services.inbound.poll_mailboxes()

    assert summary.stored == 0 and set(failed) == {"acme"}
    for secret in (PASSWORD, wrong):
        assert secret not in _logged(caplog)
        assert secret not in str(refused.value)
        assert secret not in failed["acme"]


def _implicit_tls(server: DovecotServer) -> dict[str, Any]:
    return {"tls": "implicit", "port": server.tls_port, "ca_file": str(server.ca_file)}


@pytest.mark.parametrize("imap", [_implicit_tls], indirect=True, ids=["implicit_tls"])
async def test_implicit_tls_verifies_the_server_certificate(
    dovecot: DovecotServer,  # noqa: F811
    user: str,
    imap: dict[str, Any],
    services: Services,
) -> None:
    dovecot.append(user, ORDINARY)

    assert services.inbound.poll_mailbox("acme").stored == 1

    without_ca = {k: v for k, v in imap.items() if k != "ca_file"}
    untrusted = IMAPConfig.model_validate(without_ca)  # the system CAs do not know the test CA
    with pytest.raises(MailboxError, match="CERTIFICATE_VERIFY_FAILED"):
        poll_mailbox(untrusted, tenant="acme", deliver=services.inbound.receive)


@pytest.mark.parametrize("imap", [lambda _: {"poll_seconds": 30}], indirect=True, ids=["30s"])
async def test_the_engine_polls_each_mailbox_on_its_own_tick(
    dovecot: DovecotServer,  # noqa: F811
    user: str,
    services: Services,
) -> None:
    dovecot.append(user, ORDINARY)

    (tick,) = mailbox_ticks(services)
    await tick.run()

    assert (tick.id, tick.every_seconds) == ("imap-acme", 30)
    assert len(_inbound(services)) == 1


@pytest.mark.parametrize("imap", [None], indirect=True, ids=["closed"])
async def test_a_failing_mailbox_tick_logs_and_returns(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    (tick,) = mailbox_ticks(services)

    await tick.run()  # logs; the scheduler tries again next interval

    assert "polling acme failed" in caplog.text
    assert PASSWORD not in _logged(caplog)
    with pytest.raises(ConfigError, match="'nope' has no"):
        services.inbound.poll_mailboxes(tenant="nope")  # bad input, not a mailbox failure


def test_cli_bounce_poll_prints_the_summary(
    dovecot: DovecotServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    user = dovecot.user()
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}", 2525)
    with config.open("a") as handle:
        handle.write(
            f'[tenants.acme.imap]\nhost = "127.0.0.1"\nport = {dovecot.port}\ntls = "none"\n'
            f'username = "{user}"\npassword_env = "{PASSWORD_ENV}"\n'
        )
    dovecot.append(user, ORDINARY)

    result = dunmail(config, "bounce", "poll", "--tenant", "acme", **{PASSWORD_ENV: PASSWORD})

    assert result.returncode == 0, result.stderr
    assert "stored 1, duplicates 0, matched 0, unmatched 1" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr
