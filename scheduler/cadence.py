"""The dunning decision for one invoice at one instant: what to send, or why nothing.

Pure: facts and rules in, an :class:`Evaluation` out. The pass (``scheduler/dunning.py``)
applies it in the transaction that enqueues the email; ``dunmail plan`` prints it; preflight
(``scheduler/preflight.py``) asks the same questions again right before sending. Keeping the
rules here, in one function, is what makes the plan and the sends agree.

The state an evaluation moves forward is three numbers on the invoice: ``dunning_step`` (steps
done), ``dunning_repeats`` (repeats of the last step done) and ``last_dunned_at``. A step is done
when its email is queued, when a person sent that email by hand, or when a later step fell due
at the same time (after downtime only the latest due step is sent: one email, not a burst).

A reminder is sent only at a moment inside the customer's send window: a step's time is the
window's opening on its day, and a pass that finds a step due outside the window (catch-up after
downtime, a first pass at night) sends nothing and looks again when the window next opens.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from mailer.content.kinds import Kind, waits_for_window
from mailer.dunning_config import Cadence, CadenceStep
from mailer.ledger.grace import grace_ends
from mailer.ledger.models import HoldReason, InvoiceStatus
from mailer.ledger.money import from_minor
from scheduler.calendar import SendCalendar


@dataclass(frozen=True)
class DunningState:
    """What has been sent for an invoice, as stored on its row."""

    sent_at: datetime | None
    step: int = 0
    repeats: int = 0
    last_dunned_at: datetime | None = None

    @property
    def last_email_at(self) -> datetime | None:
        stamps = [t for t in (self.sent_at, self.last_dunned_at) if t is not None]
        return max(stamps) if stamps else None


@dataclass(frozen=True)
class ActiveHold:
    reason: HoldReason
    ends_at: datetime | None


@dataclass(frozen=True)
class InvoiceFacts:
    """The invoice and customer fields a decision depends on."""

    number: str
    status: InvoiceStatus
    balance_minor: int
    currency: str
    issued_at: datetime
    due_at: datetime
    updated_at: datetime
    chase: bool  # the customer's switch
    state: DunningState
    hold: ActiveHold | None = None  # the hold in force now, if any
    # The settlement that closed it was a credit note, not a payment: nothing to thank for
    # (the customer gets the credit note's own email). See scheduler.invoice_state.closed_by_credit.
    closed_by_credit: bool = False


@dataclass(frozen=True)
class Rules:
    """One tenant's settings, resolved for one customer (cadence, zone)."""

    calendar: SendCalendar
    grace: timedelta
    cadence: Cadence
    sends: Callable[[str], bool]  # whether the tenant has this kind switched on
    min_balance: Mapping[str, int] = field(default_factory=dict)  # currency -> minor units

    def minimum(self, currency: str) -> int:
        """The smallest balance chased in ``currency``: anything above zero by default."""
        return self.min_balance.get(currency, 1)


@dataclass(frozen=True)
class Action:
    """An email to queue now. ``occasion`` names it in the outbox: "new", "step 2", "step 4
    repeat 1"; it is part of the idempotency key, so the same occasion is one message."""

    kind: str
    occasion: str


@dataclass(frozen=True)
class Evaluation:
    action: Action | None
    state: DunningState  # the state once the action (if any) is queued
    next_at: datetime | None  # look again then; None: only when something changes
    reason: str  # why this action, or why none, in an AR clerk's words


_OCCASION = re.compile(r"^step (\d+)(?: repeat (\d+))?$")


def occasion_step(occasion: str | None) -> tuple[int, int] | None:
    """``(step index, repeat)`` of a reminder occasion ("step 2 repeat 1" -> (1, 1))."""
    match = _OCCASION.match(occasion or "")
    if match is None:
        return None
    return int(match[1]) - 1, int(match[2] or 0)


