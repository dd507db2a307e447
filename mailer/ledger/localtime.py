"""PURE: the customer's calendar: which day a stored instant is where the customer is.

The ledger stores every time as an aware UTC instant; a date imported without a time ("due
2026-03-31") is stored as midnight in the customer's zone (else the tenant's). Printed or
counted as a UTC date, that midnight is 30 March in Paris and Auckland (east of UTC), and a
late evening in Pago Pago is already tomorrow in UTC. So every date an email, PDF or hosted
page shows, and every "days overdue" or "renews in N days", goes through :func:`local_date`
with the zone the render context carries (``time_zone``, see
``mailer.content.context.party_context``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# The zone of a context snapshotted before contexts carried one: the engine printed UTC dates.
DEFAULT_ZONE = "UTC"


def customer_zone(customer_zone: str | None, tenant_zone: str | None) -> str:
    """The zone a customer's dates are read in: its own, else its tenant's, else UTC."""
    return customer_zone or tenant_zone or DEFAULT_ZONE


def local_date(value: str | date | datetime, zone: str | ZoneInfo | None = None) -> date:
    """The calendar day ``value`` falls on in ``zone`` (a name or a ZoneInfo; None: UTC).

    ``value`` is an instant (aware, or naive and then UTC, as the ledger stores it), its ISO
    8601 text as contexts carry it, or a date, which is a calendar day already and is returned
    as it is ("2026-03-31" is 31 March in every zone). Anything else is a TypeError and an
    unknown zone a ValueError, so a template reports them rather than printing a wrong day.
    """
    tz = zone if isinstance(zone, ZoneInfo) else _zone(zone or DEFAULT_ZONE)
    if isinstance(value, str):
        return _text_date(value, tz)
    if isinstance(value, datetime):
        return _instant_date(value, tz)
    if isinstance(value, date):
        return value
    raise TypeError(f"not a date or an instant: {type(value).__name__}")


def local_instant(value: str | datetime, zone: str) -> datetime:
    """The instant ``value`` (aware, naive UTC, or its ISO 8601 text) as a clock shows it in
    ``zone``; an unknown zone is a ValueError, as for :func:`local_date`."""
    instant = datetime.fromisoformat(value.strip()) if isinstance(value, str) else value
    aware = instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)
    return aware.astimezone(_zone(zone))


def days_between(
    start: str | date | datetime, end: str | date | datetime, zone: str | ZoneInfo | None
) -> int:
    """Calendar days from ``start``'s local day to ``end``'s (negative when ``end`` is earlier).

    "Due 31 March, today is 1 April" is one day overdue in the customer's calendar, whatever
    the hours: a due date is a day, not an instant.
    """
    return (local_date(end, zone) - local_date(start, zone)).days


def _instant_date(value: datetime, zone: ZoneInfo) -> date:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(zone).date()


@lru_cache(maxsize=8192)
def _text_date(value: str, zone: ZoneInfo) -> date:
    # Renders format the same handful of dates thousands of times in a dunning run.
    text = value.strip()
    if len(text) <= 10:  # "2026-03-31" (or "20260331"): a calendar day, not an instant
        return date.fromisoformat(text)
    return _instant_date(datetime.fromisoformat(text), zone)


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc
