"""Money: exact conversion to and from integer minor units, refusing rather than rounding."""

from __future__ import annotations

from decimal import Decimal

import pytest

from mailer.ledger.money import from_minor, to_minor


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("12.50", "EUR", 1250),
        ("12.5", "EUR", 1250),
        ("-0.01", "EUR", -1),
        ("100", "JPY", 100),
        ("100.00", "JPY", 100),  # trailing zeros do not change the value
        ("1.234", "KWD", 1234),
        ("0.001", "BHD", 1),
    ],
)
def test_to_minor_exact(amount: str, currency: str, minor: int) -> None:
    assert to_minor(amount, currency) == minor
    assert from_minor(minor, currency) == Decimal(amount)


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        ("12.345", "EUR", "EUR has 2 decimal places"),
        ("100.5", "JPY", "JPY has 0 decimal places"),
        ("1.2345", "KWD", "KWD has 3 decimal places"),
        ("1e3", "EUR", "decimal string"),
        ("1,50", "EUR", "decimal string"),
        (" 1.50", "EUR", "decimal string"),
        ("NaN", "EUR", "decimal string"),
        ("99999999999999999", "EUR", "implausibly large"),
    ],
)
def test_to_minor_refuses_rather_than_rounds(amount: str, currency: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        to_minor(amount, currency)