def evaluate(facts: InvoiceFacts, rules: Rules, now: datetime) -> Evaluation:
    """Decide what to send for this invoice at ``now``; ``next_at`` is always after ``now``."""
    state = facts.state
    if facts.status is InvoiceStatus.PAID and _owes_thanks(facts, rules):
        after = replace(state, last_dunned_at=now)
        return Evaluation(Action(Kind.THANK_YOU, "paid"), after, None, "paid in full: thank you")
    if facts.status is not InvoiceStatus.OPEN:
        return Evaluation(None, state, None, _closed[facts.status])
    if state.sent_at is None and rules.sends(Kind.NEW_INVOICE):
        ready = grace_ends(facts.updated_at, rules.grace, issued_at=facts.issued_at)
        if ready > now:
            why = (
                "waits for its issue date"
                if facts.issued_at > facts.updated_at + rules.grace
                else f"grace period after the last change ({rules.grace.seconds // 60} min)"
            )
            return Evaluation(None, state, ready, f"new invoice email {why}")
        after = replace(state, sent_at=now)
        follow = _chase(facts, after, rules, now)
        return Evaluation(
            Action(Kind.NEW_INVOICE, "new"),
            follow.state,
            follow.next_at,
            "issued; grace period over",
        )
    return _chase(facts, state, rules, now)


def _owes_thanks(facts: InvoiceFacts, rules: Rules) -> bool:
    """A thank-you goes once, for an invoice the customer got from us, when it became paid
    (``updated_at``) after our last email about it, by a payment: "thank you for your
    payment" is wrong when a credit note closed it."""
    last = facts.state.last_email_at
    return (
        rules.sends(Kind.THANK_YOU)
        and not facts.closed_by_credit
        and facts.state.sent_at is not None
        and last is not None
        and last <= facts.updated_at
    )


_closed = {
    InvoiceStatus.DRAFT: "draft: never sent",
    InvoiceStatus.VOID: "voided: nothing more is sent",
    InvoiceStatus.PAID: "paid: chasing stopped",
}


def chase_blocker(facts: InvoiceFacts, rules: Rules, now: datetime) -> str | None:
    """Why a reminder may not go out now (hold, chase flag, small balance), else None."""
    hold = facts.hold
    if hold is not None and (hold.ends_at is None or hold.ends_at > now):
        until = f" until {hold.ends_at:%Y-%m-%d %H:%M} UTC" if hold.ends_at else ""
        return f"on hold ({hold.reason.value.replace('_', ' ')}){until}"
    if not facts.chase:
        return "the customer's chase switch is off"
    minimum = rules.minimum(facts.currency)
    if facts.balance_minor < minimum:
        return (
            f"balance {format_minor(facts.balance_minor, facts.currency)} is below the "
            f"minimum of {format_minor(minimum, facts.currency)} worth chasing"
        )
    return None


def _chase(facts: InvoiceFacts, state: DunningState, rules: Rules, now: datetime) -> Evaluation:
    """The reminder cadence, from ``state`` on."""
    blocked = chase_blocker(facts, rules, now)
    if blocked is not None:
        hold = facts.hold
        resume = hold.ends_at if hold is not None and hold.ends_at and hold.ends_at > now else None
        return Evaluation(None, state, resume, blocked)

    steps = rules.cadence.steps
    due_day = rules.calendar.local_date(facts.due_at)
    times = [rules.calendar.at(due_day + timedelta(days=s.days)) for s in steps]
    last_email = state.last_email_at
    fallen_due = [i for i in range(state.step, len(steps)) if times[i] <= now]
    # A step that fell due before the last email (the invoice itself, a manual reminder) is
    # covered by it: the customer heard from us after that step's time.
    eligible = [i for i in fallen_due if last_email is None or times[i] > last_email]
    if eligible:
        j = eligible[-1]
        step = steps[j]
        after = replace(state, step=j + 1, repeats=0, last_dunned_at=now)
        skipped = len(fallen_due) - 1
        why = _step_words(step) + (f"; {skipped} earlier step(s) folded into it" if skipped else "")
        if not rules.sends(step.email_kind):
            return _next(facts, after, rules, times, now, f"{why}: {step.email_kind} is off")
        closed = _window_closed(state, rules, step.email_kind, now, why)
        if closed is not None:
            return closed
        return _next(facts, after, rules, times, now, why, Action(step.email_kind, f"step {j + 1}"))
    if fallen_due:  # every one of them covered by a later email
        after = replace(state, step=fallen_due[-1] + 1, repeats=0)
        return _next(facts, after, rules, times, now, "due steps covered by an email already sent")

    repeat_at = _repeat_at(state, steps, rules.calendar)
    if repeat_at is not None and repeat_at <= now:
        step = steps[state.step - 1]
        after = replace(state, repeats=state.repeats + 1, last_dunned_at=now)
        occasion = f"step {state.step} repeat {after.repeats}"
        why = f"{_step_words(step)}, repeat {after.repeats} of {step.max_repeats}"
        if not rules.sends(step.email_kind):
            return _next(facts, after, rules, times, now, f"{why}: {step.email_kind} is off")
        closed = _window_closed(state, rules, step.email_kind, now, why)
        if closed is not None:
            return closed
        return _next(facts, after, rules, times, now, why, Action(step.email_kind, occasion))
    return _next(facts, state, rules, times, now, "")


