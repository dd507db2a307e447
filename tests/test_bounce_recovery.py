"""What the engine does after a bounce: suppression periods, unblocking, the next contact,
paused escalation and the clerk's resend, replies threaded by In-Reply-To, the bounce report.

Every test sends through the real outbox and ingests DSNs built as an MTA builds them, on SQLite
and PostgreSQL.
"""

from __future__ import annotations

import copy
import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from bounce.reporting import to_csv
from dunmail.app import Services
from mailer.clock import FixedClock
from mailer.errors import MailerError, NotFoundError
from mailer.ledger.contacts import KeptCorrection
from mailer.ledger.imports import ImportReport
from mailer.ledger.models import Contact, Hold, HoldReason
from mailer.outbound.memory import MemoryTransport, SentMail
from mailer.outbound.models import Message
from tests.conftest import DEMO_DOC
from tests.test_bounce_ingest import _sent, dsn
from tests.test_cli import Sink, dunmail, start_sink, write_config

SOFT = {"status": "4.2.2", "diagnostic": "smtp; 452 4.2.2 <ap@globex.example>: Mailbox full"}
# A final failure after the queue lifetime ran out: a 4.x.x status on Action: failed.
EXPIRED = {"status": "4.4.7", "diagnostic": "X-Postfix; delivery temporarily suspended"}


def _only_ap(services: Services) -> None:
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"][0]["contacts"] = [
        {"email": "ap@globex.example", "name": "AP", "roles": ["ap"]}
    ]
    assert services.ledger.import_document(doc, tenant="acme").errors == []


def _holds(services: Services) -> list[Hold]:
    with Session(services.engine) as session:
        return list(
            session.exec(select(Hold).where(Hold.reason == HoldReason.CONTACT_BOUNCED)).all()
        )


