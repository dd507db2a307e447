"""The durable outbox end to end: real SMTP on loopback, real databases, an injected clock."""

from __future__ import annotations

import email
from datetime import timedelta
from email import policy
from pathlib import Path
from typing import Any

import dkim
import pytest
from sqlmodel import Session, select

from dunmail.app import Services
from mailer.clock import FixedClock
from mailer.errors import MailerError
from mailer.outbound.dkim import dns_record
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.models import DeliveryAttempt, Message, MessageRecipient, MessageStatus
from mailer.outbound.requests import EnqueueRequest
from mailer.outbound.verp import derive_key, verify_verp
from tests.conftest import DEMO_DOC
from tests.smtpd import RecordingServer


@pytest.fixture
def transport(request: pytest.FixtureRequest) -> MemoryTransport | None:
    """This module's shared services send over SMTP, to ``smtpd``, unless a test parametrizes
    this fixture indirectly with "memory"."""
    return MemoryTransport() if getattr(request, "param", None) == "memory" else None


@pytest.fixture
def services_config(request: pytest.FixtureRequest, smtpd: RecordingServer) -> dict[str, Any]:
    """This module's shared ``services``: the relay is ``smtpd``; a test's ``services_config``
    marker adds to that, and a test that parametrizes this fixture indirectly gives a function
    of ``smtpd`` returning its settings."""
    relay = {"domain": "relay.example", "host": smtpd.host, "port": smtpd.port}
    marker = request.node.get_closest_marker("services_config")
    extra: dict[str, Any] = getattr(request, "param", lambda _: {})(smtpd)
    return {"relay": relay, **extra, **(marker.kwargs if marker else {})}


@pytest.fixture
def services(services: Services) -> Services:
    """conftest's ``services`` on this module's settings, with DEMO_DOC imported."""
    assert services.ledger.import_document(DEMO_DOC, tenant="acme").errors == []
    return services


def _messages(services: Services) -> list[Message]:
    with Session(services.engine) as session:
        return list(session.exec(select(Message).order_by(Message.id)).all())


def _recipients(services: Services, message_id: int | None) -> dict[str, str]:
    with Session(services.engine) as session:
        rows = session.exec(
            select(MessageRecipient).where(MessageRecipient.message_id == message_id)
        ).all()
    return {r.address: r.status.value for r in rows}


def _attempts(services: Services) -> list[DeliveryAttempt]:
    with Session(services.engine) as session:
        return list(session.exec(select(DeliveryAttempt).order_by(DeliveryAttempt.id)).all())


async def test_enqueue_is_idempotent(services: Services) -> None:
    first = services.sending.enqueue_invoice_email(
        "INV-1042", kind="new_invoice", tenant=None, manual=True
    )
    again = services.sending.enqueue_invoice_email(
        "INV-1042", kind="new_invoice", tenant=None, manual=True
    )
    other = services.sending.enqueue_invoice_email(
        "INV-1042", kind="invoice_reminder", tenant=None, manual=True
    )
    assert first.id == again.id and first.uid == again.uid
    assert other.id != first.id
    assert len(_messages(services)) == 2


async def test_same_recipients_in_another_order_are_one_message(services: Services) -> None:
    tenant_id = services.tenants.id("acme")
    now = services.clock.now()

    def request(recipients: list[str]) -> EnqueueRequest:
        return EnqueueRequest(
            tenant_id=tenant_id,
            kind="new_invoice",
            recipients=recipients,
            context={},
            document="invoice:1",
            version=1,
        )

    with Session(services.engine) as session:
        a = services.sending.queue.enqueue(session, request(["b@x.test", "a@x.test"]), now=now)
        b = services.sending.queue.enqueue(session, request(["A@x.test", "b@X.test"]), now=now)
        assert a.id == b.id


