"""The pure dunning rules: send windows, grace, cadence steps, catch-up, repeats, holds."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from mailer.dunning_config import Cadence, CadenceStep, DunningConfig
from mailer.ledger.models import HoldReason, InvoiceStatus
from scheduler.cadence import (
    ActiveHold,
    DunningState,
    InvoiceFacts,
    Rules,
    evaluate,
    manual_send,
    occasion_step,
)
from scheduler.calendar import SendCalendar

UTC_ZONE = "UTC"
# Due Tuesday 2026-03-10 (midnight UTC, as a date-only import stores it).
DUE = datetime(2026, 3, 10, tzinfo=UTC)
ISSUED = datetime(2026, 2, 24, 10, 0, tzinfo=UTC)


def _rules(
    config: DunningConfig | None = None, zone: str = UTC_ZONE, off: tuple[str, ...] = ()
) -> Rules:
    config = config or DunningConfig()
    return Rules(
        calendar=SendCalendar.of(config, zone),
        grace=config.grace,
        cadence=config.cadences[config.cadence],
        sends=lambda kind: kind not in off,
        min_balance={c: config.min_balance_minor(c) for c in config.min_balance},
    )


def _facts(**changes: object) -> InvoiceFacts:
    facts = InvoiceFacts(
        number="INV-1",
        status=InvoiceStatus.OPEN,
        balance_minor=12_000,
        currency="EUR",
        issued_at=ISSUED,
        due_at=DUE,
        updated_at=ISSUED,
        chase=True,
        state=DunningState(sent_at=ISSUED + timedelta(minutes=5)),
    )
    return replace(facts, **changes)  # type: ignore[arg-type]


def at(day: int, hour: int = 10, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


# -- send windows ----------------------------------------------------------------------------


def test_window_moves_evenings_weekends_and_holidays_to_the_next_opening() -> None:
    config = DunningConfig(holidays=[date(2026, 3, 16)])
    cal = SendCalendar.of(config, "Europe/Paris")
    # Friday 19:00 Paris -> Monday is a holiday -> Tuesday 08:00 Paris (07:00 UTC in winter).
    friday_evening = datetime(2026, 3, 13, 18, 0, tzinfo=UTC)
    assert cal.next_open(friday_evening) == datetime(2026, 3, 17, 7, 0, tzinfo=UTC)
    # Inside the window: unchanged. Before it: that morning's opening.
    inside = datetime(2026, 3, 11, 9, 30, tzinfo=UTC)
    assert cal.next_open(inside) == inside
    assert cal.next_open(datetime(2026, 3, 11, 5, 0, tzinfo=UTC)) == at(11, 7)


def test_a_step_after_a_dst_change_keeps_its_wall_clock_time() -> None:
    """Due the Friday before Europe/London's spring change; the +3 step lands on Monday at
    08:00 local, which is 07:00 UTC after the change (it was 08:00 UTC the week before)."""
    cal = SendCalendar.of(DunningConfig(), "Europe/London")
    before = cal.at(date(2026, 3, 27))  # Friday, GMT
    after = cal.at(date(2026, 3, 30))  # Monday, BST
    assert before == datetime(2026, 3, 27, 8, 0, tzinfo=UTC)
    assert after == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
    assert after.astimezone(ZoneInfo("Europe/London")).time() == time(8, 0)


def test_an_opening_inside_the_spring_gap_happens_once() -> None:
    """A 02:30 window start on the night the clocks jump from 02:00 to 03:00."""
    config = DunningConfig(window="02:30-18:00", business_days=["sun"])
    cal = SendCalendar.of(config, "Europe/London")
    opening = cal.at(date(2026, 3, 29))
    assert opening == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 02:30 GMT = 03:30 BST


# -- the new invoice email -------------------------------------------------------------------


def test_new_invoice_waits_for_the_grace_period_and_each_edit_restarts_it() -> None:
    rules = _rules()
    fresh = _facts(state=DunningState(sent_at=None), issued_at=at(2, 9), updated_at=at(2, 9))
    waiting = evaluate(fresh, rules, at(2, 9, 4))
    assert waiting.action is None and waiting.next_at == at(2, 9, 5)
    assert "grace" in waiting.reason
    edited = replace(fresh, updated_at=at(2, 9, 4))  # an edit at minute 4
    assert evaluate(edited, rules, at(2, 9, 5)).action is None
    assert evaluate(edited, rules, at(2, 9, 5)).next_at == at(2, 9, 9)
    done = evaluate(edited, rules, at(2, 9, 9))
    assert done.action is not None and done.action.kind == "new_invoice"
    assert done.state.sent_at == at(2, 9, 9)
    # The next look is the first reminder: 3 days before the due date is Saturday the 7th,
    # so Monday at the window's start.
    assert done.next_at == at(9, 8)


def test_a_future_dated_invoice_waits_for_its_issue_date() -> None:
    issue = at(20, 0)
    facts = _facts(state=DunningState(sent_at=None), issued_at=issue, updated_at=at(2, 9))
    result = evaluate(facts, _rules(), at(2, 9, 30))
    assert result.action is None and result.next_at == issue
    assert "issue date" in result.reason


def test_a_sent_invoice_gets_no_new_invoice_email() -> None:
    result = evaluate(_facts(), _rules(), at(2, 12))
    assert result.action is None


@pytest.mark.parametrize(
    "status", [InvoiceStatus.DRAFT, InvoiceStatus.VOID, InvoiceStatus.PAID], ids=str
)
def test_drafts_voided_and_paid_invoices_are_never_chased(status: InvoiceStatus) -> None:
    facts = _facts(status=status, state=DunningState(sent_at=None))
    result = evaluate(facts, _rules(), at(20))
    assert result.action is None and result.next_at is None


def test_switched_off_new_invoice_email_goes_straight_to_the_cadence() -> None:
    facts = _facts(state=DunningState(sent_at=None))
    # 3 days before due is Saturday the 7th: the reminder waits for Monday's window.
    assert evaluate(facts, _rules(off=("new_invoice",)), at(7, 9)).next_at == at(9, 8)
    result = evaluate(facts, _rules(off=("new_invoice",)), at(9, 9))
    assert result.action is not None and result.action.kind == "invoice_reminder"


# -- the cadence -----------------------------------------------------------------------------


def test_each_step_goes_out_once_at_its_time() -> None:
    rules = _rules()
    facts = _facts()
    sent = []
    now = at(2, 10)
    while now < at(20, month=4):
        result = evaluate(facts, rules, now)
        if result.action:
            sent.append((now, result.action.kind, result.action.occasion))
        facts = replace(facts, state=result.state)
        assert result.next_at is None or result.next_at > now
        now = result.next_at or at(20, month=4)
    assert (
        sent
        == [
            (at(9, 8), "invoice_reminder", "step 1"),  # Saturday 7th -> Monday 9th 08:00
            (at(11, 8), "late_payment_reminder", "step 2"),
            (at(17, 8), "late_payment_reminder", "step 3"),
            (at(24, 8), "late_payment_reminder", "step 4"),
            (at(31, 8), "late_payment_reminder", "step 4 repeat 1"),
            (at(7, 8, month=4), "late_payment_reminder", "step 4 repeat 2"),
            (at(14, 8, month=4), "late_payment_reminder", "step 4 repeat 3"),
            (datetime(2026, 4, 21, 8, tzinfo=UTC), "late_payment_reminder", "step 4 repeat 4"),
        ][: len(sent)]
    )
    assert len(sent) == 7  # the fourth repeat is on 21 April, after the loop's end


def test_after_downtime_only_the_latest_due_step_is_sent() -> None:
    """Down from the 5th to the 20th: steps 1-3 fell due; one email (step 3) goes out."""
    result = evaluate(_facts(), _rules(), at(20, 11))
    assert result.action is not None and result.action.occasion == "step 3"
    assert "2 earlier step(s) folded" in result.reason
    assert result.state.step == 3
    again = evaluate(replace(_facts(), state=result.state), _rules(), at(20, 11, 5))
    assert again.action is None  # evaluated again in the same minute: nothing twice


def test_a_repeat_skipped_for_weeks_is_sent_once() -> None:
    state = DunningState(sent_at=ISSUED, step=4, repeats=0, last_dunned_at=at(24, 8))
    result = evaluate(_facts(state=state), _rules(), at(28, 10, month=4))
    assert result.action is not None and result.action.occasion == "step 4 repeat 1"
    # The next repeat is a week after this one, not one per missed week.
    assert result.next_at == datetime(2026, 5, 5, 8, tzinfo=UTC)


def test_a_step_due_before_the_invoice_email_is_covered_by_it() -> None:
    """Sent at 08:30 on the day the -3 reminder falls due (08:00): the reminder would follow
    the invoice by minutes; the invoice email covers it."""
    facts = _facts(state=DunningState(sent_at=at(9, 8, 30)))
    result = evaluate(facts, _rules(), at(9, 9))
    assert result.action is None and result.state.step == 1
    assert result.next_at == at(11, 8)


def test_hold_pauses_chasing_and_its_end_resumes_it() -> None:
    hold = ActiveHold(HoldReason.DISPUTE, ends_at=at(25, 0))
    result = evaluate(_facts(hold=hold), _rules(), at(12))
    assert result.action is None and result.next_at == at(25, 0)
    assert "dispute" in result.reason
    resumed = evaluate(_facts(hold=hold), _rules(), at(25, 8))
    # Steps 1-4 fell due meanwhile: one email, the latest, not four at once.
    assert resumed.action is not None and resumed.action.occasion == "step 4"


def test_chase_switch_and_minimum_balance_stop_reminders() -> None:
    assert evaluate(_facts(chase=False), _rules(), at(12)).action is None
    config = DunningConfig(min_balance={"EUR": "150.00"})
    result = evaluate(_facts(), _rules(config), at(12))
    assert result.action is None and "below the minimum of 150.00 EUR" in result.reason
    assert evaluate(_facts(currency="USD"), _rules(config), at(12)).action is not None


def test_a_manual_send_replaces_the_next_step_of_its_kind() -> None:
    steps = DunningConfig().cadences["standard"].steps
    state = DunningState(sent_at=ISSUED, step=2, last_dunned_at=at(11, 8))
    after = manual_send(state, steps, "late_payment_reminder", at(15, 16))
    assert after.step == 3  # the +7 step (the 17th) is done: no reminder two days later
    result = evaluate(_facts(state=after), _rules(), at(17, 9))
    assert result.action is None and result.next_at == at(24, 8)
    assert manual_send(DunningState(sent_at=None), steps, "new_invoice", at(2)).sent_at == at(2)


def test_occasions_parse_back_to_steps() -> None:
    assert occasion_step("step 2") == (1, 0)
    assert occasion_step("step 4 repeat 3") == (3, 3)
    assert occasion_step("new") is None


# -- config errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"window": "18:00-08:00"}, "end must be after the start"),
        ({"window": "8am-6pm"}, "HH:MM-HH:MM"),
        ({"business_days": []}, "at least one business day"),
        ({"cadence": "gentle"}, "cadence 'gentle' is not defined"),
        ({"min_balance": {"JPY": "1.5"}}, "JPY"),
        (
            {"cadences": {"standard": {"steps": [{"days": 3}, {"days": 3}]}}},
            "two steps on the same day",
        ),
        (
            {"cadences": {"standard": {"steps": [{"days": 3, "repeat_every_days": 7}]}}},
            "needs max_repeats",
        ),
        (
            {"cadences": {"standard": {"steps": [{"days": 3, "kind": "thank_you"}]}}},
            "invoice_reminder",
        ),
    ],
)
def test_bad_dunning_settings_are_refused_with_the_reason(
    settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        DunningConfig.model_validate(settings)
    assert message in str(info.value)


def test_a_step_without_kind_gets_reminder_before_and_late_after_the_due_date() -> None:
    cadence = Cadence(steps=[CadenceStep(days=5), CadenceStep(days=-2)])
    assert [s.days for s in cadence.steps] == [-2, 5]
    assert [s.email_kind for s in cadence.steps] == ["invoice_reminder", "late_payment_reminder"]


def test_a_paid_invoice_gets_one_thank_you_when_the_tenant_sends_them() -> None:
    paid = _facts(status=InvoiceStatus.PAID, updated_at=at(20))
    assert evaluate(paid, _rules(off=("thank_you",)), at(20, 11)).action is None
    result = evaluate(paid, _rules(), at(20, 11))
    assert result.action is not None and result.action.kind == "thank_you"
    assert result.next_at is None
    again = evaluate(replace(paid, state=result.state), _rules(), at(20, 12))
    assert again.action is None and again.reason == "paid: chasing stopped"
    # Never for an invoice we did not send (imported already paid).
    unsent = _facts(status=InvoiceStatus.PAID, state=DunningState(sent_at=None))
    assert evaluate(unsent, _rules(), at(20)).action is None