async def test_repeated_soft_bounces_suppress_for_a_period_then_the_block_ends(
    relay_env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    delayed = dsn(sent, action="delayed", status="4.4.1", diagnostic="smtp; 421 4.4.1 timeout")
    assert services.inbound.ingest([("file:d.eml", delayed)]).suppressed == []
    for n in range(2):
        clock.advance(timedelta(days=1))
        bounce = dsn(sent, **SOFT).replace(b"ABC123", f"SOFT{n}".encode())
        assert services.inbound.ingest([(f"file:s{n}.eml", bounce)]).suppressed == []
    clock.advance(timedelta(days=1))
    third = dsn(sent, action="failed", **EXPIRED)
    assert services.inbound.ingest([("file:s3.eml", third)]).suppressed == ["ap@globex.example"]
    (row,) = services.suppressions.blocked(tenant="acme")
    assert row["kind"] == "soft"
    assert row["reason"].startswith("3 soft bounces in 7 days")
    assert row["expires_at"] == (clock.now() + timedelta(days=14)).isoformat()

    clock.advance(timedelta(days=14, seconds=1))
    assert services.suppressions.blocked(tenant="acme") == []
    assert services.suppressions.blocked(tenant="acme", everything=True)[0]["active"] is False


async def test_soft_bounces_spread_beyond_the_window_do_not_suppress(
    relay_env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    for n in range(3):
        bounce = dsn(sent, **SOFT).replace(b"ABC123", f"SOFT{n}".encode())
        assert services.inbound.ingest([(f"file:s{n}.eml", bounce)]).suppressed == []
        clock.advance(timedelta(days=4))


async def test_unblock_records_who_when_and_why_and_a_new_bounce_blocks_again(
    relay_env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    services.inbound.ingest([("file:b.eml", dsn(sent))])
    with pytest.raises(MailerError, match="who"):
        services.suppressions.unblock("ap@globex.example", tenant="acme", by="", why="fixed")
    with pytest.raises(NotFoundError):
        services.suppressions.unblock("billing@globex.example", tenant="acme", by="ana", why="x")

    clock.advance(timedelta(hours=2))
    services.suppressions.unblock(
        "AP@globex.example", tenant="acme", by="ana", why="mailbox recreated"
    )
    assert services.suppressions.blocked(tenant="acme") == []
    (row,) = services.suppressions.blocked(tenant="acme", everything=True)
    assert (row["lifted_by"], row["lift_reason"]) == ("ana", "mailbox recreated")
    assert row["lifted_at"] == clock.now().isoformat()

    clock.advance(timedelta(hours=1))
    again = dsn(sent).replace(b"ABC123", b"AGAIN1")
    assert services.inbound.ingest([("file:b2.eml", again)]).suppressed == ["ap@globex.example"]
    (row,) = services.suppressions.blocked(tenant="acme")
    assert row["lifted_at"] is None and row["kind"] == "hard"


async def test_a_bounce_for_every_recipient_goes_to_the_next_contact_by_role(
    relay_env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = relay_env
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"][0]["contacts"] = [
        {"email": "ap@globex.example", "roles": ["ap"]},
        {"email": "owner@globex.example", "roles": ["primary"], "send_invoices": False},
        {"email": "books@globex.example", "roles": ["accountant"], "send_invoices": False},
    ]
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    sent = await _sent(services, transport)
    assert sent.recipients == ("ap@globex.example",)

    summary = services.inbound.ingest([("file:b.eml", dsn(sent))])
    assert summary.rerouted == ["books@globex.example"]
    await services.sending.deliver()
    assert transport.sent[-1].recipients == ("books@globex.example",)
    assert b"INV-1042" in transport.sent[-1].data
    # Reprocessing the same bounce does not send a third copy.
    services.inbound.reprocess()
    await services.sending.deliver()
    assert len(transport.sent) == 2
    (row,) = services.inbox.threads(tenant="acme", status=None)
    thread = services.inbox.thread(row["id"], tenant="acme")
    assert any("sent to books@globex.example instead" in e["summary"] for e in thread["timeline"])
    assert thread["task"] is None and _holds(services) == []


async def test_one_recipient_of_two_bouncing_changes_nothing_for_the_step(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)  # to ap and billing; only ap bounces
    summary = services.inbound.ingest([("file:b.eml", dsn(sent))])
    assert (summary.rerouted, summary.paused) == ([], 0)
    assert _holds(services) == []
    (row,) = services.desk.outbox_rows()
    statuses = {r["address"]: r["status"] for r in row["recipients"]}
    assert statuses == {"ap@globex.example": "bounced", "billing@globex.example": "accepted"}


async def test_no_contact_left_pauses_chasing_until_the_contact_is_fixed_and_resent(
    relay_env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = relay_env
    _only_ap(services)
    sent = await _sent(services, transport)
    summary = services.inbound.ingest([("file:b.eml", dsn(sent))])
    assert summary.paused == 1
    (hold,) = _holds(services)
    assert hold.lifted_at is None and hold.invoice_id is None
    (row,) = services.inbox.threads(tenant="acme", status=None)
    assert row["task"] == "fix_contact"
    with pytest.raises(MailerError, match="no contact that is not suppressed"):
        await services.inbox.resend(row["id"], tenant="acme", by="ana")

    # Past the due date nothing goes out: the reminder would land in the same dead mailbox.
    clock.set(datetime(2026, 4, 1, 8, tzinfo=UTC))
    await services.dunning.tick()
    assert len(transport.sent) == 1
    plan = services.dunning.plan(tenant="acme", everything=True)
    assert "hold" in plan[0].reason

    # The clerk corrects the address in the ERP; the import replaces the contacts.
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"][0]["contacts"] = [
        {"email": "payables@globex.example", "name": "AP", "roles": ["ap"]}
    ]
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    message, addresses = await services.inbox.resend(row["id"], tenant="acme", by="ana")
    assert addresses == ["payables@globex.example"]
    assert message.status.value == "sent" and message.manual
    assert transport.sent[-1].recipients == ("payables@globex.example",)
    assert transport.sent[-1].data.count(b"INV-1042") >= 1
    assert all(h.lifted_at is not None for h in _holds(services))
    thread = services.inbox.thread(row["id"], tenant="acme")
    assert thread["task"] is None
    assert thread["timeline"][-1]["type"] in {"sent", "note"}
    assert any(e["summary"].startswith("note by ana: resent") for e in thread["timeline"])

    # Chasing resumes: the reminder that was held now goes to the corrected contact.
    clock.advance(timedelta(minutes=1))
    await services.dunning.tick()
    assert transport.sent[-1].recipients == ("payables@globex.example",)
    assert len(transport.sent) == 3
    # A second resend is a new email, not a no-op on the first one's key.
    second, _ = await services.inbox.resend(row["id"], tenant="acme", by="ana")
    assert second.id != message.id


def _contacts(services: Services) -> list[tuple[str, str | None, str | None]]:
    with Session(services.engine) as session:
        rows = session.exec(select(Contact).order_by(col(Contact.email))).all()
        return [(c.email, c.erp_email, c.corrected_by) for c in rows]


def _erp_lists(services: Services, *emails: str) -> ImportReport:
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"][0]["contacts"] = [{"email": e, "name": "AP", "roles": ["ap"]} for e in emails]
    report = services.ledger.import_document(doc, tenant="acme")
    assert report.errors == []
    return report


async def test_a_contact_fixed_in_the_inbox_survives_imports_until_the_erp_is_fixed(
    relay_env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    """The ERP is the source of truth, but an import that still lists the bounced address must
    not undo the clerk's fix: the correction stands in for it, and the report says so."""
    services, transport = relay_env
    _only_ap(services)
    sent = await _sent(services, transport)
    services.inbound.ingest([("file:b.eml", dsn(sent))])
    (row,) = services.inbox.threads(tenant="acme", status=None)
    fixed = services.inbox.fix_contact(
        row["id"], tenant="acme", old="ap@globex.example", new=" payables@globex.example", by="ana"
    )
    assert fixed == "payables@globex.example"
    assert _contacts(services) == [("payables@globex.example", "ap@globex.example", "ana")]
    about = services.inbox.context(row["id"], tenant="acme")
    assert [c["erp_email"] for c in about["contacts"]] == ["ap@globex.example"]

    # The ERP still says ap@: the fix is kept, the import reports it, and the held reminder
    # goes to the corrected address.
    report = _erp_lists(services, "ap@globex.example")
    assert report.corrections_kept == [
        KeptCorrection("C-1", "ap@globex.example", "payables@globex.example")
    ]
    assert "1 contact correction kept over the ERP's address" in report.summary()
    assert report.as_dict()["corrections_kept"] == [
        {"customer": "C-1", "erp_email": "ap@globex.example", "email": "payables@globex.example"}
    ]
    assert _contacts(services) == [("payables@globex.example", "ap@globex.example", "ana")]
    message, addresses = await services.inbox.resend(row["id"], tenant="acme", by="ana")
    assert addresses == ["payables@globex.example"] and message.status.value == "sent"

    # The ERP catches up: the same row, no longer standing in for anything.
    assert _erp_lists(services, "payables@globex.example").corrections_kept == []
    assert _contacts(services) == [("payables@globex.example", None, None)]


async def test_an_erp_that_changes_the_contact_itself_replaces_the_correction(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    services, transport = relay_env
    _only_ap(services)
    services.inbound.ingest([("file:b.eml", dsn(await _sent(services, transport)))])
    (row,) = services.inbox.threads(tenant="acme", status=None)
    services.inbox.fix_contact(
        row["id"], tenant="acme", old="ap@globex.example", new="payables@globex.example", by="ana"
    )
    # Correcting the correction keeps the ERP's original address; back to it, nothing stands in.
    services.inbox.fix_contact(
        row["id"], tenant="acme", old="payables@globex.example", new="ap2@globex.example", by="bo"
    )
    assert _contacts(services) == [("ap2@globex.example", "ap@globex.example", "bo")]
    services.inbox.fix_contact(
        row["id"], tenant="acme", old="ap2@globex.example", new="ap@globex.example", by="bo"
    )
    assert _contacts(services) == [("ap@globex.example", None, None)]
    services.inbox.fix_contact(
        row["id"], tenant="acme", old="ap@globex.example", new="payables@globex.example", by="ana"
    )
    # The ERP now lists someone else: that is news from the source of truth, and it wins.
    report = _erp_lists(services, "finance@globex.example")
    assert report.corrections_kept == []
    assert _contacts(services) == [("finance@globex.example", None, None)]
    # Listing both the old and the corrected address: each is its own contact.
    services.inbox.fix_contact(
        row["id"], tenant="acme", old="finance@globex.example", new="fin@globex.example", by="ana"
    )
    report = _erp_lists(services, "finance@globex.example", "fin@globex.example")
    assert report.corrections_kept == []
    assert _contacts(services) == [
        ("fin@globex.example", None, None),
        ("finance@globex.example", None, None),
    ]


def _reply(sent: SentMail, *, in_reply_to: str, html: bool = False) -> bytes:
    body = (
        "Content-Type: text/html; charset=utf-8\r\n\r\n<p>We paid <b>yesterday</b>"
        "<script>alert(1)</script></p>\r\n"
        if html
        else "Content-Type: text/plain; charset=utf-8\r\n\r\nWe paid yesterday, see remittance.\r\n"
    )
    return (
        "From: Pat <ap@globex.example>\r\n"
        "To: ar@acme.example\r\n"
        "Subject: Re: Invoice INV-1042\r\n"
        "Date: Tue, 03 Mar 2026 10:00:00 +0000\r\n"
        "Message-ID: <reply-1@globex.example>\r\n"
        f"In-Reply-To: {in_reply_to}\r\n"
        f"References: <older@globex.example> {in_reply_to}\r\n"
        "MIME-Version: 1.0\r\n" + body
    ).encode()


@pytest.mark.parametrize("html", [False, True])
async def test_a_persons_reply_threads_in_by_in_reply_to_and_suppresses_nothing(
    relay_env: tuple[Services, MemoryTransport], html: bool
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    message_id = next(
        line.split(b":", 1)[1].strip().decode()
        for line in sent.data.split(b"\r\n")
        if line.lower().startswith(b"message-id:")
    )
    summary = services.inbound.ingest([("file:r.eml", _reply(sent, in_reply_to=message_id))])
    assert (summary.matched, summary.suppressed) == (1, [])
    (row,) = services.inbox.threads(tenant="acme", status=None)
    reply = services.inbox.thread(row["id"], tenant="acme")["timeline"][-1]
    assert reply["type"] == "reply"
    assert reply["summary"] == "INV-1042: reply from Pat <ap@globex.example>: Re: Invoice INV-1042"
    assert "paid" in reply["detail"] and "yesterday" in reply["detail"]
    assert "<script>" not in reply["detail"] and "<b>" not in reply["detail"]


async def test_a_reply_to_mail_that_is_not_ours_is_unmatched(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    raw = _reply(sent, in_reply_to="<0123456789abcdef0123@elsewhere.example>")
    assert services.inbound.ingest([("file:r.eml", raw)]).unmatched == 1
    assert services.inbox.threads(tenant="acme", status=None) == []


async def test_bounce_report_lists_bounces_and_complaints_since_a_date(
    relay_env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    clock.advance(timedelta(hours=1))
    poisoned = 'smtp; 550 5.1.1 =HYPERLINK("http://x") user unknown'
    services.inbound.ingest([("file:b.eml", dsn(sent, diagnostic=poisoned))])
    delayed = dsn(sent, action="delayed", status="4.4.1", diagnostic="smtp; 421 4.4.1 timeout")
    services.inbound.ingest([("file:d.eml", delayed.replace(b"ABC123", b"DELAY1"))])

    rows = services.suppressions.bounce_report(
        tenant="acme", since=clock.now() - timedelta(minutes=5)
    )
    found = [(r["document"], r["address"], r["event"], r["hard"], r["suppressed"]) for r in rows]
    assert found == [("INV-1042", "ap@globex.example", "bounce", True, True)]
    assert rows[0]["reason"] == "userunknown" and rows[0]["status"] == "5.1.1"
    assert (
        services.suppressions.bounce_report(tenant="acme", since=clock.now() + timedelta(minutes=1))
        == []
    )

    parsed = list(csv.DictReader(io.StringIO(to_csv([{**rows[0], "diagnostic": "=cmd"}]))))
    assert parsed[0]["diagnostic"] == "'=cmd"
    assert parsed[0]["address"] == "ap@globex.example"


async def test_every_message_of_a_rerouted_step_keeps_its_occasion(
    relay_env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = relay_env
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"][0]["contacts"].append(
        {"email": "books@globex.example", "roles": ["accountant"], "send_invoices": False}
    )
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    sent = await _sent(services, transport)
    both = dsn(sent) + b""
    services.inbound.ingest([("file:b1.eml", both)])
    # billing@'s own copy, returned to its own VERP address (one envelope per recipient).
    billing = next(m for m in transport.sent if m.recipients == ("billing@globex.example",))
    other = dsn(
        billing, recipient="billing@globex.example", diagnostic="smtp; 550 5.1.1 no such user"
    )
    summary = services.inbound.ingest([("file:b2.eml", other.replace(b"ABC123", b"OTHER1"))])
    assert summary.rerouted == ["books@globex.example"]
    with Session(services.engine) as session:
        occasions = session.exec(select(Message.occasion).order_by(col(Message.id))).all()
    assert occasions == ["new", "new"]


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    server = start_sink(tmp_path)
    yield server
    server.stop()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_cli_suppressions_bounce_report_and_resend(
    services: Services, transport: MemoryTransport, tmp_path: Path, db_url: str, sink: Sink
) -> None:
    """The commands an AR clerk runs, as processes, on SQLite (the services beneath them run
    on both databases above)."""
    try:
        _only_ap(services)
        sent = await _sent(services, transport)
        services.inbound.ingest([("file:b.eml", dsn(sent))])
    finally:
        await services.close()
    config = write_config(tmp_path, db_url, sink.port)

    listed = dunmail(config, "suppressions", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["address"] for r in json.loads(listed.stdout)] == ["ap@globex.example"]

    report = dunmail(config, "bounce", "report", "--since", "2026-03-01", "--csv")
    assert report.returncode == 0, report.stderr
    (row,) = csv.DictReader(io.StringIO(report.stdout))
    assert (row["document"], row["address"], row["reason"]) == (
        "INV-1042",
        "ap@globex.example",
        "userunknown",
    )
    text = dunmail(config, "bounce", "report", "--since", "2026-03-01")
    assert "INV-1042 to ap@globex.example bounced: address does not exist (5.1.1)" in text.stdout
    assert "1 bounces and complaints since" in text.stdout

    (thread,) = json.loads(dunmail(config, "inbox", "--json").stdout)
    assert thread["task"] == "fix_contact"
    refused = dunmail(config, "inbox", "resend", str(thread["id"]))
    assert refused.returncode == 2 and "no contact that is not suppressed" in refused.stderr

    bad = dunmail(config, "suppressions", "unblock", "ap@globex.example", "--reason", " ")
    assert bad.returncode == 2, bad.stderr
    ok = dunmail(
        config, "suppressions", "unblock", "ap@globex.example", "--reason", "typo", "--by", "ana"
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(dunmail(config, "suppressions", "--json").stdout) == []

    resent = dunmail(config, "inbox", "resend", str(thread["id"]), "--by", "ana")
    assert resent.returncode == 0, resent.stderr
    assert "resent to ap@globex.example (sent)" in resent.stdout
    assert len(sink.accepted()) == 1


async def test_an_expired_email_does_not_pause_chasing_as_if_the_contact_were_wrong(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    services, transport = relay_env
    _only_ap(services)
    sent = await _sent(services, transport)
    summary = services.inbound.ingest([("file:x.eml", dsn(sent, action="failed", **EXPIRED))])
    assert (summary.rerouted, summary.paused, summary.suppressed) == ([], 0, [])
    assert _holds(services) == []
    (row,) = services.inbox.threads(tenant="acme", status=None)
    assert row["task"] is None
    notes = [
        e
        for e in services.inbox.thread(row["id"], tenant="acme")["timeline"]
        if e["type"] == "note"
    ]
    assert [n["detail"] for n in notes] == [
        "new_invoice could not be delivered (a temporary failure that lasted); "
        "the next step will try again"
    ]
