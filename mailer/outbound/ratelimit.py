"""Pure rate limiting: token buckets and keyed throttling with back-off for one process, and
the GCRA arithmetic the shared, database-kept throttle uses; the caller passes ``now``."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

ZERO = timedelta(0)
_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A bucket counts in token-microseconds-per-minute: with ``rate`` tokens a minute it gains exactly
# ``rate`` units a microsecond and a token costs this many units, so no float rounding ever
# creeps in, and waits come out in whole microseconds, timedelta's resolution.
_UNITS_PER_TOKEN = 60_000_000
# RFC 3463 s2: class.subject.detail at the start of the reply text, after any reply code.
_ENHANCED_STATUS = re.compile(r"^\s*(?:[245]\d\d[ -])?\s*([245]\.\d{1,3}\.\d{1,3})(?![\d.])")


class TokenBucket:
    """``rate_per_minute`` tokens a minute, holding at most ``burst`` (one minute's worth)."""

    def __init__(self, rate_per_minute: int, *, burst: int | None = None) -> None:
        if rate_per_minute < 1:
            raise ValueError(f"rate_per_minute must be at least 1, not {rate_per_minute}")
        if burst is not None and burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        self.rate_per_minute = rate_per_minute
        self.burst = rate_per_minute if burst is None else burst
        self._capacity = self.burst * _UNITS_PER_TOKEN
        self._level = self._capacity  # a new bucket starts full
        self._updated_at: datetime | None = None

    def available_in(self, now: datetime, n: int = 1) -> timedelta:
        """How long until ``n`` tokens are there; zero if they are now. Consumes nothing."""
        if not 1 <= n <= self.burst:
            raise ValueError(f"can take 1 to {self.burst} tokens at once, not {n}")
        self._refill(now)
        missing = n * _UNITS_PER_TOKEN - self._level
        if missing <= 0:
            return ZERO
        return -(-missing // self.rate_per_minute) * _MICROSECOND  # ceiling division

    def take(self, now: datetime, n: int = 1) -> timedelta:
        """Consume ``n`` tokens and return zero, or return the wait and consume nothing."""
        wait = self.available_in(now, n)
        if wait == ZERO:
            self._level -= n * _UNITS_PER_TOKEN
        return wait

    def is_full(self, now: datetime) -> bool:
        """A full bucket behaves like a new one, so a keyed owner may forget it."""
        self._refill(now)
        return self._level >= self._capacity

    def _refill(self, now: datetime) -> None:
        if self._updated_at is not None and now > self._updated_at:
            elapsed = (now - self._updated_at) // _MICROSECOND
            self._level = min(self._capacity, self._level + elapsed * self.rate_per_minute)
        # A clock that steps backwards must not hand out tokens again later, so keep the latest.
        if self._updated_at is None or now > self._updated_at:
            self._updated_at = now


class Throttle:
    """One token bucket per key (a tenant, a recipient domain), made on first use.

    ``delay`` passes a message only when every key it touches has a token, and then takes one
    from each; ``back_off`` holds a key closed until a time, e.g. after a 421 from a domain.
    """

    def __init__(
        self,
        rate_for: Callable[[str], int],
        *,
        burst_for: Callable[[str], int | None] | None = None,
    ) -> None:
        self._rate_for = rate_for
        self._burst_for = burst_for
        self._buckets: dict[str, TokenBucket] = {}
        self._closed_until: dict[str, datetime] = {}

    def delay(self, keys: Sequence[str], now: datetime) -> timedelta:
        """Zero, having taken a token from every key; else the longest wait, taking nothing."""
        unique = list(dict.fromkeys(keys))  # a key named twice still costs one token
        longest = max((self._wait(key, now) for key in unique), default=ZERO)
        if longest > ZERO:
            return longest
        for key in unique:
            self._bucket(key).take(now)
        return ZERO

    def back_off(self, key: str, until: datetime) -> None:
        """Keep ``key`` closed until ``until``; an earlier time never shortens a back-off."""
        current = self._closed_until.get(key)
        if current is None or until > current:
            self._closed_until[key] = until

    def is_backed_off(self, key: str, now: datetime) -> bool:
        until = self._closed_until.get(key)
        return until is not None and until > now

    def paused_for(self, key: str, now: datetime) -> timedelta:
        """How long ``back_off`` still holds ``key`` closed; zero if open. Makes no bucket."""
        until = self._closed_until.get(key)
        return until - now if until is not None and until > now else ZERO

    def prune(self, now: datetime) -> None:
        """Forget full buckets and past back-offs, so one-off keys do not pile up."""
        self._closed_until = {k: t for k, t in self._closed_until.items() if t > now}
        self._buckets = {k: b for k, b in self._buckets.items() if not b.is_full(now)}

    def _wait(self, key: str, now: datetime) -> timedelta:
        return max(self.paused_for(key, now), self._bucket(key).available_in(now))

    def _bucket(self, key: str) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            burst = self._burst_for(key) if self._burst_for is not None else None
            bucket = self._buckets[key] = TokenBucket(self._rate_for(key), burst=burst)
        return bucket


class Cell(NamedTuple):
    """A GCRA decision: ``tat`` to store when the take conforms, else ``wait`` microseconds."""

    conforms: bool
    tat: int  # the new theoretical arrival time (unchanged when it does not conform)
    wait: int  # microseconds until a take would conform; 0 when it does


def gcra_interval(rate_per_minute: int) -> int:
    """Microseconds between two takes at ``rate_per_minute``, rounded up: never faster."""
    if rate_per_minute < 1:
        raise ValueError(f"rate_per_minute must be at least 1, not {rate_per_minute}")
    return -(-_UNITS_PER_TOKEN // rate_per_minute)


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
