"""Send windows: when, in the customer's own time zone, an email may go out.

Pure: dates and zones in, UTC instants out. Arithmetic is done on local *dates* and only then
turned into instants, so "7 days after the due date at 08:00" is 08:00 on both sides of a DST
change, never 07:00 or 09:00, and never twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from mailer.dunning_config import DunningConfig
from mailer.localtime import local_date


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

    def local_date(self, moment: datetime) -> date:
        """The calendar day ``moment`` falls on where the customer is: the day its emails print
        (``mailer.localtime.local_date``, the one definition of "the customer's day")."""
        return local_date(moment, self.zone)

    def is_business_day(self, day: date) -> bool:
        return day.weekday() in self.weekdays and day not in self.holidays

    def opening(self, day: date) -> datetime:
        """The window's start on ``day`` (local), as UTC.

        A start that does not exist that day (inside a spring-forward gap) resolves with the
        offset in force before the change, i.e. one hour later on the wall clock: still once.
        """
        return datetime.combine(day, self.start, tzinfo=self.zone).astimezone(UTC)

    def next_open(self, moment: datetime) -> datetime:
        """The first instant at or after ``moment`` that is inside the send window."""
        local = moment.astimezone(self.zone)
        day = local.date()
        if self.is_business_day(day):
            if local.time() < self.start:
                return self.opening(day)
            if local.time() < self.end:
                return moment
        return self.opening(self._next_business_day(day))

    def at(self, day: date) -> datetime:
        """The first send time on or after local ``day``: its opening, or the next day's."""
        if self.is_business_day(day):
            return self.opening(day)
        return self.opening(self._next_business_day(day))

    def _next_business_day(self, day: date) -> date:
        # Bounded: a week of weekdays plus every holiday is as far as the next open day can be.
        for _ in range(8 + len(self.holidays)):
            day += timedelta(days=1)
            if self.is_business_day(day):
                return day
        raise ValueError("no business day in reach: check business_days and holidays")
