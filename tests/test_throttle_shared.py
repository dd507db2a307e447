"""The shared throttle: GCRA's promise (pure, Hypothesis) and its database edge on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from mailer.db import make_engine
from mailer.outbound.models import ThrottleState
from mailer.outbound.ratelimit import ZERO, gcra, gcra_interval, to_micros
from mailer.outbound.throttle import SharedThrottle

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
MINUTE_US = 60_000_000


@settings(max_examples=300, deadline=None)
@given(
    rate=st.integers(1, 100_000),
    burst=st.integers(1, 50),
    steps=st.lists(st.integers(0, 3 * MINUTE_US), min_size=1, max_size=200),
    start=st.integers(0, 2**50),
)
def test_never_more_than_burst_plus_rate_times_elapsed_over_any_window(
    rate: int, burst: int, steps: list[int], start: int
) -> None:
    interval = gcra_interval(rate)
    tat, now, accepted = 0, start, []
    for step in steps:
        now += step // max(1, len(steps) // 10)  # many takes at one instant, some far apart
        cell = gcra(tat, now, interval=interval, burst=burst)
        if cell.conforms:
            assert cell.wait == 0 and cell.tat > tat
            tat = cell.tat
            accepted.append(now)
        else:
            assert cell.tat == tat and cell.wait > 0
            # the wait is exact: a take then conforms, a microsecond before it does not
            assert gcra(tat, now + cell.wait, interval=interval, burst=burst).conforms
            assert not gcra(tat, now + cell.wait - 1, interval=interval, burst=burst).conforms
    for i, first in enumerate(accepted):
        for j in range(i, len(accepted)):
            elapsed = accepted[j] - first
            assert j - i + 1 <= burst + rate * elapsed / MINUTE_US


@given(rate=st.integers(1, 100_000), burst=st.integers(1, 50), now=st.integers(0, 2**50))
def test_a_fresh_key_takes_its_burst_at_once_then_refuses(rate: int, burst: int, now: int) -> None:
    interval = gcra_interval(rate)
    tat = 0
    for _ in range(burst):
        cell = gcra(tat, now, interval=interval, burst=burst)
        assert cell.conforms
        tat = cell.tat
    assert gcra(tat, now, interval=interval, burst=burst).wait == interval


def _throttle(engine: Engine, rate: int = 60, burst: int | None = 2) -> SharedThrottle:
    return SharedThrottle(engine, lambda key: rate, burst_for=lambda key: burst)


def test_takes_beyond_the_limit_are_refused_with_the_right_wait(engine: Engine) -> None:
    throttle = _throttle(engine)  # 60 a minute: one a second, two at once
    assert throttle.delay(["domain:x.test"], T0) == ZERO
    assert throttle.delay(["domain:x.test"], T0) == ZERO
    assert throttle.delay(["domain:x.test"], T0) == SECOND
    assert throttle.delay(["domain:x.test"], T0 + SECOND / 4) == SECOND * 3 / 4
    assert throttle.delay(["domain:x.test"], T0 + SECOND) == ZERO
    assert throttle.delay(["domain:x.test"], T0 + SECOND) == SECOND
    with engine.connect() as conn:
        tat = conn.execute(sa.select(ThrottleState.tat)).scalar_one()  # type: ignore[call-overload]
    assert tat == to_micros(T0 + 3 * SECOND)


def test_a_second_throttle_on_the_database_sees_the_first_ones_takes(engine: Engine) -> None:
    one, two = _throttle(engine, burst=1), _throttle(engine, burst=1)
    assert one.delay(["domain:x.test"], T0) == ZERO
    assert two.delay(["domain:x.test"], T0) == SECOND
    assert two.delay(["domain:y.test"], T0) == ZERO  # other keys are their own


def test_nothing_is_taken_unless_every_key_conforms(engine: Engine) -> None:
    throttle = _throttle(engine, burst=1)
    assert throttle.delay(["b"], T0) == ZERO
    assert throttle.delay(["a", "b"], T0) == SECOND  # b is empty ...
    fresh = _throttle(engine, burst=1)  # (no memory of that refusal)
    assert fresh.delay(["a"], T0) == ZERO  # ... so a kept its token
    assert fresh.delay(["c", "c"], T0) == ZERO  # a key named twice costs one


def test_the_longest_wait_of_the_keys_is_returned(engine: Engine) -> None:
    rates = {"slow": 1, "fast": 60}
    throttle = SharedThrottle(engine, rates.__getitem__, burst_for=lambda key: 1)
    assert throttle.delay(["slow", "fast"], T0) == ZERO
    assert throttle.delay(["fast", "slow"], T0 + SECOND) == 59 * SECOND


def test_a_back_off_written_by_one_throttle_holds_every_other(db_url: str) -> None:
    first, second = make_engine(db_url), make_engine(db_url)  # two processes' engines
    try:
        from mailer.db import create_schema

        create_schema(first)
        one, two = _throttle(first), _throttle(second)
        assert two.delay(["domain:gmail.com"], T0) == ZERO  # open, and two has a row already
        until = T0 + timedelta(minutes=5)
        one.back_off("domain:gmail.com", until, T0, reason="421 4.7.0 slow down")
        assert two.paused_for("domain:gmail.com", T0) == timedelta(minutes=5)
        assert two.delay(["tenant:1", "domain:gmail.com"], T0 + 4 * 60 * SECOND) == 60 * SECOND
        assert two.delay(["domain:x.test"], T0) == ZERO  # other keys are unaffected
        # a relay's pause closes it without metering it
        one.back_off("endpoint:relay", T0 + SECOND, T0)
        assert two.delay(["domain:x.test"], T0, closed=["endpoint:relay"]) == SECOND
        assert two.delay(["domain:x.test"], T0 + SECOND, closed=["endpoint:relay"]) == ZERO
        # an earlier back-off never shortens the one in force
        one.back_off("domain:gmail.com", T0 + 60 * SECOND, T0)
        assert _throttle(second).paused_for("domain:gmail.com", T0) == timedelta(minutes=5)
        assert two.delay(["domain:gmail.com"], until) == ZERO
        with second.connect() as conn:
            row = conn.execute(
                sa.select(ThrottleState.reason, ThrottleState.scope).where(  # type: ignore[call-overload]
                    ThrottleState.key == "domain:gmail.com"
                )
            ).one()
        assert tuple(row) == ("421 4.7.0 slow down", "domain")
    finally:
        first.dispose()
        second.dispose()
