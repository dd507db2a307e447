"""Pure rate limiting: the GCRA arithmetic the shared, database-kept throttle
(``throttle.py``) uses, and when an SMTP reply calls for a back-off; the caller passes ``now``.

The limits are kept in the database, not in the process, so every worker on every machine
shares them (a per-process bucket would let N workers send N times the limit)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

ZERO = timedelta(0)
_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROS_PER_MINUTE = 60_000_000
# RFC 3463 s2: class.subject.detail at the start of the reply text, after any reply code.
_ENHANCED_STATUS = re.compile(r"^\s*(?:[245]\d\d[ -])?\s*([245]\.\d{1,3}\.\d{1,3})(?![\d.])")


class Cell(NamedTuple):
    """A GCRA decision: ``tat`` to store when the take conforms, else ``wait`` microseconds."""

    conforms: bool
    tat: int  # the new theoretical arrival time (unchanged when it does not conform)
    wait: int  # microseconds until a take would conform; 0 when it does


def gcra_interval(rate_per_minute: int) -> int:
    """Microseconds between two takes at ``rate_per_minute``, rounded up: never faster."""
    if rate_per_minute < 1:
        raise ValueError(f"rate_per_minute must be at least 1, not {rate_per_minute}")
    return -(-_MICROS_PER_MINUTE // rate_per_minute)


def gcra(tat: int, now: int, *, interval: int, burst: int) -> Cell:
    """The generic cell rate algorithm: one take at ``now`` against a key whose theoretical
    arrival time is ``tat`` (all in microseconds since the epoch).

    A take conforms when ``max(tat, now) + interval - burst * interval <= now``: ``burst`` takes
    at once from a fresh key, then one per ``interval``. So over any window of length ``d`` at
    most ``burst + d / interval`` takes conform, which is the token bucket's promise kept in one
    number a database can update in a single statement (mailer/outbound/throttle.py does).
    """
    if burst < 1 or interval < 1:
        raise ValueError(f"burst and interval must be at least 1, not {burst}, {interval}")
    new_tat = max(tat, now) + interval
    allowed_at = new_tat - burst * interval
    if allowed_at <= now:
        return Cell(True, new_tat, 0)
    return Cell(False, tat, allowed_at - now)


def to_micros(at: datetime) -> int:
    """An aware datetime as whole microseconds since the Unix epoch (the throttle's unit)."""
    return (at - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    return _EPOCH + micros * _MICROSECOND


def enhanced_status(text: str) -> str | None:
    """The RFC 3463 status (``"4.7.0"``) that opens an SMTP reply text, or None."""
    match = _ENHANCED_STATUS.match(text)
    return match.group(1) if match else None


def should_back_off(code: int, enhanced_status: str | None) -> bool:
    """421 (RFC 5321 s3.8: closing the channel) or any 4.7.x (policy, e.g. rate limited)."""
    return code == 421 or (enhanced_status is not None and enhanced_status.startswith("4.7."))
