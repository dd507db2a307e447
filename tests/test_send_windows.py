"""Send windows hold for every automatic email, at every moment the engine decides.

Reminders, customer-level summaries, statements and the billed-soon notice go out only at a
moment inside the window on a business day (not a holiday) in the customer's zone: in the
pass that finds them due, in catch-up after downtime, in ``dunmail run``'s first pass, and at
delivery of a message queued before the window closed. Emails that answer what the customer
did (receipts and the rest) and anything a person sends by hand go at once.

The property runs the pure decision (``scheduler/cadence.py``) under any zone, window,
business days, holidays, cadence and engine downtime; the rest runs the real services over
SQLite and PostgreSQL, and ``dunmail run`` against a loopback SMTP server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from email import message_from_bytes
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import Session, col, select

from dunmail.app import Services
from dunmail.runner import run_engine
from mailer.clock import FixedClock
from mailer.content.kinds import KINDS
from mailer.db import make_engine
from mailer.dunning_config import WEEKDAYS, Cadence, CadenceStep, DunningConfig
from mailer.errors import TransientDeliveryError
from mailer.ledger.models import Customer, Invoice, InvoiceStatus
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.models import Message, MessageStatus
from scheduler.cadence import DunningState, InvoiceFacts, Rules, evaluate, occasion_step
from scheduler.calendar import SendCalendar
from tests.conftest import START
from tests.smtpd import RecordingServer

ZONES = (
    "Pacific/Kiritimati",  # UTC+14
    "Pacific/Auckland",  # DST, southern hemisphere
    "Asia/Kolkata",  # +5:30
    "Europe/Paris",  # DST
    "UTC",
    "America/St_Johns",  # -3:30, DST
    "Pacific/Pago_Pago",  # UTC-11
    "America/New_York",  # DST
)
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def local(zone: ZoneInfo, year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    """An aware instant given as the wall-clock time in ``zone``, in UTC."""
    return datetime(year, month, day, hour, minute, tzinfo=zone).astimezone(UTC)


def test_the_kinds_that_wait_for_the_window() -> None:
    """One table: what the engine sends on its own schedule waits; answers go at once."""
    windowed = {name for name, spec in KINDS.items() if spec.windowed}
    assert windowed == {
        "invoice_reminder",
        "late_payment_reminder",
        "overdue_summary",
        "statement",
        "subscription_billed_soon",
    }


# -- the property over the pure decision ---------------------------------------------------------


@dataclass(frozen=True)
class Ticks:
    """When the engine decides: every ``every`` from ``first``, except while it is down in
    ``[down_from, back_at)``; the restart's first pass is at ``back_at`` (``dunmail run``
    catches up at once), then every ``every`` from there."""

    first: datetime
    every: timedelta
    down_from: datetime
    back_at: datetime

    def at_or_after(self, moment: datetime) -> datetime:
        if moment < self.down_from:
            tick = self.first + max(0, -((self.first - moment) // self.every)) * self.every
            if tick < self.down_from:
                return tick
        if moment <= self.back_at:
            return self.back_at
        return self.back_at + -((self.back_at - moment) // self.every) * self.every


@dataclass(frozen=True)
class Scenario:
    zone: str
    start: time
    end: time
    weekdays: frozenset[int]
    holidays: frozenset[date]
    cadence: Cadence
    due_at: datetime
    ticks: Ticks

    def __repr__(self) -> str:
        steps = [(s.days, s.repeat_every_days, s.max_repeats) for s in self.cadence.steps]
        return (
            f"Scenario({self.zone}, window {self.start}-{self.end}, days {sorted(self.weekdays)},"
            f" holidays {sorted(self.holidays)}, steps {steps}, due {self.due_at},"
            f" ticks every {self.ticks.every} from {self.ticks.first},"
            f" down {self.ticks.down_from} - {self.ticks.back_at})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def inside(self, moment: datetime) -> bool:
        """Inside the window on a business day where the customer is, worked out here from
        the wall clock, not by the calendar under test."""
        wall = moment.astimezone(ZoneInfo(self.zone))
        return (
            wall.weekday() in self.weekdays
            and wall.date() not in self.holidays
            and self.start <= wall.time()
            and (wall.time() < self.end or self.end == time.max)  # an end of 24:00
        )

    def day(self, moment: datetime) -> date:
        return moment.astimezone(ZoneInfo(self.zone)).date()


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    zone = draw(st.sampled_from(ZONES))
    opens = draw(st.integers(0, 22 * 60))  # minutes after midnight
    closes = draw(st.integers(opens + 60, 24 * 60))  # an hour at least; 24:00 is midnight
    weekdays = draw(st.sets(st.sampled_from(WEEKDAYS), min_size=1))
    due_at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(
        minutes=draw(st.integers(0, 2 * 365 * 24 * 60))
    )
    holidays = draw(
        st.lists(st.integers(-15, 90).map(lambda d: due_at.date() + timedelta(days=d)), max_size=6)
    )
    days = sorted(draw(st.lists(st.integers(-10, 40), min_size=1, max_size=4, unique=True)))
    steps = [CadenceStep(days=d) for d in days[:-1]]
    repeats = draw(st.none() | st.tuples(st.integers(1, 10), st.integers(1, 4)))
    every_days, max_repeats = repeats or (None, None)
    steps.append(CadenceStep(days=days[-1], repeat_every_days=every_days, max_repeats=max_repeats))
    config = DunningConfig(
        window=f"{opens // 60:02d}:{opens % 60:02d}-{closes // 60:02d}:{closes % 60:02d}",
        business_days=sorted(weekdays, key=WEEKDAYS.index),
        holidays=holidays,
    )
    first = due_at - timedelta(days=20, minutes=draw(st.integers(0, 24 * 60)))
    down_from = first + timedelta(minutes=draw(st.integers(0, 70 * 24 * 60)))
    back_at = down_from + timedelta(minutes=draw(st.integers(0, 25 * 24 * 60)))
    start, end = config.window_times
    return Scenario(
        zone=zone,
        start=start,
        end=end,
        weekdays=config.weekdays,
        holidays=frozenset(config.holidays),
        cadence=Cadence(steps=steps),
        due_at=due_at,
        ticks=Ticks(first, timedelta(minutes=draw(st.integers(1, 60))), down_from, back_at),
    )


def _calendar(s: Scenario) -> SendCalendar:
    return SendCalendar(ZoneInfo(s.zone), s.start, s.end, s.weekdays, s.holidays)


def _run(s: Scenario, horizon: datetime) -> list[tuple[datetime, str]]:
    """The dunning pass's loop for one invoice: at each tick at or after its next time,
    evaluate and store the new state, as ``scheduler/dunning.py`` does."""
    rules = Rules(
        calendar=_calendar(s), grace=timedelta(minutes=5), cadence=s.cadence, sends=lambda k: True
    )
    issued = s.ticks.first - timedelta(days=30)
    facts = InvoiceFacts(
        number="INV-1",
        status=InvoiceStatus.OPEN,
        balance_minor=10_000,
        currency="EUR",
        issued_at=issued,
        due_at=s.due_at,
        updated_at=issued,
        chase=True,
        state=DunningState(sent_at=issued),
    )
    sent: list[tuple[datetime, str]] = []
    next_at = s.ticks.first
    while True:
        now = s.ticks.at_or_after(next_at)
        if now > horizon:
            return sent
        result = evaluate(facts, rules, now)
        if result.action is not None:
            sent.append((now, result.action.occasion))
        facts = replace(facts, state=result.state)
        if result.next_at is None:
            return sent
        assert result.next_at > now  # else the pass would never look at the invoice again
        next_at = result.next_at


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_every_reminder_goes_inside_the_window_never_early_and_once(s: Scenario) -> None:
    steps = s.cadence.steps
    last_due = s.day(s.due_at) + timedelta(days=steps[-1].days)
    horizon = max(datetime.combine(last_due, time(), tzinfo=UTC), s.ticks.back_at) + timedelta(
        days=60
    )
    sent = _run(s, horizon)
    occasions = [occasion for _, occasion in sent]
    assert len(occasions) == len(set(occasions)), f"sent twice: {occasions}"
    previous: dict[int, datetime] = {}  # step index -> its last send
    for moment, occasion in sent:
        assert s.inside(moment), f"{occasion} at {moment.astimezone(ZoneInfo(s.zone))}"
        assert not s.ticks.down_from <= moment < s.ticks.back_at
        parsed = occasion_step(occasion)
        assert parsed is not None
        index, repeat = parsed
        step = steps[index]
        if repeat == 0:
            due_day = s.day(s.due_at) + timedelta(days=step.days)
        else:
            assert step.repeat_every_days is not None and index in previous
            due_day = s.day(previous[index]) + timedelta(days=step.repeat_every_days)
        assert s.day(moment) >= due_day, f"{occasion} sent {s.day(moment)}, due {due_day}"
        previous[index] = moment
    # Sixty days past the last step and the restart, with a tick in every window: chased.
    assert sent, "a reminder that fell due was never sent"


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.integers(0, 3 * 365 * 24 * 60))
def test_the_next_opening_is_inside_the_window_and_not_before(s: Scenario, minutes: int) -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes, seconds=minutes % 59)
    calendar = _calendar(s)
    opens = calendar.next_open(moment)
    assert opens >= moment
    assert s.inside(opens)
    assert calendar.is_open(moment) == s.inside(moment)
    assert opens - moment < timedelta(days=30)


# -- through the real services -----------------------------------------------------------------

STEP_ONE_DAY_LATE = {"standard": {"steps": [{"days": 1}]}}


def _document(zone: str | None, due_at: str, number: str = "INV-7") -> dict[str, Any]:
    customer: dict[str, Any] = {
        "id": "C-1",
        "name": "Globex",
        "contacts": [{"email": "ap@globex.example", "name": "AP", "roles": ["ap"]}],
    }
    if zone is not None:
        customer["time_zone"] = zone
    return {
        "customers": [customer],
        "invoices": [
            {
                "id": number.lower(),
                "number": number,
                "customer": "C-1",
                "currency": "EUR",
                "issued_at": "2026-03-02T09:00:00+00:00",
                "due_at": due_at,
                "status": "open",
                "lines": [{"description": "Support", "quantity": "1", "unit_price": "120.00"}],
            }
        ],
    }


def _settings(*, tenant: dict[str, Any] | None = None, **config: Any) -> dict[str, Any]:
    """make_config's arguments for one tenant, reminding a day after the due date; ``tenant``
    adds to its table."""
    acme = {
        "name": "Acme",
        "email": "ar@acme.example",
        "dunning": {"cadences": STEP_ONE_DAY_LATE},
        **(tenant or {}),
    }
    return {"tenants": {"acme": acme}, **config}


@pytest.fixture
def transport(request: pytest.FixtureRequest) -> MemoryTransport | None:
    """Memory, or (a test parametrizes this fixture indirectly with "smtp") SMTP to ``smtpd``."""
    return None if getattr(request, "param", None) == "smtp" else MemoryTransport()


@pytest.fixture
def services_config(
    request: pytest.FixtureRequest, transport: MemoryTransport | None
) -> dict[str, Any]:
    """This module's shared ``services``: ``_settings()`` unless the test's
    ``services_config`` marker says otherwise; over SMTP, the relay is ``smtpd``."""
    marker = request.node.get_closest_marker("services_config")
    settings = dict(marker.kwargs) if marker else _settings()
    if transport is None:
        smtpd: RecordingServer = request.getfixturevalue("smtpd")
        settings["relay"] = {"domain": "relay.example", "host": smtpd.host, "port": smtpd.port}
    return settings


@pytest.fixture
async def paris(
    services: Services, transport: MemoryTransport, clock: FixedClock
) -> tuple[Services, MemoryTransport]:
    """A customer in Paris; invoice due Thursday 12 March, reminded a day later (Friday)."""
    doc = _document("Europe/Paris", "2026-03-12T12:00:00+00:00")
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    await _tick_at(services, clock, START + timedelta(minutes=5))  # the invoice goes out
    assert _sent_kinds(services) == [("new_invoice", "sent")]
    return services, transport


async def _tick_at(services: Services, clock: FixedClock, when: datetime) -> None:
    clock.set(when)
    await services.dunning.tick()


def _reminders(services: Services) -> list[Message]:
    with Session(services.engine) as session:
        return list(
            session.exec(
                select(Message)
                .where(col(Message.kind) == "late_payment_reminder")
                .order_by(col(Message.id))
            ).all()
        )


def _sent_kinds(services: Services) -> list[tuple[str, str]]:
    with Session(services.engine) as session:
        rows = session.exec(select(Message).order_by(col(Message.id))).all()
        return [(m.kind, m.status.value) for m in rows]


async def test_engine_down_over_a_weekend_catches_up_on_monday_morning(
    paris: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = paris
    await _tick_at(services, clock, local(PARIS, 2026, 3, 13, 7, 30))  # Friday, before 08:00
    assert _reminders(services) == []
    # Down from Friday 07:30 until Saturday 11:00: the reminder fell due meanwhile.
    await _tick_at(services, clock, local(PARIS, 2026, 3, 14, 11, 0))
    await _tick_at(services, clock, local(PARIS, 2026, 3, 15, 15, 0))  # Sunday
    await _tick_at(services, clock, local(PARIS, 2026, 3, 16, 7, 59))  # Monday, still closed
    assert _reminders(services) == []
    assert len(transport.sent) == 1
    [entry] = services.dunning.plan(tenant="acme", everything=True)
    assert entry.next_at == local(PARIS, 2026, 3, 16, 8, 0)
    await _tick_at(services, clock, local(PARIS, 2026, 3, 16, 8, 0))
    [reminder] = _reminders(services)
    assert reminder.status is MessageStatus.SENT
    assert reminder.created_at.astimezone(PARIS) == datetime(2026, 3, 16, 8, 0, tzinfo=PARIS)
    await _tick_at(services, clock, local(PARIS, 2026, 3, 16, 8, 5))
    assert len(_reminders(services)) == 1 and len(transport.sent) == 2


async def test_a_reminder_queued_before_the_window_closed_waits_for_the_next_opening(
    paris: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    """Queued at 17:55 on Friday, then the engine stopped before delivering it; it came back
    at 18:05. The message waits, unattempted, for Monday 08:00, and goes once."""
    services, transport = paris
    clock.set(local(PARIS, 2026, 3, 13, 17, 55))
    services.dunning.invoices.run_pass(clock.now())  # decided and queued; not delivered
    [queued] = _reminders(services)
    assert queued.status is MessageStatus.QUEUED
    await _tick_at(services, clock, local(PARIS, 2026, 3, 13, 18, 5))
    [held] = _reminders(services)
    assert held.status is MessageStatus.QUEUED and held.attempts == 0
    assert held.next_attempt_at == local(PARIS, 2026, 3, 16, 8, 0)
    assert len(transport.sent) == 1  # the invoice only
    await _tick_at(services, clock, local(PARIS, 2026, 3, 14, 10, 0))  # Saturday
    assert len(transport.sent) == 1
    await _tick_at(services, clock, local(PARIS, 2026, 3, 16, 8, 0))
    [sent] = _reminders(services)
    assert sent.status is MessageStatus.SENT and sent.attempts == 1
    assert len(transport.sent) == 2


async def test_a_retry_that_falls_after_the_window_waits_for_the_next_opening(
    paris: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = paris
    transport.fail_next(TransientDeliveryError(421, "4.3.2 try again later"))
    await _tick_at(services, clock, local(PARIS, 2026, 3, 13, 17, 58))  # Friday
    [deferred] = _reminders(services)
    assert deferred.status is MessageStatus.DEFERRED and deferred.attempts == 1
    await _tick_at(services, clock, local(PARIS, 2026, 3, 13, 18, 30))  # the retry is due
    [held] = _reminders(services)
    assert held.attempts == 1 and held.next_attempt_at == local(PARIS, 2026, 3, 16, 8, 0)
    assert len(transport.sent) == 1
    await _tick_at(services, clock, local(PARIS, 2026, 3, 16, 8, 0))
    [sent] = _reminders(services)
    assert sent.status is MessageStatus.SENT and sent.attempts == 2
    assert len(transport.sent) == 2


async def test_what_answers_the_customer_or_a_person_goes_at_once_at_night(
    paris: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    """Friday 22:00 in Paris: a payment's receipt, a reminder and a statement sent by hand."""
    services, transport = paris
    clock.set(local(PARIS, 2026, 3, 13, 22, 0))
    payment = {
        "payments": [
            {
                "id": "p-1",
                "customer": "C-1",
                "amount": "20.00",
                "currency": "EUR",
                "received_at": "2026-03-13T20:30:00Z",
                "invoices": [{"invoice": "inv-7", "amount": "20.00"}],
            }
        ]
    }
    assert services.ledger.import_document(payment, tenant="acme").errors == []
    dunning, delivered = await services.dunning.tick()
    assert dunning.queued["payment_receipt"] == 1 and delivered.sent == 1
    assert _reminders(services) == []  # the automatic one waits for Monday
    by_hand = await services.sending.send_invoice(
        "INV-7", kind="late_payment_reminder", tenant="acme"
    )
    assert by_hand.status is MessageStatus.SENT
    [statement] = await services.sending.send_statement("C-1", tenant="acme")
    assert statement.status is MessageStatus.SENT
    kinds = [str(message_from_bytes(m.data)["Subject"]) for m in transport.sent]
    assert len(kinds) == 4, kinds  # invoice, receipt, reminder by hand, statement by hand


