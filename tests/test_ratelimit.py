"""Token buckets, keyed throttling and back-off, on fixed datetimes (no clock is read)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailer.outbound.ratelimit import (
    ZERO,
    Throttle,
    TokenBucket,
    enhanced_status,
    should_back_off,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def test_new_bucket_holds_one_minute_of_tokens():
    bucket = TokenBucket(60)

    assert [bucket.take(T0) for _ in range(60)] == [ZERO] * 60
    assert bucket.take(T0) == SECOND  # 60 a minute: the next token is one second away


def test_wait_is_reported_without_consuming():
    bucket = TokenBucket(60, burst=1)
    assert bucket.take(T0) == ZERO

    assert bucket.take(T0 + 0.25 * SECOND) == 0.75 * SECOND
    assert bucket.take(T0 + 0.25 * SECOND) == 0.75 * SECOND  # nothing was taken by asking
    assert bucket.take(T0 + SECOND) == ZERO
    assert bucket.take(T0 + SECOND) == SECOND


def test_refill_is_capped_at_burst():
    bucket = TokenBucket(600, burst=5)
    for _ in range(5):
        bucket.take(T0)

    later = T0 + timedelta(hours=1)
    assert [bucket.take(later) for _ in range(5)] == [ZERO] * 5
    assert bucket.take(later) == timedelta(milliseconds=100)


def test_taking_several_tokens_at_once():
    bucket = TokenBucket(6, burst=3)  # one token every 10 s

    assert bucket.take(T0, 2) == ZERO
    assert bucket.take(T0, 2) == 10 * SECOND
    assert bucket.available_in(T0 + 10 * SECOND, 2) == ZERO
    with pytest.raises(ValueError, match="1 to 3"):
        bucket.take(T0, 4)  # more than the bucket can ever hold


def test_odd_rates_round_waits_up_to_the_microsecond():
    bucket = TokenBucket(7, burst=1)
    bucket.take(T0)

    wait = bucket.take(T0)

    assert wait == timedelta(microseconds=8_571_429)  # 60 s / 7, rounded up
    assert bucket.take(T0 + wait) == ZERO


def test_clock_stepping_back_hands_out_no_extra_tokens():
    bucket = TokenBucket(60, burst=1)
    bucket.take(T0 + 10 * SECOND)

    assert bucket.take(T0) == SECOND  # earlier time: no refill, and none credited later
    assert bucket.take(T0 + 10.5 * SECOND) == 0.5 * SECOND


@pytest.mark.parametrize(("rate", "burst"), [(0, None), (10, 0)])
def test_bucket_rejects_nonsense_settings(rate: int, burst: int | None):
    with pytest.raises(ValueError):
        TokenBucket(rate, burst=burst)


def test_throttle_creates_buckets_from_rate_for():
    asked: list[str] = []

    def rate_for(key: str) -> int:
        asked.append(key)
        return {"tenant:acme": 2}.get(key, 60)

    throttle = Throttle(rate_for)

    assert throttle.delay(["tenant:acme", "domain:x.test"], T0) == ZERO
    assert throttle.delay(["tenant:acme", "domain:x.test"], T0) == ZERO
    assert throttle.delay(["tenant:acme", "domain:x.test"], T0) == 30 * SECOND
    assert asked == ["tenant:acme", "domain:x.test"]


def test_throttle_takes_nothing_unless_every_key_has_a_token():
    throttle = Throttle(lambda key: 1)  # one token a minute, burst one
    assert throttle.delay(["b"], T0) == ZERO

    assert throttle.delay(["a", "b"], T0) == 60 * SECOND  # b is empty ...
    assert throttle.delay(["a"], T0) == ZERO  # ... so a kept its token


def test_throttle_returns_the_longest_wait():
    throttle = Throttle(lambda key: {"slow": 1, "fast": 60}[key], burst_for=lambda key: 1)
    throttle.delay(["slow", "fast"], T0)

    assert throttle.delay(["fast", "slow"], T0 + SECOND) == 59 * SECOND


def test_throttle_counts_a_repeated_key_once():
    throttle = Throttle(lambda key: 1)

    assert throttle.delay(["x.test", "x.test"], T0) == ZERO


def test_back_off_holds_a_key_until_the_given_time():
    throttle = Throttle(lambda key: 600)
    until = T0 + timedelta(minutes=5)

    throttle.back_off("gmail.com", until)

    assert throttle.is_backed_off("gmail.com", T0)
    assert throttle.delay(["gmail.com"], T0) == timedelta(minutes=5)
    four_minutes_on = T0 + timedelta(minutes=4)
    assert throttle.delay(["gmail.com", "x.test"], four_minutes_on) == timedelta(minutes=1)
    assert throttle.delay(["x.test"], T0) == ZERO  # other keys are unaffected
    assert not throttle.is_backed_off("gmail.com", until)
    assert throttle.delay(["gmail.com"], until) == ZERO


def test_an_earlier_back_off_never_shortens_one_in_force():
    throttle = Throttle(lambda key: 600)
    throttle.back_off("k", T0 + timedelta(minutes=10))

    throttle.back_off("k", T0 + timedelta(minutes=1))

    assert throttle.is_backed_off("k", T0 + timedelta(minutes=5))


def test_prune_forgets_full_buckets_and_past_back_offs():
    throttle = Throttle(lambda key: 60)
    throttle.delay(["a", "b"], T0)
    throttle.back_off("c", T0 + SECOND)

    throttle.prune(T0 + timedelta(minutes=2))

    assert not throttle.is_backed_off("c", T0)  # forgotten, not just expired
    assert throttle.delay(["a"], T0 + timedelta(minutes=2)) == ZERO


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("4.7.0 Try again later, closing connection", "4.7.0"),
        ("4.7.28 Our system has detected an unusual rate", "4.7.28"),
        ("4.7.500 Server busy. Please try again later", "4.7.500"),
        ("421 4.7.0 [TSS04] Messages temporarily deferred", "4.7.0"),
        ("5.1.1 The email account does not exist", "5.1.1"),
        ("Service not available", None),
        ("4.7 incomplete", None),
        ("1.2.3.4 is an address", None),
        ("", None),
    ],
)
def test_enhanced_status(text: str, status: str | None):
    assert enhanced_status(text) == status


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        (421, None, True),
        (421, "4.3.2", True),
        (450, "4.7.1", True),
        (451, "4.7.500", True),
        (451, "4.3.0", False),
        (450, None, False),
        (550, "5.7.1", False),
        (250, "2.0.0", False),
    ],
)
def test_should_back_off(code: int, status: str | None, expected: bool):
    assert should_back_off(code, status) is expected