async def test_a_batch_enqueue_skips_what_is_already_queued(services: Services) -> None:
    """``enqueue_many`` (the scheduler's path) keeps the one-email-per-key rule, recipients
    included, whether the duplicate is in the outbox already or twice in the batch."""
    tenant_id = services.tenants.id("acme")
    now = services.clock.now()

    def request(document: str, occasion: str) -> EnqueueRequest:
        return EnqueueRequest(
            tenant_id=tenant_id,
            kind="invoice_reminder",
            recipients=["b@x.test", "A@x.test"],
            context={"n": document},
            document=document,
            version=1,
            occasion=occasion,
        )

    with Session(services.engine) as session:
        services.sending.queue.enqueue(session, request("invoice:1", "step 1"), now=now)
        batch = [
            request("invoice:1", "step 1"),  # already queued
            request("invoice:1", "step 2"),  # another occasion: another email
            request("invoice:2", "step 1"),
            request("invoice:2", "step 1"),  # twice in the batch
        ]
        services.sending.queue.enqueue_many(session, batch, now=now)
        services.sending.queue.enqueue_many(session, batch, now=now)  # a re-run changes nothing
        session.commit()
    with Session(services.engine) as session:
        messages = session.exec(select(Message).order_by(Message.id)).all()
        assert [(m.context.get("n"), m.occasion) for m in messages] == [
            ("invoice:1", "step 1"),
            ("invoice:1", "step 2"),
            ("invoice:2", "step 1"),
        ]
        rows = session.exec(select(MessageRecipient)).all()
        per_message: dict[int, list[str]] = {}
        for row in rows:
            per_message.setdefault(row.message_id, []).append(row.address)
        assert sorted(map(sorted, per_message.values())) == [["A@x.test", "b@x.test"]] * 3
        assert {r.status.value for r in rows} == {"pending"}


async def test_manual_send_delivers_signed_mail_through_the_relay(
    services: Services, smtpd: RecordingServer, tmp_path: Path
) -> None:
    message = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    assert message.status is MessageStatus.SENT
    # One envelope per recipient, each with its own VERP return path (mailer/outbound/envelopes.py).
    assert len(smtpd.envelopes) == 2
    assert sorted(e.rcpt_tos for e in smtpd.envelopes) == [
        ("ap@globex.example",),
        ("billing@globex.example",),
    ]
    assert len({e.content for e in smtpd.envelopes}) == 1  # the same bytes, one DKIM signature
    # VERP: each envelope sender names this message and its one recipient.
    key = derive_key(services.config.secret_key(), "verp")
    sent_to = ["ap@globex.example", "billing@globex.example"]
    for each in smtpd.envelopes:
        match = verify_verp(each.mail_from, key=key, recipients=sent_to)
        assert (match.uid, match.recipient) == (message.uid, each.rcpt_tos[0])
        assert each.mail_from.endswith("@relay.example")
    envelope = smtpd.envelopes[0]
    msg = email.message_from_bytes(envelope.content, policy=policy.default)
    assert msg["From"] == "Acme Supplies <noreply-invoice@relay.example>"
    assert msg["Reply-To"] == "Acme Supplies <ar@acme.example>"
    assert msg["Subject"] == "Invoice INV-1042 from Acme Supplies"
    assert msg["Message-ID"] == f"<{message.uid}@acme.example>"
    assert msg["Auto-Submitted"] == "auto-generated"
    # The DKIM signature an independent verifier accepts, with DNS injected.
    record = dns_record(services.config.tenants["acme"].dkim[0]).encode()

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"s1._domainkey.acme.example." else b""

    assert dkim.verify(envelope.content, dnsfunc=dnsfunc)
    attempts = _attempts(services)
    assert [(a.number, a.outcome.value, a.code) for a in attempts] == [(1, "accepted", 250)]


async def test_send_marks_invoice_sent_and_is_idempotent(
    services: Services, smtpd: RecordingServer
) -> None:
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    assert len(smtpd.envelopes) == 2  # one envelope for each of the two recipients


@pytest.mark.smtpd_options(rcpt={"billing@globex.example": "451 4.2.0 Mailbox busy"})
async def test_partial_rcpt_failure_retries_only_the_deferred(
    services: Services, smtpd: RecordingServer, clock: FixedClock
) -> None:
    message = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    assert message.status is MessageStatus.DEFERRED
    assert _recipients(services, message.id) == {
        "ap@globex.example": "accepted",
        "billing@globex.example": "deferred",
    }
    assert smtpd.envelopes[0].rcpt_tos == ("ap@globex.example",)
    # Not due yet: nothing happens at the same instant.
    assert (await services.sending.deliver()).attempted == 0
    smtpd.script(rcpt=None)
    clock.advance(timedelta(hours=1))
    report = await services.sending.deliver()
    assert report.sent == 1
    assert smtpd.envelopes[1].rcpt_tos == ("billing@globex.example",)
    first = email.message_from_bytes(smtpd.envelopes[0].content, policy=policy.default)
    second = email.message_from_bytes(smtpd.envelopes[1].content, policy=policy.default)
    assert first["Message-ID"] == second["Message-ID"]  # a retry keeps its Message-ID
    assert _recipients(services, message.id) == {
        "ap@globex.example": "accepted",
        "billing@globex.example": "accepted",
    }


