"""The pure GCRA arithmetic at its edges, and which SMTP replies call for a back-off (no clock
is read). The shared, database-kept throttle is tests/test_throttle_shared.py."""

from __future__ import annotations

import pytest

from mailer.outbound.ratelimit import enhanced_status, gcra, gcra_interval, should_back_off

MINUTE = 60_000_000  # microseconds


def test_odd_rates_round_the_interval_up_to_the_microsecond() -> None:
    assert gcra_interval(7) == 8_571_429  # 60 s / 7 = 8.5714285... s: never faster
    assert gcra_interval(60) == 1_000_000


def test_a_clock_stepping_back_hands_out_no_extra_takes() -> None:
    interval = gcra_interval(60)
    first = gcra(0, 10 * MINUTE, interval=interval, burst=1)
    assert first.conforms
    # The clock steps back a minute: the stored time still counts, so the next take waits.
    again = gcra(first.tat, 9 * MINUTE, interval=interval, burst=1)
    assert not again.conforms and again.wait == first.tat - 9 * MINUTE
    assert again.tat == first.tat  # a refusal stores nothing


@pytest.mark.parametrize(("interval", "burst"), [(0, 1), (1, 0), (-5, 3)])
def test_nonsense_settings_are_refused(interval: int, burst: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        gcra(0, 0, interval=interval, burst=burst)
    with pytest.raises(ValueError, match="at least 1"):
        gcra_interval(0)


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
