"""PURE: when to try a deferred message again, and when to give up."""

from __future__ import annotations

import random
from datetime import datetime, timedelta


def retry_after(
    attempts: int, *, first: timedelta, maximum: timedelta, rng: random.Random
) -> timedelta:
    """Exponential backoff with jitter after the ``attempts``-th failed attempt.

    The nominal delay doubles from ``first`` up to ``maximum``; the jitter draws uniformly from
    the upper half of it ("equal jitter"), so a server that came back is not hit by every
    deferred message in the same second, yet no retry comes sooner than half the nominal delay.
    """
    exponent = max(0, attempts - 1)
    nominal: timedelta = min(maximum, first * (2 ** min(exponent, 30)))
    half: timedelta = nominal / 2
    return half + half * rng.random()


def is_expired(created_at: datetime, now: datetime, *, max_age: timedelta) -> bool:
    """A message older than ``max_age`` fails rather than retrying again (Postfix's 5 days)."""
    return now - created_at >= max_age