@pytest.mark.smtpd_options(rcpt={"billing@globex.example": "550 5.1.1 No such user"})
async def test_partial_permanent_rejection_is_recorded_per_recipient(
    services: Services, smtpd: RecordingServer
) -> None:
    message = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    assert message.status is MessageStatus.SENT
    assert _recipients(services, message.id)["billing@globex.example"] == "rejected"
    assert _attempts(services)[0].outcome.value == "partial"


@pytest.mark.smtpd_options(data="554 5.7.1 Message rejected")
async def test_5xx_fails_at_once(
    services: Services, smtpd: RecordingServer, clock: FixedClock
) -> None:
    message = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    assert message.status is MessageStatus.FAILED
    assert message.last_error is not None and message.last_error.startswith("554")
    clock.advance(timedelta(days=1))
    assert (await services.sending.deliver()).attempted == 0


@pytest.mark.smtpd_options(greeting="421 4.3.2 Service shutting down")
async def test_4xx_backs_off_with_jitter_until_max_age_then_fails(
    services: Services, smtpd: RecordingServer, clock: FixedClock
) -> None:
    start = clock.now()
    message = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    assert message.status is MessageStatus.DEFERRED
    gaps = []
    last = start
    for _ in range(60):
        row = next(m for m in _messages(services) if m.id == message.id)
        if row.status is not MessageStatus.DEFERRED:
            break
        gaps.append(row.next_attempt_at - last)
        clock.set(row.next_attempt_at + timedelta(seconds=1))
        last = clock.now()
        await services.sending.deliver()
    final = next(m for m in _messages(services) if m.id == message.id)
    assert final.status is MessageStatus.FAILED
    assert clock.now() - start >= services.config.delivery.max_age
    assert gaps[0] >= timedelta(minutes=2, seconds=30) and gaps[0] <= timedelta(minutes=5)
    assert max(gaps) <= services.config.delivery.max_retry_after
    assert gaps[3] > gaps[0]  # it backs off
    assert _attempts(services)[-1].outcome.value == "expired"
    assert smtpd.envelopes == []


@pytest.mark.smtpd_options(drop="data")
async def test_connection_dropped_mid_data_is_retried_not_sent(
    services: Services, smtpd: RecordingServer, clock: FixedClock
) -> None:
    message = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    assert message.status is MessageStatus.DEFERRED
    smtpd.script(drop=None)
    clock.advance(timedelta(hours=1))
    assert (await services.sending.deliver()).sent == 1
    assert len(smtpd.envelopes) == 2  # one envelope for each of the two recipients


async def test_lease_blocks_other_workers_until_it_expires(
    services: Services, smtpd: RecordingServer, clock: FixedClock
) -> None:
    message = services.sending.enqueue_invoice_email(
        "INV-1042", kind="new_invoice", tenant=None, manual=False
    )
    # A worker claims the row and dies before sending (its lease is committed).
    claimed = services.sending.dispatcher.claim_due(clock.now(), limit=10)
    assert [c.id for c in claimed] == [message.id]
    assert (await services.sending.deliver()).attempted == 0  # leased: nobody else takes it
    clock.advance(timedelta(seconds=services.config.delivery.lease_seconds + 1))
    assert (await services.sending.deliver()).sent == 1
    assert len(smtpd.envelopes) == 2  # one envelope for each of the two recipients


def _own_smtp(smtpd: RecordingServer) -> dict[str, Any]:
    tenant = {
        "name": "Acme Supplies",
        "email": "ar@acme.example",
        "delivery": "smtp",
        "reply_to": "inbox@acme.example",
        "bounce_domain": "bounce.acme.example",
        "smtp": {"host": smtpd.host, "port": smtpd.port},
    }
    return {"tenants": {"acme": tenant}}


@pytest.mark.parametrize("services_config", [_own_smtp], indirect=True, ids=["own_smtp"])
async def test_own_smtp_mode_sends_as_the_tenant(
    services: Services, smtpd: RecordingServer
) -> None:
    message = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    assert message.status is MessageStatus.SENT
    msg = email.message_from_bytes(smtpd.envelopes[0].content, policy=policy.default)
    assert msg["From"] == "Acme Supplies <ar@acme.example>"
    assert msg["Reply-To"] == "Acme Supplies <inbox@acme.example>"
    assert msg["Message-ID"] == f"<{message.uid}@acme.example>"
    assert smtpd.envelopes[0].mail_from.endswith("@bounce.acme.example")
    assert "DKIM-Signature" not in msg  # no key configured for this tenant