def _window_closed(
    state: DunningState, rules: Rules, kind: str, now: datetime, why: str
) -> Evaluation | None:
    """A reminder that has fallen due waits for the customer's send window when ``now`` is
    outside it (after downtime, or a first pass at 21:00): nothing is sent or marked done, and
    the invoice is looked at again when the window opens, where the same rules decide anew."""
    if not waits_for_window(kind):
        return None
    opens = rules.calendar.next_open(now)
    if opens <= now:
        return None
    return Evaluation(
        None, state, opens, f"{why}: waits for the send window ({opens:%Y-%m-%d %H:%M} UTC)"
    )


def _next(
    facts: InvoiceFacts,
    state: DunningState,
    rules: Rules,
    times: list[datetime],
    now: datetime,
    why: str,
    action: Action | None = None,
) -> Evaluation:
    """Attach the next time to look at the invoice, from ``state`` (after the action)."""
    candidates = [t for t in times[state.step :] if t > now]
    repeat_at = _repeat_at(state, rules.cadence.steps, rules.calendar)
    if repeat_at is not None and repeat_at > now:
        candidates.append(repeat_at)
    next_at = min(candidates) if candidates else None
    if not why:
        why = (
            f"nothing due; next reminder {next_at:%Y-%m-%d %H:%M} UTC"
            if next_at
            else "cadence finished"
        )
    return Evaluation(action, state, next_at, why)


def _repeat_at(
    state: DunningState, steps: list[CadenceStep], calendar: SendCalendar
) -> datetime | None:
    """When the last step done repeats next, if it repeats at all (a later step that falls
    due first takes its place: ``_chase`` looks at steps before repeats)."""
    if state.step == 0 or state.last_dunned_at is None:
        return None
    step = steps[state.step - 1] if state.step <= len(steps) else None
    if step is None or step.repeat_every_days is None or step.max_repeats is None:
        return None
    if state.repeats >= step.max_repeats:
        return None
    day = calendar.local_date(state.last_dunned_at) + timedelta(days=step.repeat_every_days)
    return calendar.at(day)


def format_minor(amount_minor: int, currency: str) -> str:
    return f"{from_minor(amount_minor, currency)} {currency}"


def _step_words(step: CadenceStep) -> str:
    if step.days < 0:
        return f"{step.email_kind}, {-step.days} day(s) before the due date"
    if step.days == 0:
        return f"{step.email_kind}, on the due date"
    return f"{step.email_kind}, {step.days} day(s) after the due date"


def manual_send(
    state: DunningState, steps: list[CadenceStep], kind: str, now: datetime
) -> DunningState:
    """The state after a person sent ``kind`` by hand: it counts as the step it replaces.

    A new-invoice email marks the invoice sent. A reminder replaces the next pending step of
    the same kind (so the scheduled one is not sent days later), or counts as a repeat of the
    last step once the cadence has run out.
    """
    if kind == Kind.NEW_INVOICE:
        return replace(state, sent_at=state.sent_at or now)
    for i in range(state.step, len(steps)):
        if steps[i].email_kind == kind:
            return replace(state, step=i + 1, repeats=0, last_dunned_at=now)
    if state.step and state.step == len(steps):
        return replace(state, repeats=state.repeats + 1, last_dunned_at=now)
    return replace(state, last_dunned_at=now)