@pytest.mark.services_config.with_args(
    **_settings(
        tenant={
            "time_zone": "Europe/Paris",
            "dunning": {
                "cadences": STEP_ONE_DAY_LATE,
                "statements": {"every": "monthly", "day": 1},
            },
        }
    )
)
async def test_a_new_york_statement_goes_at_the_window_opening_new_york_time(
    services: Services, clock: FixedClock
) -> None:
    """The tenant is in Paris and sends statements on the 1st; one customer is in New York,
    the other has no zone of its own (the tenant's)."""
    doc = _document("America/New_York", "2026-04-20T12:00:00+00:00")
    paris_only = _document(None, "2026-04-20T12:00:00+00:00", number="INV-8")
    paris_only["customers"][0]["id"] = "C-2"
    paris_only["invoices"][0]["customer"] = "C-2"
    doc["customers"] += paris_only["customers"]
    doc["invoices"] += paris_only["invoices"]
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    await _tick_at(services, clock, START)
    with Session(services.engine) as session:
        scheduled = {c.external_id: c.next_statement_at for c in session.exec(select(Customer))}
    assert scheduled == {
        "C-1": local(NEW_YORK, 2026, 4, 1, 8, 0),  # 12:00 UTC
        "C-2": local(PARIS, 2026, 4, 1, 8, 0),  # 06:00 UTC
    }
    await _tick_at(services, clock, local(PARIS, 2026, 4, 1, 8, 0))  # 02:00 in New York
    assert _statement_customers(services) == ["C-2"]
    await _tick_at(services, clock, local(NEW_YORK, 2026, 4, 1, 7, 59))
    assert _statement_customers(services) == ["C-2"]
    await _tick_at(services, clock, local(NEW_YORK, 2026, 4, 1, 8, 0))
    assert _statement_customers(services) == ["C-2", "C-1"]
    with Session(services.engine) as session:
        new_york = session.exec(select(Customer).where(col(Customer.external_id) == "C-1"))
        assert new_york.one().next_statement_at == local(NEW_YORK, 2026, 5, 1, 8, 0)


