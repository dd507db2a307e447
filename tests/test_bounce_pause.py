"""Every kind of return that leaves a customer with no reachable contact pauses its chasing.

A hard bounce, repeated soft bounces, a complaint (RFC 5965 ARF, with the recipient named or
redacted) and a person's block all end in one place (bounce/pause.py::pause_unreachable): a
``contact_bounced`` hold and a ``fix_contact`` task, after which the dunning pass is quiet
about that customer instead of logging "no contact to send to" on every pass. Real outbox,
real returned mail built as the providers build it, SQLite and PostgreSQL.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, select

from dunmail.app import Services
from mailer.clock import FixedClock
from mailer.ledger.models import Hold, HoldReason
from mailer.outbound.memory import MemoryTransport, SentMail
from tests.conftest import DEMO_DOC
from tests.test_bounce_ingest import _sent, dsn

ONLY = "ap@globex.example"
PAST_DUE = datetime(2026, 4, 1, 8, tzinfo=UTC)  # the reminder steps after 31 March are due


def arf(sent: SentMail, *, named: str | None = None, feedback: str = "abuse") -> bytes:
    """A feedback report as Yahoo sends one through a relay's FBL (the corpus's arf-14 layout):
    RFC 5965 multipart/report with the whole original message attached. Providers usually
    redact the complainer (no Original-Rcpt-To); ``named`` puts the address back."""
    rcpt = f"Original-Rcpt-To: {named}\r\n" if named else ""
    return (
        (
            "Return-Path: <no-reply@fbl.relay.example>\r\n"
            "Date: Tue, 03 Mar 2026 10:00:00 +0000\r\n"
            "From: complaints@email-abuse.relay.example\r\n"
            "To: fbl@relay.example\r\n"
            "Message-ID: <fbl-2222@email-abuse.relay.example>\r\n"
            "Subject: Fw: invoice\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: multipart/report; report-type=feedback-report;\r\n"
            '\tboundary="----=_Part_2222"\r\n'
            "\r\n"
            "------=_Part_2222\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n"
            "Content-Transfer-Encoding: 7bit\r\n"
            "\r\n"
            "This is an email abuse report for an email message from relay.example\r\n"
            "\r\n"
            "------=_Part_2222\r\n"
            "Content-Type: message/feedback-report\r\n"
            "Content-Transfer-Encoding: 7bit\r\n"
            "\r\n"
            f"Feedback-Type: {feedback}\r\n"
            "User-Agent: Yahoo!-Mail-Feedback/2.0\r\n"
            "Version: 0.1\r\n"
            f"Original-Mail-From: <{sent.sender}>\r\n"
            f"{rcpt}"
            "Received-Date: Mon, 02 Mar 2026 09:00:00 +0000\r\n"
            "Reported-Domain: acme.example\r\n"
            "\r\n"
            "------=_Part_2222\r\n"
            "Content-Type: message/rfc822\r\n"
            "Content-Disposition: inline\r\n"
            "\r\n"
        ).encode()
        + sent.data.rstrip(b"\r\n")
        + b"\r\n\r\n------=_Part_2222--\r\n"
    )


def _only(services: Services, *emails: str, customer: int = 0) -> None:
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"][customer]["contacts"] = [{"email": e, "roles": ["ap"]} for e in emails]
    assert services.ledger.import_document(doc, tenant="acme").errors == []


def _bounce_holds(services: Services) -> list[Hold]:
    with Session(services.engine) as session:
        rows = session.exec(select(Hold).where(Hold.reason == HoldReason.CONTACT_BOUNCED))
        return [h for h in rows.all() if h.lifted_at is None]


async def test_a_complaint_on_the_only_contact_pauses_chasing_quietly_until_fixed(
    relay_env: tuple[Services, MemoryTransport],
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    services, transport = relay_env
    _only(services, ONLY)
    sent = await _sent(services, transport)
    summary = services.inbound.ingest([("fbl:1", arf(sent))])
    assert (summary.matched, summary.suppressed, summary.paused) == (1, [ONLY], 1)

    (hold,) = _bounce_holds(services)
    assert hold.invoice_id is None and "complaint" in (hold.note or "")
    (task,) = services.inbox.threads(tenant="acme", status=None, only="fix_contact")
    assert (task["document"], task["task"], task["status"]) == ("INV-1042", "fix_contact", "open")
    notes = [
        e["detail"]
        for e in services.inbox.thread(task["id"], tenant="acme")["timeline"]
        if e["type"] == "note"
    ]
    assert any("no contact of the customer can be reached" in n for n in notes)

    # Reminders fall due, a new invoice arrives: nothing goes to the blocked address, and no
    # pass reports or logs "no contact to send to" (the pause is known and in the inbox).
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"][0]["contacts"] = [{"email": ONLY, "roles": ["ap"]}]
    doc["invoices"].append({**doc["invoices"][0], "id": "i-1043", "number": "INV-1043"})
    clock.set(PAST_DUE)
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    caplog.set_level(logging.INFO)
    for day in range(3):
        clock.set(PAST_DUE + timedelta(days=day, minutes=30))
        dunning, _ = await services.dunning.tick()
        assert dunning.errors == []
        # A re-import each morning (the ERP sync) touches the invoices again.
        assert services.ledger.import_document(doc, tenant="acme").errors == []
    assert len(transport.sent) == 1
    assert not [r for r in caplog.records if "no contact" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    # The clerk fixes the contact and resends: the hold lifts and chasing resumes.
    services.inbox.fix_contact(
        task["id"], tenant="acme", old=ONLY, new="payables@globex.example", by="ana"
    )
    message, addresses = await services.inbox.resend(task["id"], tenant="acme", by="ana")
    assert addresses == ["payables@globex.example"] and message.status.value == "sent"
    assert _bounce_holds(services) == []
    assert services.inbox.threads(tenant="acme", status=None, only="fix_contact") == []
    clock.advance(timedelta(minutes=1))
    await services.dunning.tick()
    assert {m.recipients for m in transport.sent[2:]} == {("payables@globex.example",)}
    assert any(b"INV-1043" in m.data for m in transport.sent[2:])


async def _hard(services: Services, sent: SentMail, clock: FixedClock) -> None:
    services.inbound.ingest([("dsn:1", dsn(sent, recipient=ONLY))])


async def _soft_to_the_limit(services: Services, sent: SentMail, clock: FixedClock) -> None:
    full = {"status": "4.2.2", "diagnostic": f"smtp; 452 4.2.2 <{ONLY}>: Mailbox full"}
    for n in range(3):  # the default policy: 3 within 7 days
        clock.advance(timedelta(hours=6))
        raw = dsn(sent, recipient=ONLY, **full).replace(b"ABC123", f"SOFT{n}".encode())
        services.inbound.ingest([(f"dsn:{n}", raw)])


async def _complaint_redacted(services: Services, sent: SentMail, clock: FixedClock) -> None:
    services.inbound.ingest([("fbl:1", arf(sent))])


async def _complaint_named(services: Services, sent: SentMail, clock: FixedClock) -> None:
    services.inbound.ingest([("fbl:1", arf(sent, named=ONLY.upper(), feedback="opt-out"))])


async def _blocked_by_hand(services: Services, sent: SentMail, clock: FixedClock) -> None:
    assert services.suppressions.suppress(ONLY, tenant="acme", reason="left the company", by="ana")


Return = Callable[[Services, SentMail, FixedClock], Awaitable[None]]
RETURNS: dict[str, Return] = {
    "hard-bounce-dsn": _hard,
    "soft-bounces-to-the-limit": _soft_to_the_limit,
    "arf-complaint-redacted": _complaint_redacted,
    "arf-complaint-named": _complaint_named,
    "manual-block": _blocked_by_hand,
}


@pytest.mark.parametrize("kind", RETURNS)
async def test_every_return_that_blocks_the_last_contact_pauses_with_a_task(
    relay_env: tuple[Services, MemoryTransport], clock: FixedClock, kind: str
) -> None:
    services, transport = relay_env
    _only(services, ONLY)
    sent = await _sent(services, transport)
    await RETURNS[kind](services, sent, clock)

    assert [s["address"] for s in services.suppressions.blocked(tenant="acme")] == [ONLY]
    (hold,) = _bounce_holds(services)
    assert hold.invoice_id is None
    (task,) = services.inbox.threads(tenant="acme", status=None, only="fix_contact")
    assert task["document"] == "INV-1042"
    clock.set(PAST_DUE)
    for _ in range(2):
        dunning, _ = await services.dunning.tick()
        assert dunning.errors == []
        clock.advance(timedelta(days=1))
    assert len(transport.sent) == 1
    assert (
        "on hold (contact bounced)"
        in services.dunning.plan(tenant="acme", everything=True)[0].reason
    )


@pytest.mark.parametrize("kind", ["arf-complaint-named", "manual-block"])
async def test_a_return_that_leaves_another_contact_pauses_nothing(
    relay_env: tuple[Services, MemoryTransport], clock: FixedClock, kind: str
) -> None:
    services, transport = relay_env  # DEMO_DOC: ap@ and billing@ both get invoices
    sent = await _sent(services, transport)
    await RETURNS[kind](services, sent, clock)
    assert _bounce_holds(services) == []
    assert services.inbox.threads(tenant="acme", status=None, only="fix_contact") == []
    clock.set(PAST_DUE)
    dunning, _ = await services.dunning.tick()
    assert dunning.errors == [] and transport.sent[-1].recipients == ("billing@globex.example",)


async def test_a_complaint_pauses_every_customer_that_shared_the_blocked_address(
    relay_env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    """A bookkeeper's mailbox serves two customers: blocked once for the tenant, it leaves
    both without a contact, and both are paused, each on its own thread."""
    services, transport = relay_env
    doc = copy.deepcopy(DEMO_DOC)
    second = {**doc["customers"][0], "id": "C-2", "name": "Initech"}
    doc["customers"] = [{**doc["customers"][0], "contacts": [{"email": ONLY}]}]
    doc["customers"].append({**second, "contacts": [{"email": "AP@globex.example"}]})
    doc["invoices"].append(
        {**doc["invoices"][0], "id": "i-7", "number": "INV-7", "customer": "C-2"}
    )
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    sent = await _sent(services, transport)
    await services.sending.send_invoice("INV-7", kind="new_invoice", tenant="acme")

    summary = services.inbound.ingest([("fbl:1", arf(sent))])
    assert summary.paused == 1  # the matched email's customer; the other is paused alongside
    assert sorted(h.customer_id for h in _bounce_holds(services)) == [1, 2]
    tasks = services.inbox.threads(tenant="acme", status=None, only="fix_contact")
    assert sorted(t["document"] for t in tasks) == ["INV-1042", "INV-7"]
    # The other customer's thread says why, and its email can be resent once fixed.
    other = next(t for t in tasks if t["document"] == "INV-7")
    services.inbox.fix_contact(
        other["id"], tenant="acme", old="AP@globex.example", new="ap@initech.example", by="ana"
    )
    _, addresses = await services.inbox.resend(other["id"], tenant="acme", by="ana")
    assert addresses == ["ap@initech.example"]
    assert [h.customer_id for h in _bounce_holds(services)] == [1]


async def test_a_forged_complaint_blocks_and_pauses_nothing(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    services, transport = relay_env
    _only(services, ONLY)
    sent = await _sent(services, transport)
    forged = arf(sent).replace(sent.data.split(b"\r\n\r\n", 1)[0], b"From: x@y.example")
    # Nor our VERP token as the original's envelope sender: nothing proves the email.
    forged = forged.replace(sent.sender.encode(), b"someone@y.example")
    summary = services.inbound.ingest([("fbl:forged", forged)])
    assert (summary.matched, summary.suppressed, summary.paused) == (0, [], 0)
    assert _bounce_holds(services) == []
