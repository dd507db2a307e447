"""Send windows: when, in the customer's own time zone, an email may go out.

Pure: dates and zones in, UTC instants out. Arithmetic is done on local *dates* and only then
turned into instants, so "7 days after the due date at 08:00" is 08:00 on both sides of a DST
change, never 07:00 or 09:00, and never twice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from mailer.dunning_config import DunningConfig
from mailer.ledger.localtime import local_date


@dataclass(frozen=True)
class SendCalendar:
    """Business days between ``start`` and ``end`` local time in ``zone``, minus holidays."""

    zone: ZoneInfo
    start: time
    end: time
    weekdays: frozenset[int]  # date.weekday(): Monday = 0
    holidays: frozenset[date]

    @classmethod
    def of(cls, config: DunningConfig, zone: str) -> SendCalendar:
        start, end = config.window_times
        return cls(ZoneInfo(zone), start, end, config.weekdays, frozenset(config.holidays))

    def in_zone(self, zone: str | None) -> SendCalendar:
        """The same window, business days and holidays where ``zone`` is (None: here)."""
        return self if not zone else replace(self, zone=ZoneInfo(zone))

    def local_date(self, moment: datetime) -> date:
        """The calendar day ``moment`` falls on where the customer is: the day its emails print
        (``mailer.ledger.localtime.local_date``, the one definition of "the customer's day")."""
        return local_date(moment, self.zone)

    def is_business_day(self, day: date) -> bool:
        return day.weekday() in self.weekdays and day not in self.holidays

    def is_open(self, moment: datetime) -> bool:
        """Whether ``moment`` is inside the window on a business day, where the customer is."""
        local = moment.astimezone(self.zone)
        wall = local.time()
        # An end of 24:00 is time.max: the day's last microsecond is inside too.
        inside = self.start <= wall and (wall < self.end or self.end == time.max)
        return inside and self.is_business_day(local.date())

    def opening(self, day: date) -> datetime | None:
        """The window's start on ``day`` (local), as UTC; None when the window does not exist
        that day.

        A start that does not exist that day (inside a spring-forward gap) resolves with the
        offset in force before the change, i.e. one hour later on the wall clock: still once.
        If that is already past the window's end, the whole window fell into the gap.
        """
        moment = datetime.combine(day, self.start, tzinfo=self.zone).astimezone(UTC)
        return moment if self.is_open(moment) and self.local_date(moment) == day else None

    def next_open(self, moment: datetime) -> datetime:
        """The first instant at or after ``moment`` that is inside the send window."""
        if self.is_open(moment):
            return moment
        local = moment.astimezone(self.zone)
        day = local.date()
        if self.is_business_day(day) and local.time() < self.start:
            opening = self.at(day)
            # Not so in the second pass of an autumn hour: the first 01:30 came an hour ago.
            if opening > moment:
                return opening
        return self.at(self._next_business_day(day))

    def at(self, day: date) -> datetime:
        """The first send time on or after local ``day``: its opening, or the next day's."""
        if not self.is_business_day(day):
            day = self._next_business_day(day)
        for _ in range(3):  # a window swallowed by a DST gap is one day a year, not two running
            opening = self.opening(day)
            if opening is not None:
                return opening
            day = self._next_business_day(day)
        raise ValueError("the send window never opens: check window and business_days")

    def _next_business_day(self, day: date) -> date:
        # Bounded: each holiday can cost a whole week (one business day a week, a holiday on
        # it), so a week per holiday and one more is as far as the next open day can be.
        for _ in range(7 * (len(self.holidays) + 1)):
            day += timedelta(days=1)
            if self.is_business_day(day):
                return day
        raise ValueError("no business day in reach: check business_days and holidays")
