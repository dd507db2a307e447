"""The AR inbox: bounces and replies land on their document's thread, on SQLite and PostgreSQL.

The flow is test_bounce_ingest.py's: send an invoice email through the outbox (MemoryTransport),
bounce it with a DSN addressed to its VERP sender, ingest it, then read the thread.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dunmail.app import Services
from dunmail.web.models import User
from mailer.clock import FixedClock
from mailer.db import session_scope
from mailer.errors import MailerError, NotFoundError
from mailer.inbox_models import ThreadStatus
from mailer.outbound.memory import MemoryTransport, SentMail
from tests.conftest import DEMO_DOC, sent_to
from tests.test_bounce_ingest import dsn
from tests.test_cli import dunmail, write_config

HOSTILE = "<script>alert(1)</script> [bold]x[/bold] :smile:"


@pytest.fixture
def env(
    two_tenant_env: tuple[Services, MemoryTransport],
) -> tuple[Services, MemoryTransport]:
    """Two tenants on one database: acme sends INV-1042, beta must never see its thread."""
    return two_tenant_env


async def _sent(services: Services, transport: MemoryTransport) -> SentMail:
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    return sent_to(transport)  # ap@'s copy: its own envelope and VERP return path


def _auto_reply(sent: SentMail) -> bytes:
    """An RFC 3834 out-of-office answer, sent to the Return-Path (the VERP address)."""
    return (
        f"From: AP <ap@globex.example>\r\n"
        f"To: {sent.sender}\r\n"
        f"Subject: Out of office: back on Monday [red]soon[/red]\r\n"
        f"Auto-Submitted: auto-replied\r\n"
        f"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n"
        f"Message-ID: <ooo-1@globex.example>\r\n"
        f"\r\n"
        f"I am away until Monday.\r\n"
    ).encode()


def add_clerk(services: Services, email: str, tenant: str = "acme") -> None:
    """A user of ``tenant``'s inbox, someone a thread may be assigned to (no password: the
    tests that assign never sign in, and hashing one costs tens of milliseconds)."""
    with session_scope(services.engine) as session:
        session.add(
            User(
                tenant_id=services.tenants.id(tenant),
                email=email,
                password_hash="-",
                created_at=services.clock.now(),
            )
        )


def _types(thread: dict[str, object]) -> list[str]:
    timeline = thread["timeline"]
    assert isinstance(timeline, list)
    return [entry["type"] for entry in timeline]


async def test_a_bounce_opens_a_thread_with_a_derived_timeline(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    sent = await _sent(services, transport)
    clock.advance(timedelta(minutes=5))
    assert services.inbound.ingest([("file:b.eml", dsn(sent))]).matched == 1

    (row,) = services.inbox.threads(tenant="acme", status=ThreadStatus.OPEN)
    assert (row["customer"], row["document"], row["status"], row["assignee"]) == (
        "C-1",
        "INV-1042",
        "open",
        None,
    )
    assert row["last_event"] == "INV-1042 to ap@globex.example bounced: userunknown (5.1.1)"
    thread = services.inbox.thread(row["id"], tenant="acme")
    assert _types(thread) == ["sent", "bounce"]
    sent_entry, bounce = thread["timeline"]
    assert "ap@globex.example" in sent_entry["summary"]
    assert bounce["detail"].startswith("550 5.1.1 <ap@globex.example>: Recipient")
    assert (bounce["address"], bounce["status"], bounce["reason"]) == (
        "ap@globex.example",
        "5.1.1",
        "userunknown",
    )
    assert sent_entry["at"] < bounce["at"]

    # Processing again does not add a second thread or a second bounce.
    services.inbound.reprocess()
    assert len(services.inbox.threads(tenant="acme", status=None)) == 1
    assert _types(services.inbox.thread(row["id"], tenant="acme")) == ["sent", "bounce"]

    # At the same instant, inbound mail keeps its arrival order.
    assert services.inbound.ingest([("file:ooo.eml", _auto_reply(sent))]).matched == 1
    assert _types(services.inbox.thread(row["id"], tenant="acme")) == ["sent", "bounce", "reply"]
    (row,) = services.inbox.threads(tenant="acme", status=None)
    assert row["last_event"].startswith("INV-1042: auto-reply from AP <ap@globex.example>")


async def test_resolve_then_a_bounce_or_a_reply_reopens(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    sent = await _sent(services, transport)
    services.inbound.ingest([("file:b.eml", dsn(sent))])
    (row,) = services.inbox.threads(tenant="acme", status=None)
    thread_id = row["id"]

    assert services.inbox.update(thread_id, tenant="acme", status=ThreadStatus.RESOLVED)[
        "status"
    ] == ("resolved")
    assert services.inbox.threads(tenant="acme", status=ThreadStatus.OPEN) == []
    # A reprocess run re-attaches the same bounce: that is not news, the thread stays resolved.
    services.inbound.reprocess()
    assert services.inbox.threads(tenant="acme", status=ThreadStatus.OPEN) == []

    clock.advance(timedelta(hours=1))
    billing = sent_to(transport, "billing@globex.example")  # its own return path
    other = dsn(
        billing, recipient="billing@globex.example", diagnostic="smtp; 550 5.1.1 no such user"
    )
    assert services.inbound.ingest([("file:b2.eml", other)]).matched == 1
    (reopened,) = services.inbox.threads(tenant="acme", status=ThreadStatus.OPEN)
    assert reopened["id"] == thread_id
    assert reopened["last_event"].startswith("INV-1042 to billing@globex.example bounced:")

    services.inbox.update(thread_id, tenant="acme", status=ThreadStatus.RESOLVED)
    clock.advance(timedelta(hours=1))
    assert services.inbound.ingest([("file:ooo.eml", _auto_reply(sent))]).matched == 1
    (again,) = services.inbox.threads(tenant="acme", status=ThreadStatus.OPEN)
    thread = services.inbox.thread(again["id"], tenant="acme")
    # Both contacts bounced and there is no third: chasing pauses, and the thread says so.
    assert _types(thread) == ["sent", "bounce", "bounce", "note", "reply"]
    assert thread["task"] == "fix_contact"
    assert again["last_event"] == (
        "INV-1042: auto-reply from AP <ap@globex.example>: "
        "Out of office: back on Monday [red]soon[/red]"
    )


async def test_notes_and_assignee(env: tuple[Services, MemoryTransport], clock: FixedClock) -> None:
    services, transport = env
    services.inbound.ingest([("file:b.eml", dsn(await _sent(services, transport)))])
    (row,) = services.inbox.threads(tenant="acme", status=None)
    clock.advance(timedelta(minutes=10))
    thread = services.inbox.note(
        row["id"], "called Globex, new AP address coming", tenant="acme", author="mia"
    )
    assert _types(thread) == ["sent", "bounce", "note"]
    note = thread["timeline"][-1]
    assert (note["author"], note["detail"]) == ("mia", "called Globex, new AP address coming")
    add_clerk(services, "mia@acme.example")
    mia = services.inbox.update(row["id"], tenant="acme", assignee=" MIA@acme.example ")
    assert mia["assignee"] == "mia@acme.example"
    (listed,) = services.inbox.threads(tenant="acme", status=ThreadStatus.OPEN)
    assert listed["assignee"] == "mia@acme.example"
    # A note is not an event: the line still shows the bounce.
    assert "bounced" in listed["last_event"]


async def test_another_tenant_cannot_see_or_touch_the_thread(
    env: tuple[Services, MemoryTransport],
) -> None:
    services, transport = env
    services.inbound.ingest([("file:b.eml", dsn(await _sent(services, transport)))])
    (row,) = services.inbox.threads(tenant="acme", status=None)
    assert services.inbox.threads(tenant="beta", status=None) == []
    with pytest.raises(NotFoundError, match=f"no thread {row['id']}"):
        services.inbox.thread(row["id"], tenant="beta")
    with pytest.raises(NotFoundError):
        services.inbox.note(row["id"], "x", tenant="beta", author="eve")
    with pytest.raises(NotFoundError):
        services.inbox.update(row["id"], tenant="beta", status=ThreadStatus.RESOLVED)
    with pytest.raises(NotFoundError):
        await services.inbox.resend(row["id"], tenant="beta", by="eve")
    # Suppression lists are per tenant: beta neither sees nor lifts acme's block.
    assert services.suppressions.blocked(tenant="beta") == []
    with pytest.raises(NotFoundError):
        services.suppressions.unblock("ap@globex.example", tenant="beta", by="eve", why="x")
    assert [r["address"] for r in services.suppressions.blocked(tenant="acme")] == [
        "ap@globex.example"
    ]
    assert (
        services.suppressions.bounce_report(tenant="beta", since=datetime(2026, 1, 1, tzinfo=UTC))
        == []
    )
    assert services.inbox.thread(row["id"], tenant="acme")["status"] == "open"


async def test_an_unmatched_bounce_is_listed_and_has_no_thread(
    env: tuple[Services, MemoryTransport],
) -> None:
    services, transport = env
    sent = await _sent(services, transport)
    local, _, domain = sent.sender.partition("@")
    prefix, _, mac = local.rpartition("-")
    forged = dsn(sent, envelope_to=f"{prefix}-{'a' * len(mac)}@{domain}")
    assert services.inbound.ingest([("file:forged.eml", forged)]).unmatched == 1
    assert services.inbox.threads(tenant="acme", status=None) == []
    (row,) = services.inbox.unmatched()
    assert (row["kind"], row["source"]) == ("bounce", "file:forged.eml")
    assert row["subject"] == "Undelivered Mail Returned to Sender"
    assert "VERP" in row["why"]


async def test_cli_shows_mail_text_verbatim(
    relay_env: tuple[Services, MemoryTransport], tmp_path: Path, db_url: str
) -> None:
    services, transport = relay_env
    try:
        sent = await _sent(services, transport)
        # "User unknown" with 5.1.1: unambiguous, so suppressed and no review holds the thread open.
        said = f"550 5.1.1 <ap@globex.example>: User unknown {HOSTILE}"
        hostile = dsn(sent, diagnostic=f"smtp; {said}")
        assert services.inbound.ingest([("file:b.eml", hostile)]).matched == 1
        add_clerk(services, "mia@acme.example")
    finally:
        await services.close()
    config = write_config(tmp_path, db_url, 2525)

    listed = dunmail(config, "inbox", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["last_event"].startswith("INV-1042 to ap@globex.example bounced: ")

    shown = dunmail(config, "inbox", "show", str(row["id"]), "--json")
    assert shown.returncode == 0, shown.stderr
    bounce = json.loads(shown.stdout)["timeline"][-1]
    assert bounce["detail"] == f"550 5.1.1 <ap@globex.example>: User unknown {HOSTILE}"

    text = dunmail(config, "inbox", "show", str(row["id"]))
    assert text.returncode == 0, text.stderr
    assert HOSTILE in text.stdout  # not styled, not swallowed as markup, no emoji
    assert "New invoice to ap@globex.example: bounced: address does not exist" in text.stdout

    table = dunmail(config, "inbox")
    assert table.returncode == 0, table.stderr
    assert "New invoice to ap@globex.example: bounced: address does not exist" in table.stdout
    assert "C-1" in table.stdout and "open" in table.stdout
    replied = dunmail(config, "inbox", "--only", "replied", "--limit", "5", "--json")
    assert replied.returncode == 0, replied.stderr
    assert json.loads(replied.stdout) == []  # the filter ran: this thread is a bounce's

    for args in (
        ("inbox", "note", str(row["id"]), "[red]call[/red] them"),
        ("inbox", "assign", str(row["id"]), "mia@acme.example"),
        ("inbox", "resolve", str(row["id"])),
    ):
        result = dunmail(config, *args)
        assert result.returncode == 0, result.stderr
    assert dunmail(config, "inbox").stdout.strip() == "no open threads"
    resolved = dunmail(config, "inbox", "--status", "resolved")
    assert "mia" in resolved.stdout and "resolved" in resolved.stdout
    shown = dunmail(config, "inbox", "show", str(row["id"]))
    assert "note by " in shown.stdout and "[red]call[/red] them" in shown.stdout

    missing = dunmail(config, "inbox", "show", "999")
    assert missing.returncode == 2
    assert "no thread 999" in missing.stderr

    unmatched = dunmail(config, "inbox", "unmatched", "--json")
    assert unmatched.returncode == 0 and json.loads(unmatched.stdout) == []


async def _three_threads(
    services: Services, transport: MemoryTransport, clock: FixedClock
) -> dict[str, int]:
    """INV-1 bounced, INV-2 answered by an autoresponder, INV-3 only delayed; newest last."""
    doc = copy.deepcopy(DEMO_DOC)
    template = doc["invoices"][0]
    doc["invoices"] = [{**template, "id": f"i-{n}", "number": f"INV-{n}"} for n in (1, 2, 3)]
    assert services.ledger.import_document(doc, tenant="acme").errors == []

    def delayed(sent: SentMail) -> bytes:
        return dsn(
            sent, recipient=sent.recipients[0], action="delayed", status="4.4.1", diagnostic=""
        )

    reports: dict[str, Callable[[SentMail], bytes]] = {
        "INV-1": dsn,
        "INV-2": _auto_reply,
        "INV-3": delayed,
    }
    for number, report in reports.items():
        await services.sending.send_invoice(number, kind="new_invoice", tenant="acme")
        clock.advance(timedelta(minutes=1))
        # ap@'s copy (one envelope per recipient); once ap@ bounced, the later emails go to
        # billing@ only, and their reports come back to billing@'s return path.
        sent = sent_to(transport) if number == "INV-1" else transport.sent[-1]
        assert services.inbound.ingest([(f"file:{number}.eml", report(sent))]).matched
    return {r["document"]: r["id"] for r in services.inbox.threads(tenant="acme", status=None)}


async def test_filters_run_in_sql_and_agree_with_the_timelines(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    ids = await _three_threads(services, transport, clock)
    assert list(ids) == ["INV-3", "INV-2", "INV-1"]

    def listed(only: str) -> list[str]:
        return [
            r["document"] for r in services.inbox.threads(tenant="acme", status=None, only=only)
        ]

    assert listed("bounced") == ["INV-1"]
    assert listed("replied") == ["INV-2"]
    assert listed("fix_contact") == []  # INV-1's billing contact is still there
    for document, thread_id in ids.items():
        types = set(_types(services.inbox.thread(thread_id, tenant="acme")))
        assert ("bounce" in types) == (document in listed("bounced"))
        assert ("reply" in types) == (document in listed("replied"))
    assert services.inbox.threads(tenant="beta", status=None, only="bounced") == []
    with pytest.raises(MailerError, match="unknown thread filter"):
        services.inbox.threads(tenant="acme", status=None, only="everything")


async def test_threads_page_by_cursor_newest_first(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    await _three_threads(services, transport, clock)
    seen: list[str] = []
    cursor = None
    while True:
        page = services.inbox.threads(tenant="acme", status=None, limit=2, before=cursor)
        if not page:
            break
        assert len(page) <= 2
        seen += [r["document"] for r in page]
        cursor = page[-1]["cursor"]
    assert seen == ["INV-3", "INV-2", "INV-1"]
    for bad in ("yesterday~1", "2026-03-01T10:00:00~x", "2026-03-01T10:00:00~1", "~"):
        with pytest.raises(MailerError, match="cursor"):
            services.inbox.threads(tenant="acme", status=None, before=bad)