@pytest.mark.parametrize("transport", ["memory"], indirect=True)
async def test_header_injection_through_customer_data_is_refused(
    services: Services, transport: MemoryTransport
) -> None:
    evil = {
        "customers": [
            {
                "id": "C-1",
                "name": "Globex\r\nBcc: victim@evil.test",
                "contacts": [{"email": "ap@globex.example", "roles": ["ap"]}],
            }
        ]
    }
    assert services.ledger.import_document(evil, tenant=None).errors == []
    message = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    # The name is body text, never a header: the subject carries no customer data, and no
    # extra recipient appears anywhere.
    assert message.status is MessageStatus.SENT
    assert [m.recipients for m in transport.sent] == [("ap@globex.example",)]
    assert b"Bcc:" not in transport.sent[0].data.split(b"\r\n\r\n", 1)[0]


@pytest.mark.parametrize("transport", ["memory"], indirect=True)
async def test_one_bad_message_does_not_stop_the_batch(
    services: Services, clock: FixedClock
) -> None:
    try:
        tenant_id = services.tenants.id(None)
        with Session(services.engine) as session:
            for kind in ("no_such_kind", "new_invoice"):
                services.sending.queue.enqueue(
                    session,
                    EnqueueRequest(
                        tenant_id=tenant_id,
                        kind=kind,
                        recipients=["ap@globex.example"],
                        context=_context(),
                        document="invoice:1",
                        version=1,
                    ),
                    now=clock.now(),
                )
            session.commit()
        report = await services.sending.deliver()
    finally:
        await services.close()
    assert (report.sent, report.failed) == (1, 1)
    failed = [m for m in _messages(services) if m.status is MessageStatus.FAILED]
    assert failed[0].kind == "no_such_kind" and "no template" in (failed[0].last_error or "")


def _context() -> dict[str, Any]:
    return {
        "locale": "en",
        "tenant": {"name": "Acme", "email": "ar@acme.example"},
        "customer": {"name": "Globex", "id": "C-1"},
        "days_overdue": 0,
        "links": {"view": None, "pay": None},
        "invoice": {
            "number": "INV-1",
            "version": 1,
            "currency": "EUR",
            "total_minor": 100,
            "tax_minor": 0,
            "balance_minor": 100,
            "issued_at": "2026-03-01T00:00:00",
            "due_at": "2026-03-31T00:00:00",
            "lines": [],
        },
    }


def _spanish_tenant(**extra: Any) -> dict[str, Any]:
    return {
        "name": "Acme Suministros",
        "email": "ar@acme.example",
        "locale": "es",
        "branding": {
            "logo_url": "https://acme.example/logo.png",
            "brand_color": "#aa3300",
            "address": ["Calle Mayor 1", "28013 Madrid"],
            "footer": "CIF B-12345678",
        },
        **extra,
    }


@pytest.mark.services_config(tenants={"acme": _spanish_tenant()})
async def test_a_customer_in_an_untranslated_language_gets_the_tenants_language_and_brand(
    services: Services, smtpd: RecordingServer
) -> None:
    doc = {**DEMO_DOC, "customers": [{**DEMO_DOC["customers"][0], "locale": "ja"}]}
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    message = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    assert message.status is MessageStatus.SENT
    msg = email.message_from_bytes(smtpd.envelopes[0].content, policy=policy.default)
    assert msg["Subject"] == "Factura INV-1042 de Acme Suministros"
    html_part = msg.get_body(preferencelist=("html",))
    text_part = msg.get_body(preferencelist=("plain",))
    assert html_part is not None and text_part is not None
    markup, text = html_part.get_content(), text_part.get_content()
    assert 'src="https://acme.example/logo.png"' in markup
    assert "#aa3300" in markup
    assert "Calle Mayor 1" in markup and "CIF B-12345678" in markup
    assert "120,00\xa0€" in text  # Spanish number format, not Japanese
    assert "Calle Mayor 1" in text and "CIF B-12345678" in text


@pytest.mark.services_config(
    tenants={"acme": _spanish_tenant(emails={"invoice_reminder": {"enabled": False}})}
)
async def test_a_switched_off_kind_is_skipped_automatically_and_refused_by_hand(
    services: Services, smtpd: RecordingServer
) -> None:
    try:
        skipped = services.sending.enqueue_invoice_email(
            "INV-1042", kind="invoice_reminder", tenant=None, manual=False
        )
        assert skipped is None
        with pytest.raises(MailerError, match=r"invoice_reminder emails are switched off"):
            await services.sending.send_invoice("INV-1042", kind="invoice_reminder", tenant=None)
        sent = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    finally:
        await services.close()
    assert [m.kind for m in _messages(services)] == ["new_invoice"]
    assert sent.status is MessageStatus.SENT and len(smtpd.envelopes) == 2
