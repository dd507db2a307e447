"""Statements: the pure builder, the schedule, and scheduled and by-hand sends end to end."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes

import pytest
from sqlmodel import Session, col, select

from dunmail.app import Services
from mailer.clock import FixedClock
from mailer.content.statement import Transaction, statement
from mailer.dunning_config import StatementSchedule
from mailer.errors import MailerError
from mailer.ledger.models import Customer, Event, EventStatus
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.models import Message
from scheduler.statements import next_statement_day, previous_statement_day
from tests.conftest import DEMO_DOC, START, emails

MAR = datetime(2026, 3, 1, tzinfo=UTC)
APR = datetime(2026, 4, 1, tzinfo=UTC)


def _moves() -> list[Transaction]:
    return [
        Transaction(datetime(2026, 2, 10, tzinfo=UTC), "invoice", "INV-1", "EUR", 10_000,
                    due_at=datetime(2026, 3, 10, tzinfo=UTC), open_minor=4_000),
        Transaction(datetime(2026, 3, 5, tzinfo=UTC), "payment", "p-1", "EUR", -6_000),
        Transaction(datetime(2026, 3, 20, tzinfo=UTC), "invoice", "INV-2", "EUR", 2_500,
                    due_at=datetime(2026, 4, 20, tzinfo=UTC), open_minor=2_500),
        Transaction(datetime(2026, 3, 21, tzinfo=UTC), "invoice", "INV-3", "USD", 900,
                    due_at=datetime(2026, 4, 21, tzinfo=UTC), open_minor=900),
    ]  # fmt: skip


def test_open_item_lists_what_is_still_open_and_what_is_overdue() -> None:
    content = statement("open_item", _moves(), currency="EUR", start=MAR, end=APR)
    assert content is not None
    data = content["statement"]
    assert [(i["reference"], i["balance_minor"]) for i in data["items"]] == [
        ("INV-1", 4_000),
        ("INV-2", 2_500),
    ]
    assert (data["closing_balance_minor"], data["overdue_minor"]) == (6_500, 4_000)


def test_balance_forward_carries_the_opening_balance_through_the_period() -> None:
    content = statement("balance_forward", _moves(), currency="EUR", start=MAR, end=APR)
    assert content is not None
    data = content["statement"]
    assert data["opening_balance_minor"] == 10_000
    assert [(i["reference"], i["balance_minor"]) for i in data["items"]] == [
        ("p-1", 4_000),
        ("INV-2", 6_500),
    ]
    assert data["closing_balance_minor"] == 6_500


def test_nothing_to_say_is_no_statement() -> None:
    assert statement("open_item", [], currency="EUR", start=MAR, end=APR) is None
    usd = statement("open_item", _moves(), currency="USD", start=MAR, end=APR)
    assert usd is not None and usd["statement"]["closing_balance_minor"] == 900


def test_schedule_days() -> None:
    monthly = StatementSchedule(every="monthly", day=1)
    assert next_statement_day(monthly, date(2026, 3, 2)) == date(2026, 4, 1)
    assert next_statement_day(monthly, date(2026, 12, 1)) == date(2027, 1, 1)
    assert previous_statement_day(monthly, date(2026, 1, 1)) == date(2025, 12, 1)
    weekly = StatementSchedule(every="weekly", weekday="fri")
    assert next_statement_day(weekly, date(2026, 3, 6)) == date(2026, 3, 13)  # a Friday
    assert next_statement_day(StatementSchedule(), date(2026, 3, 6)) is None


MONTHLY = {
    "acme": {
        "name": "Acme Supplies",
        "email": "ar@acme.example",
        "dunning": {"statements": {"every": "monthly", "day": 1}},
    }
}


@pytest.fixture
def monthly(services: Services, transport: MemoryTransport) -> tuple[Services, MemoryTransport]:
    """The shared services (built with tenants=MONTHLY: each test using this fixture is marked
    so), with DEMO_DOC and a second, quiet customer imported."""
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"].append({"id": "C-quiet", "name": "Quiet Ltd",
                             "contacts": [{"email": "ap@quiet.example"}]})  # fmt: skip
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    return services, transport


def _statements(transport: MemoryTransport) -> list[str]:
    return [
        str(message_from_bytes(m.data)["Subject"])
        for m in emails(transport)
        if b"statement" in m.data.lower()
    ]


@pytest.mark.services_config(tenants=MONTHLY)
async def test_monthly_statements_go_out_once_and_catch_up_after_downtime(
    monthly: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = monthly
    clock.set(START)
    await services.dunning.tick()
    with Session(services.engine) as session:
        scheduled = {
            c.external_id: c.next_statement_at for c in session.exec(select(Customer)).all()
        }
    assert scheduled == {"C-1": datetime(2026, 4, 1, 8, tzinfo=UTC)} | {
        "C-quiet": datetime(2026, 4, 1, 8, tzinfo=UTC)
    }
    clock.set(datetime(2026, 4, 1, 8, tzinfo=UTC))
    dunning, _ = await services.dunning.tick()
    assert dunning.queued["statement"] == 1  # C-quiet owes nothing: no statement
    await services.dunning.tick()
    with Session(services.engine) as session:
        events = session.exec(select(Event).where(col(Event.kind) == "statement")).all()
        assert [(e.status, e.key) for e in events] == [
            (EventStatus.QUEUED, "statement:C-1:EUR:2026-04-01")
        ]
        message = session.exec(select(Message).where(col(Message.kind) == "statement")).one()
        assert message.context["statement"]["items"][0]["reference"] == "INV-1042"
        assert message.context["customer"]["name"] == "Globex"
        assert message.status.value == "sent"
    # Down from 2 April to Saturday 20 June: May's and June's statements fell due; one goes
    # out, on Monday morning, not on the Saturday the engine came back.
    clock.set(datetime(2026, 6, 20, 9, tzinfo=UTC))
    dunning, _ = await services.dunning.tick()
    assert dunning.queued["statement"] == 0
    clock.set(datetime(2026, 6, 22, 8, tzinfo=UTC))
    dunning, _ = await services.dunning.tick()
    assert dunning.queued["statement"] == 1
    with Session(services.engine) as session:
        c1 = session.exec(select(Customer).where(col(Customer.external_id) == "C-1")).one()
        assert c1.next_statement_at == datetime(2026, 7, 1, 8, tzinfo=UTC)


@pytest.mark.services_config(tenants=MONTHLY)
async def test_a_statement_by_hand(
    monthly: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = monthly
    clock.set(START + timedelta(days=3))
    [message] = await services.sending.send_statement("C-1", tenant="acme", style="balance_forward")
    assert message.status.value == "sent"
    assert message.context["statement"]["style"] == "balance_forward"
    assert len(emails(transport)) == 1
    with pytest.raises(MailerError, match="Quiet has nothing|C-quiet has nothing"):
        await services.sending.send_statement("C-quiet", tenant="acme")
    with pytest.raises(MailerError, match="no customer with id 'C-nobody'"):
        await services.sending.send_statement("C-nobody", tenant="acme")


async def test_a_customer_on_its_own_weekly_schedule(services: Services, clock: FixedClock) -> None:
    """The tenant sends no statements; one customer asked for them every Friday."""
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"][0]["statements"] = "weekly:fri"
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    clock.set(START)  # Monday 2 March
    await services.dunning.tick()
    with Session(services.engine) as session:
        c1 = session.exec(select(Customer)).one()
        assert c1.next_statement_at == datetime(2026, 3, 6, 8, tzinfo=UTC)  # Friday 08:00
    clock.set(datetime(2026, 3, 6, 8, tzinfo=UTC))
    dunning, _ = await services.dunning.tick()
    assert dunning.queued["statement"] == 1
    # Back to the tenant's schedule (none): no more statements.
    doc["customers"][0]["statements"] = ""
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    clock.set(datetime(2026, 3, 13, 9, tzinfo=UTC))
    dunning, _ = await services.dunning.tick()
    assert dunning.queued["statement"] == 0
    doc["customers"][0]["statements"] = "fortnightly"
    report = services.ledger.import_document(doc, tenant="acme")
    assert [e.where for e in report.errors] == ["customers[0].statements"]
    assert "monthly:D" in report.errors[0].reason


@pytest.mark.services_config(
    tenants={
        "acme": {
            "name": "Acme",
            "email": "ar@acme.example",
            "emails": {"subscription_billed_soon": {"enabled": True}},
        }
    }
)
async def test_a_billed_soon_notice_waits_for_the_send_window(
    services: Services, clock: FixedClock
) -> None:
    clock.set(datetime(2026, 3, 2, 22, tzinfo=UTC))  # Monday night
    doc = copy.deepcopy(DEMO_DOC)
    doc["subscriptions"] = [
        {"id": "sub-1", "customer": "C-1", "plan": "Business", "amount": "49.00",
         "currency": "EUR", "interval": "month", "status": "active",
         "started_at": "2026-02-02", "next_bill_at": "2026-03-05"}
    ]  # fmt: skip
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    dunning, _ = await services.dunning.tick()
    assert dunning.queued["subscription_billed_soon"] == 0
    clock.set(datetime(2026, 3, 3, 8, tzinfo=UTC))  # the window opens
    dunning, _ = await services.dunning.tick()
    assert dunning.queued["subscription_billed_soon"] == 1
