"""Clock protocol, SystemClock and FixedClock: the only place that reads the wall clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the current time as an aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that stands still until a test (or ``--at``) moves it."""

    def __init__(self, at: datetime) -> None:
        self._at = as_utc(at)

    def now(self) -> datetime:
        return self._at

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by ``delta`` and return the new time."""
        self._at += delta
        return self._at

    def set(self, at: datetime) -> None:
        """Jump to ``at`` (aware, or naive meaning UTC)."""
        self._at = as_utc(at)


def as_utc(value: datetime) -> datetime:
    """Return ``value`` as aware UTC; a naive value is taken to be UTC already.

    SQLite hands back naive datetimes even for ``DateTime(timezone=True)`` columns, so every
    comparison goes through here rather than trusting the driver.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