def _statement_customers(services: Services) -> list[str]:
    with Session(services.engine) as session:
        rows = session.exec(
            select(Message).where(col(Message.kind) == "statement").order_by(col(Message.id))
        ).all()
        assert all(m.status is MessageStatus.SENT for m in rows)
        return [m.context["customer"]["id"] for m in rows]


@pytest.mark.parametrize("transport", ["smtp"], indirect=True)
@pytest.mark.services_config.with_args(
    **_settings(tenant={"time_zone": "Europe/Paris"}, web={"enabled": False})
)
async def test_dunmail_run_at_night_sends_the_overdue_reminder_the_next_business_morning(
    services: Services, clock: FixedClock, smtpd: RecordingServer
) -> None:
    """``dunmail run`` catches up at once when it starts. Started on Wednesday at 21:00 in
    New York, with a reminder overdue since that morning, its first pass sends nothing; run
    again on Thursday at 08:00, it sends the reminder, once."""
    config = services.config
    clock.set(START)
    try:
        doc = _document("America/New_York", "2026-03-10T16:00:00+00:00")  # Tuesday
        assert services.ledger.import_document(doc, tenant="acme").errors == []
        await _tick_at(services, clock, START + timedelta(minutes=5))
    finally:
        await services.close()
    assert len(smtpd.messages) == 1  # the invoice

    async def first_pass(at: datetime) -> None:
        clock.set(at)
        stop = asyncio.Event()
        stop.set()  # stop right after the catch-up pass
        await asyncio.wait_for(run_engine(config, clock, stop=stop), 60)

    await first_pass(local(NEW_YORK, 2026, 3, 11, 21, 0))  # Wednesday night
    assert len(smtpd.messages) == 1
    probe = make_engine(config.database.url)
    try:
        with Session(probe) as session:
            assert (
                session.exec(select(Message).where(col(Message.kind) != "new_invoice")).all() == []
            )
            invoice = session.exec(select(Invoice)).one()
            assert invoice.next_action_at == local(NEW_YORK, 2026, 3, 12, 8, 0)
        await first_pass(local(NEW_YORK, 2026, 3, 12, 8, 0))  # Thursday morning
        assert len(smtpd.messages) == 2
        assert "INV-7" in str(smtpd.messages[1]["Subject"])
        with Session(probe) as session:
            [reminder] = session.exec(
                select(Message).where(col(Message.kind) == "late_payment_reminder")
            ).all()
            assert reminder.status is MessageStatus.SENT
    finally:
        probe.dispose()
