"""The scheduler against real databases: grace, manual sends, holds, pre-flight, catch-up.

Time moves with the injected clock; every pass is ``DunningService.tick`` (decide, queue, deliver),
as ``dunmail tick`` runs it, into a MemoryTransport that parses each message it is given.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from typing import Any

import pytest
from sqlmodel import Session, col, select

from dunmail.app import Services
from mailer.clock import FixedClock
from mailer.errors import MailerError
from mailer.ledger.models import Event, EventStatus, HoldReason, Invoice
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.models import Message, MessageStatus, Suppression
from tests.conftest import DEMO_DOC, START, emails

# DEMO_DOC's INV-1042: issued 2026-03-01, due 2026-03-31 (a Tuesday); START is Monday 2 March
# 09:00 UTC and the customer is in UTC. The standard cadence: -3, +1, +7, +14 (repeats weekly).


def _doc(**invoice_changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(DEMO_DOC)
    doc["invoices"][0].update(invoice_changes)
    return doc


@pytest.fixture
def env(relay_env: tuple[Services, MemoryTransport]) -> tuple[Services, MemoryTransport]:
    """The shared services with the demo ledger imported, and where they send."""
    return relay_env


def _dunning(settings: dict[str, Any]) -> pytest.MarkDecorator:
    """The shared ``services`` for the one tenant with these ``[tenants.acme.dunning]``
    settings."""
    return pytest.mark.services_config(
        tenants={"acme": {"name": "Acme", "email": "ar@acme.example", "dunning": settings}}
    )


def _payment(payment_id: str, amount: str, received_at: str) -> dict[str, Any]:
    """An import document with one EUR payment of ``amount`` on INV-1042."""
    return {
        "payments": [
            {
                "id": payment_id,
                "customer": "C-1",
                "amount": amount,
                "currency": "EUR",
                "received_at": received_at,
                "invoices": [{"invoice": "i-1042", "amount": amount}],
            }
        ]
    }


def _sent(transport: MemoryTransport) -> list[str]:
    """Subjects of what went out, in order."""
    return [str(message_from_bytes(m.data)["Subject"]) for m in emails(transport)]


def _kinds(services: Services) -> list[tuple[str, str | None, str]]:
    with Session(services.engine) as session:
        rows = session.exec(select(Message).order_by(col(Message.id))).all()
        return [(m.kind, m.occasion, m.status.value) for m in rows]


async def _tick_at(services: Services, clock: FixedClock, when: datetime) -> None:
    clock.set(when)
    await services.dunning.tick()


async def test_new_invoice_goes_out_after_the_grace_period_and_an_edit_restarts_it(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    await _tick_at(services, clock, START + timedelta(minutes=4))
    assert transport.sent == []
    # Edited at minute 4: the five minutes start again.
    edited = _doc(lines=[{"description": "Support", "quantity": "2", "unit_price": "120.00"}])
    assert services.ledger.import_document(edited, tenant="acme").invoices.updated == 1
    await _tick_at(services, clock, START + timedelta(minutes=5))
    assert transport.sent == []
    await _tick_at(services, clock, START + timedelta(minutes=9))
    assert len(emails(transport)) == 1
    assert "INV-1042" in _sent(transport)[0]
    assert _kinds(services) == [("new_invoice", "new", "sent")]
    # Nothing twice: another pass in the same minute and a day later send nothing more.
    await _tick_at(services, clock, START + timedelta(minutes=9, seconds=30))
    await _tick_at(services, clock, START + timedelta(days=1))
    assert len(emails(transport)) == 1


async def test_mark_sent_at_minute_three_cancels_the_automatic_email(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    clock.set(START + timedelta(minutes=3))
    assert services.ledger.mark_sent("INV-1042", tenant="acme") == 0
    await _tick_at(services, clock, START + timedelta(minutes=10))
    assert transport.sent == [] and _kinds(services) == []


async def test_several_invoices_issued_at_once_get_one_email_each(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    doc = copy.deepcopy(DEMO_DOC)
    template = doc["invoices"][0]
    doc["invoices"] = [
        {**template, "id": f"i-{n}", "number": f"INV-{n}"} for n in range(2000, 2025)
    ]
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    await _tick_at(services, clock, START + timedelta(minutes=6))
    await _tick_at(services, clock, START + timedelta(minutes=7))
    assert len(emails(transport)) == 26  # 25 new ones and INV-1042, each once
    assert sorted(k for k, _, _ in _kinds(services)) == ["new_invoice"] * 26


async def test_future_dated_invoice_waits_and_drafts_are_never_sent(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    doc = copy.deepcopy(DEMO_DOC)
    base = doc["invoices"][0]
    doc["invoices"] = [
        {
            **base,
            "id": "i-future",
            "number": "INV-F",
            "issued_at": "2026-03-05",
            "due_at": "2026-04-04",
        },
        {**base, "id": "i-draft", "number": "INV-D", "status": "draft"},
    ]
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    await _tick_at(services, clock, START + timedelta(hours=1))
    numbers = sorted(_numbers(services))
    assert numbers == ["INV-1042"]
    await _tick_at(services, clock, datetime(2026, 3, 5, 0, 1, tzinfo=UTC))
    assert sorted(_numbers(services)) == ["INV-1042", "INV-F"]


def _numbers(services: Services) -> list[str]:
    with Session(services.engine) as session:
        rows = session.exec(select(Message)).all()
        return [m.context["invoice"]["number"] for m in rows]


async def test_reminders_follow_the_cadence_and_stop_when_paid(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    await _tick_at(services, clock, START + timedelta(minutes=5))
    # 3 days before the due date (Saturday the 28th) moves to Monday 30 March at 08:00.
    await _tick_at(services, clock, datetime(2026, 3, 28, 10, tzinfo=UTC))
    assert len(emails(transport)) == 1
    await _tick_at(services, clock, datetime(2026, 3, 30, 8, tzinfo=UTC))
    await _tick_at(services, clock, datetime(2026, 4, 1, 8, tzinfo=UTC))  # due + 1
    assert [k for k, _, _ in _kinds(services)] == [
        "new_invoice",
        "invoice_reminder",
        "late_payment_reminder",
    ]
    payment = _payment("p-1", "120.00", "2026-04-02T12:00:00Z")
    clock.set(datetime(2026, 4, 2, 12, tzinfo=UTC))
    assert services.ledger.import_document(payment, tenant="acme").errors == []
    for day in (7, 14, 21, 28):
        await _tick_at(services, clock, datetime(2026, 4, day, 9, tzinfo=UTC))
    # The payment's receipt, and no reminder for a paid invoice.
    assert [k for k, _, _ in _kinds(services)][3:] == ["payment_receipt"]


async def test_a_payment_between_queueing_and_sending_skips_the_reminder(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    await _tick_at(services, clock, START + timedelta(minutes=5))
    clock.set(datetime(2026, 4, 1, 8, tzinfo=UTC))
    report = services.dunning.invoices.run_pass(clock.now())  # queued, not yet delivered
    assert report.queued["late_payment_reminder"] == 1
    paid = _payment("p-1", "120.00", "2026-04-01T08:00:30Z")
    assert services.ledger.import_document(paid, tenant="acme").errors == []
    delivered = await services.sending.deliver()
    assert (delivered.attempted, delivered.skipped) == (0, 1)
    assert len(emails(transport)) == 1  # only the invoice itself
    rows = services.desk.outbox_rows()
    assert rows[0]["status"] == "skipped"
    assert rows[0]["skip_reason"] == "invoice INV-1042 is paid"


async def test_a_hold_with_an_end_date_resumes_chasing_by_itself(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    await _tick_at(services, clock, START + timedelta(minutes=5))
    clock.set(datetime(2026, 3, 25, 9, tzinfo=UTC))
    hold = services.desk.place_hold(
        tenant="acme",
        customer=None,
        invoice="INV-1042",
        reason=HoldReason.DISPUTE,
        until=datetime(2026, 4, 3, 0, tzinfo=UTC),
        note="disputes line 1",
        by="test",
    )
    assert [h["id"] for h in services.desk.holds(tenant="acme")] == [hold.id]
    plan = services.dunning.plan(tenant="acme", customer="C-1")
    assert "on hold (dispute) until 2026-04-03" in plan[0].reason
    for day in (28, 30, 31):
        await _tick_at(services, clock, datetime(2026, 3, day, 10, tzinfo=UTC))
    await _tick_at(services, clock, datetime(2026, 4, 1, 10, tzinfo=UTC))
    await _tick_at(services, clock, datetime(2026, 4, 2, 10, tzinfo=UTC))
    assert len(emails(transport)) == 1  # held: only the invoice email
    await _tick_at(services, clock, datetime(2026, 4, 3, 8, tzinfo=UTC))
    # The hold ended at midnight; chasing resumes with one email for the steps missed.
    assert [(k, o) for k, o, _ in _kinds(services)] == [
        ("new_invoice", "new"),
        ("late_payment_reminder", "step 2"),
    ]


async def test_a_customer_hold_lifted_by_hand_resumes_at_the_next_pass(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    await _tick_at(services, clock, START + timedelta(minutes=5))
    hold = services.desk.place_hold(
        tenant="acme",
        customer="C-1",
        invoice=None,
        reason=HoldReason.PROMISE_TO_PAY,
        until=None,
        note=None,
        by="test",
    )
    await _tick_at(services, clock, datetime(2026, 4, 1, 9, tzinfo=UTC))
    assert len(emails(transport)) == 1
    services.desk.lift_hold(hold.id or 0, tenant="acme")
    await _tick_at(services, clock, datetime(2026, 4, 1, 9, 1, tzinfo=UTC))
    assert len(emails(transport)) == 2
    with pytest.raises(MailerError, match="no hold 999"):
        services.desk.lift_hold(999, tenant="acme")


async def test_a_manual_reminder_counts_as_the_step_it_replaces(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    await _tick_at(services, clock, START + timedelta(minutes=5))
    await _tick_at(services, clock, datetime(2026, 4, 1, 8, tzinfo=UTC))  # step 2 (+1)
    clock.set(datetime(2026, 4, 6, 15, tzinfo=UTC))
    await services.sending.send_invoice("INV-1042", kind="late_payment_reminder", tenant="acme")
    # The +7 step (8 April) is covered by the manual send two days earlier.
    await _tick_at(services, clock, datetime(2026, 4, 8, 9, tzinfo=UTC))
    await _tick_at(services, clock, datetime(2026, 4, 9, 9, tzinfo=UTC))
    kinds = _kinds(services)
    assert [(k, o) for k, o, _ in kinds][-2:] == [
        ("late_payment_reminder", "step 2"),
        ("late_payment_reminder", None),  # the manual one
    ]
    await _tick_at(services, clock, datetime(2026, 4, 14, 9, tzinfo=UTC))  # +14
    assert _kinds(services)[-1][:2] == ("late_payment_reminder", "step 4")


async def test_catch_up_after_downtime_sends_one_reminder_not_a_burst(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    await _tick_at(services, clock, START + timedelta(minutes=5))
    # Down from March until mid-May: every step and three repeats fell due meanwhile.
    await _tick_at(services, clock, datetime(2026, 5, 13, 10, tzinfo=UTC))
    await _tick_at(services, clock, datetime(2026, 5, 13, 10, 5, tzinfo=UTC))
    assert [(k, o) for k, o, _ in _kinds(services)] == [
        ("new_invoice", "new"),
        ("late_payment_reminder", "step 4"),
    ]
    plan = services.dunning.plan(tenant="acme", everything=True)
    assert plan[0].next_at == datetime(2026, 5, 20, 8, tzinfo=UTC)


def _suppress(services: Services, *addresses: str, reason: str = "hard bounce 5.1.1") -> None:
    with Session(services.engine) as session:
        for address in addresses:
            session.add(
                Suppression(
                    tenant_id=services.tenants.id("acme"),
                    address=address,
                    reason=reason,
                    created_at=START,
                )
            )
        session.commit()


async def test_recipients_suppressed_after_queueing_are_skipped_and_recorded(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    clock.set(START + timedelta(minutes=5))
    services.dunning.invoices.run_pass(clock.now())  # queued to both contacts
    _suppress(services, "ap@globex.example", "billing@globex.example")
    await services.sending.deliver()
    assert transport.sent == []
    row = services.desk.outbox_rows()[0]
    assert row["status"] == "skipped"
    assert row["skip_reason"].startswith("recipient suppressed: ap@globex.example (hard bounce")


async def test_one_recipient_suppressed_after_queueing_gets_nothing_the_other_gets_the_email(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    clock.set(START + timedelta(minutes=5))
    services.dunning.invoices.run_pass(clock.now())
    _suppress(services, "ap@globex.example", reason="complaint")
    await services.sending.deliver()
    assert [m.recipients for m in emails(transport)] == [("billing@globex.example",)]
    recipients = {r["address"]: r["status"] for r in services.desk.outbox_rows()[0]["recipients"]}
    assert recipients == {"ap@globex.example": "rejected", "billing@globex.example": "accepted"}


async def test_a_suppressed_contact_is_left_out_when_the_email_is_queued(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    # Blocked by hand, typed in another case: addresses compare without regard to case.
    assert services.suppressions.suppress(
        "AP@Globex.example", tenant="acme", reason="left", by="ana"
    )
    await _tick_at(services, clock, START + timedelta(minutes=5))
    assert [m.recipients for m in emails(transport)] == [("billing@globex.example",)]
    assert [r["address"] for r in services.desk.outbox_rows()[0]["recipients"]] == [
        "billing@globex.example"
    ]


async def test_when_every_invoice_contact_is_suppressed_the_next_contact_by_role_gets_it(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"][0]["contacts"] += [
        {"email": "cfo@globex.example", "roles": ["primary"], "send_invoices": False},
        {"email": "books@globex.example", "roles": ["accountant"], "send_invoices": False},
    ]
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    _suppress(services, "ap@globex.example", "billing@globex.example")
    await _tick_at(services, clock, START + timedelta(minutes=5))
    # The accountant ranks before the primary contact (billing, AP, accountant, primary).
    assert [m.recipients for m in emails(transport)] == [("books@globex.example",)]


async def test_a_customer_whose_contacts_all_opted_out_gets_no_fallback(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    doc = copy.deepcopy(DEMO_DOC)
    for contact in doc["customers"][0]["contacts"]:
        contact["send_invoices"] = False
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    await _tick_at(services, clock, START + timedelta(minutes=5))
    assert transport.sent == []


async def test_an_edit_after_queueing_replaces_the_email_with_the_new_version(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    await _tick_at(services, clock, START + timedelta(minutes=5))
    clock.set(datetime(2026, 4, 1, 8, tzinfo=UTC))
    services.dunning.invoices.run_pass(clock.now())
    edited = _doc(lines=[{"description": "Support", "quantity": "3", "unit_price": "120.00"}])
    assert services.ledger.import_document(edited, tenant="acme").errors == []
    await services.sending.deliver()
    kinds = _kinds(services)
    assert kinds[1] == ("late_payment_reminder", "step 2", "skipped")
    assert kinds[2] == ("late_payment_reminder", "step 2", "sent")
    assert "360.00" in emails(transport)[-1].data.decode()
    with Session(services.engine) as session:
        first, second = session.exec(
            select(Message).where(col(Message.occasion) == "step 2").order_by(col(Message.id))
        ).all()
        assert (first.document_version, second.document_version) == (1, 2)
        assert "replaced by the new version" in (first.skip_reason or "")


async def test_a_customer_without_contacts_does_not_stop_the_batch(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"].append({"id": "C-2", "name": "Initech", "contacts": []})
    doc["invoices"].append(
        {**doc["invoices"][0], "id": "i-2", "number": "INV-2", "customer": "C-2"}
    )
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    clock.set(START + timedelta(minutes=5))
    dunning, delivered = await services.dunning.tick()
    assert dunning.errors == [
        "invoice INV-2: invoice INV-2: its customer has no contact to send to"
    ]
    assert delivered.sent == 1
    with Session(services.engine) as session:
        stuck = session.exec(select(Invoice).where(col(Invoice.number) == "INV-2")).one()
        assert stuck.next_action_at is None  # waits for a contact, not retried every tick
    # Adding a contact puts it back in line.
    doc["customers"][1]["contacts"] = [{"email": "ap@initech.example"}]
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    await _tick_at(services, clock, START + timedelta(minutes=11))
    assert len(emails(transport)) == 2


async def test_plan_explains_every_decision_without_writing(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    clock.set(START + timedelta(minutes=2))
    [waiting] = services.dunning.plan(tenant="acme", everything=True)
    assert waiting.action is None and "grace period" in waiting.reason
    clock.set(START + timedelta(minutes=6))
    [due] = services.dunning.plan(tenant="acme")
    assert due.action is not None and due.action.kind == "new_invoice"
    assert due.recipients == ("billing@globex.example", "ap@globex.example")
    assert due.as_dict()["send"] == "new_invoice"
    assert _kinds(services) == []  # planning queues nothing
    assert services.dunning.plan(tenant="acme", customer="nobody") == []


async def test_an_unknown_customer_cadence_is_refused_at_import(
    env: tuple[Services, MemoryTransport],
) -> None:
    services, _ = env
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"][0]["cadence"] = "brutal"
    report = services.ledger.import_document(doc, tenant="acme")
    assert [(e.where, e.reason) for e in report.errors] == [
        ("customers[0].cadence", "unknown cadence 'brutal'; this tenant has standard")
    ]


@_dunning(
    {
        "window": "09:00-17:00",
        "cadences": {
            "standard": {"steps": [{"days": 1}]},
            "gentle": {"steps": [{"days": 10}]},
        },
    }
)
async def test_a_customer_cadence_and_time_zone_decide_the_send_time(
    services: Services, clock: FixedClock
) -> None:
    """A Sydney customer on a gentle cadence: reminded once, at 09:00 Sydney time."""
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"][0].update(time_zone="Australia/Sydney", cadence="gentle")
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    await _tick_at(services, clock, START + timedelta(minutes=5))
    [entry] = services.dunning.plan(tenant="acme", customer="C-1")
    # Due 31 March (Sydney) + 10 days = Friday 10 April, 09:00 AEST = 23:00 UTC on the 9th.
    assert entry.next_at == datetime(2026, 4, 9, 23, 0, tzinfo=UTC)


@_dunning(
    {
        "business_days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "cadences": {
            "standard": {"steps": [{"days": 0, "repeat_every_days": 1, "max_repeats": 4}]}
        },
    }
)
async def test_a_dst_change_neither_shifts_nor_duplicates_a_send(
    services: Services, clock: FixedClock
) -> None:
    """London, steps every day around the 29 March change: always 08:00 local, once each."""
    doc = _doc(due_at="2026-03-27")
    doc["customers"][0]["time_zone"] = "Europe/London"
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    await _tick_at(services, clock, START + timedelta(minutes=5))
    now = datetime(2026, 3, 26, 23, tzinfo=UTC)
    while now < datetime(2026, 4, 2, tzinfo=UTC):  # every 30 minutes for a week
        await _tick_at(services, clock, now)
        now += timedelta(minutes=30)
    with Session(services.engine) as session:
        reminders = session.exec(
            select(Message)
            .where(col(Message.kind) == "late_payment_reminder")
            .order_by(col(Message.id))
        ).all()
        created = [m.created_at for m in reminders]
    assert created == [
        datetime(2026, 3, 27, 8, 0, tzinfo=UTC),  # GMT
        datetime(2026, 3, 28, 8, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 7, 0, tzinfo=UTC),  # BST from 01:00 UTC: 08:00 local
        datetime(2026, 3, 30, 7, 0, tzinfo=UTC),
        datetime(2026, 3, 31, 7, 0, tzinfo=UTC),
    ]
    assert all(m.status is MessageStatus.SENT for m in reminders)


@_dunning({"cadences": {"standard": {"per": "customer", "steps": [{"days": 1}, {"days": 8}]}}})
async def test_customer_level_chasing_sends_one_email_for_all_overdue_invoices(
    services: Services, transport: MemoryTransport, clock: FixedClock
) -> None:
    """A per-customer cadence: the oldest overdue invoice sets the pace; one email lists all."""
    doc = copy.deepcopy(DEMO_DOC)
    base = doc["invoices"][0]
    doc["invoices"] = [
        {**base, "id": "i-old", "number": "INV-OLD", "due_at": "2026-03-10"},
        {**base, "id": "i-mid", "number": "INV-MID", "due_at": "2026-03-12"},
        {**base, "id": "i-new", "number": "INV-NEW", "due_at": "2026-04-30"},
    ]
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    await _tick_at(services, clock, START + timedelta(minutes=5))  # three invoice emails
    await _tick_at(services, clock, datetime(2026, 3, 11, 8, tzinfo=UTC))  # OLD +1
    await _tick_at(services, clock, datetime(2026, 3, 13, 8, tzinfo=UTC))  # MID +1: rides
    summaries = [m for m in _messages(services) if m.kind == "overdue_summary"]
    assert len(summaries) == 1
    listed = [i["number"] for i in summaries[0].context["overdue"]["items"]]
    assert listed == ["INV-OLD"]
    await _tick_at(services, clock, datetime(2026, 3, 18, 8, tzinfo=UTC))  # OLD +8
    summaries = [m for m in _messages(services) if m.kind == "overdue_summary"]
    assert len(summaries) == 2
    assert [i["number"] for i in summaries[1].context["overdue"]["items"]] == [
        "INV-OLD",
        "INV-MID",
    ]
    assert summaries[1].context["overdue"]["balance_minor"] == 24_000
    assert all(m.status is MessageStatus.SENT for m in summaries)
    assert len(emails(transport)) == 5  # 3 invoices + 2 summaries, nothing per invoice


def _messages(services: Services) -> list[Message]:
    with Session(services.engine) as session:
        return list(session.exec(select(Message).order_by(col(Message.id))).all())


@_dunning({"cadences": {"standard": {"per": "customer", "steps": [{"days": 1}]}}})
async def test_a_customer_level_email_is_skipped_when_everything_on_it_is_paid(
    services: Services, clock: FixedClock
) -> None:
    assert services.ledger.import_document(DEMO_DOC, tenant="acme").errors == []
    await _tick_at(services, clock, START + timedelta(minutes=5))
    clock.set(datetime(2026, 4, 1, 8, tzinfo=UTC))
    assert services.dunning.invoices.run_pass(clock.now()).queued["overdue_summary"] == 1
    paid = _payment("p-1", "120.00", "2026-04-01T08:00:10Z")
    assert services.ledger.import_document(paid, tenant="acme").errors == []
    await services.sending.deliver()
    summary = [m for m in _messages(services) if m.kind == "overdue_summary"][0]
    assert summary.status is MessageStatus.SKIPPED
    assert summary.skip_reason == "every invoice on it is settled (INV-1042)"


async def test_plan_lists_the_ledgers_pending_events(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = env
    clock.set(START + timedelta(hours=1))
    payment = _payment("p-7", "20.00", "2026-03-02T09:30:00Z")
    assert services.ledger.import_document(payment, tenant="acme").errors == []
    entries = {e.document: e for e in services.dunning.plan(tenant="acme")}
    assert entries["payment:p-7"].action is not None
    assert entries["payment:p-7"].action.kind == "payment_receipt"
    await services.dunning.tick()
    assert "payment:p-7" not in {e.document for e in services.dunning.plan(tenant="acme")}
    assert any(b"p-7" in m.data for m in emails(transport))


async def test_a_manual_send_of_a_queued_automatic_invoice_email_sends_it_once(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    """The relay was down when the automatic email was queued; the clerk presses send."""
    services, transport = env
    clock.set(START + timedelta(minutes=5))
    services.dunning.invoices.run_pass(clock.now())  # queued, not delivered
    message = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    assert message.status is MessageStatus.SENT
    await _tick_at(services, clock, START + timedelta(minutes=6))
    assert len(emails(transport)) == 1
    assert [(k, o) for k, o, _ in _kinds(services)] == [("new_invoice", "new")]


async def test_importing_old_payments_sends_no_receipts(
    env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    """The first import of an ERP's history: last month's payment is recorded, not emailed."""
    services, transport = env
    clock.set(datetime(2026, 4, 20, 9, tzinfo=UTC))
    assert (
        services.ledger.import_document(
            _payment("p-old", "20.00", "2026-03-10T10:00:00Z"), tenant="acme"
        ).errors
        == []
    )
    assert (
        services.ledger.import_document(
            _payment("p-new", "30.00", "2026-04-19T10:00:00Z"), tenant="acme"
        ).errors
        == []
    )
    with Session(services.engine) as session:
        events = {e.key: e for e in session.exec(select(Event)).all()}
    assert events["payment:p-old"].status is EventStatus.SKIPPED
    assert events["payment:p-old"].note == (
        "happened 2026-03-10, more than 7 days before it was imported: no email"
    )
    assert events["payment:p-new"].status is EventStatus.PENDING
    dunning, _ = await services.dunning.tick()
    assert dunning.queued["payment_receipt"] == 1
