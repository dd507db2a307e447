"""``[tenants.<slug>.dunning]``: when a tenant's emails go out, validated when the config loads.

The scheduler (``scheduler/``) reads these; they live beside the rest of the tenant config so a
typo in a cadence is refused at start-up with its place, not discovered on the day it is due.
"""

from __future__ import annotations

from datetime import date, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mailer.content.kinds import Kind, ReminderKind, reminder_for
from mailer.ledger.money import to_minor

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _monday_to_friday() -> list[Weekday]:
    return ["mon", "tue", "wed", "thu", "fri"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CadenceStep(_Frozen):
    """One reminder, ``days`` after the due date (negative: before it)."""

    days: Annotated[int, Field(ge=-365, le=3650)]
    kind: ReminderKind | None = None
    repeat_every_days: Annotated[int, Field(ge=1, le=365)] | None = None
    max_repeats: Annotated[int, Field(ge=1, le=100)] | None = None

    @model_validator(mode="after")
    def _kind_and_repeats(self) -> CadenceStep:
        if self.kind is None:
            # Before the due date the customer is reminded; from the due date on, chased.
            object.__setattr__(self, "kind", reminder_for(overdue=self.days >= 0))
        if self.max_repeats is not None and self.repeat_every_days is None:
            raise ValueError("max_repeats needs repeat_every_days")
        if self.repeat_every_days is not None and self.max_repeats is None:
            raise ValueError(
                "repeat_every_days needs max_repeats: a reminder never repeats without end"
            )
        return self

    @property
    def email_kind(self) -> str:
        assert self.kind is not None  # filled in by the validator
        return self.kind


class Cadence(_Frozen):
    """An escalating series of reminders.

    ``per = "invoice"`` chases each invoice on its own; ``per = "customer"`` sends one email per
    customer for all their overdue invoices, timed by the oldest one.
    """

    per: Literal["invoice", "customer"] = "invoice"
    steps: list[CadenceStep] = Field(default_factory=list)

    @field_validator("steps")
    @classmethod
    def _ordered_and_distinct(cls, steps: list[CadenceStep]) -> list[CadenceStep]:
        days = [s.days for s in steps]
        if len(set(days)) != len(days):
            raise ValueError(f"two steps on the same day: {sorted(days)}")
        return sorted(steps, key=lambda s: s.days)

    @model_validator(mode="after")
    def _customer_cadence_is_overdue_only(self) -> Cadence:
        if self.per == "customer" and any(s.days < 0 for s in self.steps):
            raise ValueError("a per-customer cadence chases overdue invoices: days must be >= 0")
        return self


def _standard() -> dict[str, Cadence]:
    return {
        "standard": Cadence(
            steps=[
                CadenceStep(days=-3, kind=Kind.INVOICE_REMINDER),
                CadenceStep(days=1, kind=Kind.LATE_PAYMENT_REMINDER),
                CadenceStep(days=7, kind=Kind.LATE_PAYMENT_REMINDER),
                CadenceStep(
                    days=14, kind=Kind.LATE_PAYMENT_REMINDER, repeat_every_days=7, max_repeats=4
                ),
            ]
        )
    }


class StatementSchedule(_Frozen):
    """When statements go out by themselves: ``monthly`` on ``day``, ``weekly`` on ``weekday``.

    The day is at most 28 so every month has it; a day that is not a business day moves to the
    next one, inside the send window.
    """

    every: Literal["never", "monthly", "weekly"] = "never"
    day: Annotated[int, Field(ge=1, le=28)] = 1
    weekday: Weekday = "mon"
    style: Literal["open_item", "balance_forward"] = "open_item"


def parse_statement_schedule(text: str, style: str = "open_item") -> StatementSchedule:
    """A customer's own schedule as the import writes it: ``"monthly:15"``, ``"weekly:fri"``
    or ``"never"``; the tenant's statement style applies."""
    every, _, at = text.strip().lower().partition(":")
    fields: dict[str, object] | None = None
    if every == "never" and not at:
        fields = {"every": "never"}
    elif every == "monthly" and at.isdigit() and 1 <= int(at) <= 28:
        fields = {"every": "monthly", "day": int(at)}
    elif every == "weekly" and at in WEEKDAYS:
        fields = {"every": "weekly", "weekday": at}
    if fields is None:
        raise ValueError(
            f'statement schedule {text!r}: use "monthly:D" (D = 1..28), '
            '"weekly:mon" to "weekly:sun", or "never"'
        )
    return StatementSchedule.model_validate({**fields, "style": style})


class DunningConfig(_Frozen):
    """Grace period, cadences, send window, business days, holidays and minimum balances."""

    grace_minutes: Annotated[int, Field(ge=0, le=7 * 24 * 60)] = 5
    cadence: str = "standard"  # the tenant's default; a customer may name another
    cadences: dict[str, Cadence] = Field(default_factory=_standard)
    # Local time in the customer's zone (else the tenant's); "00:00-24:00": the whole day.
    window: str = "08:00-18:00"
    business_days: list[Weekday] = Field(default_factory=_monday_to_friday)
    holidays: list[date] = Field(default_factory=list)
    # Smallest balance worth chasing, per currency, in major units ("5.00"); others: any > 0.
    min_balance: dict[str, str] = Field(default_factory=dict)
    billed_soon_days: Annotated[int, Field(ge=1, le=60)] = 7  # subscription_billed_soon lead
    # A payment, refund, failed autopay, credit note or subscription change imported more than
    # this many days after it happened is history: recorded, not emailed.
    notice_max_age_days: Annotated[int, Field(ge=1, le=3650)] = 7
    statements: StatementSchedule = Field(default_factory=StatementSchedule)

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        _parse_window(value)
        return value

    @field_validator("business_days")
    @classmethod
    def _some_days(cls, value: list[Weekday]) -> list[Weekday]:
        if not value:
            raise ValueError("at least one business day is needed, or nothing is ever sent")
        return value

    @field_validator("min_balance")
    @classmethod
    def _amounts(cls, value: dict[str, str]) -> dict[str, str]:
        for currency, amount in value.items():
            try:
                to_minor(Decimal(str(amount)), currency)
            except (InvalidOperation, ValueError) as exc:
                raise ValueError(f"{currency}: {amount!r} is not an amount: {exc}") from None
        return value

    @model_validator(mode="after")
    def _default_cadence_exists(self) -> DunningConfig:
        if self.cadence not in self.cadences:
            raise ValueError(
                f"cadence {self.cadence!r} is not defined; defined: {', '.join(self.cadences)}"
            )
        return self

    @property
    def window_times(self) -> tuple[time, time]:
        return _parse_window(self.window)

    @property
    def weekdays(self) -> frozenset[int]:
        """Business days as ``date.weekday()`` numbers (Monday = 0)."""
        return frozenset(WEEKDAYS.index(d) for d in self.business_days)

    @property
    def grace(self) -> timedelta:
        return timedelta(minutes=self.grace_minutes)

    def min_balance_minor(self, currency: str) -> int:
        """The smallest balance in minor units that is chased in ``currency`` (default 1)."""
        amount = self.min_balance.get(currency)
        return 1 if amount is None else max(1, to_minor(Decimal(str(amount)), currency))


def _parse_window(value: str) -> tuple[time, time]:
    """``"08:00-18:00"``: start included, end excluded; an end of ``24:00`` is midnight, so
    ``"00:00-24:00"`` on all seven business days sends around the clock."""
    try:
        start_text, end_text = value.split("-")
        start = time.fromisoformat(start_text.strip())
        end = time.max if end_text.strip() == "24:00" else time.fromisoformat(end_text.strip())
    except ValueError:
        raise ValueError(f"window {value!r}: expected 'HH:MM-HH:MM', e.g. '08:00-18:00'") from None
    if end <= start:
        raise ValueError(f"window {value!r}: the end must be after the start")
    return start, end
