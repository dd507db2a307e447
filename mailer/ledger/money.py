"""PURE: money as integer minor units of an ISO 4217 currency, converted exactly.

Amounts are stored and summed as integers (cents, yen, fils), never as floats, so a total is
the sum of its lines to the last minor unit. How many decimals a currency has is ISO 4217's
precision as Babel knows it (JPY 0, EUR 2, KWD 3), not a table of our own. Input is converted
exactly or refused; the one place a value is rounded (a quantity times a price, a tax rate) uses
half-even ("banker's") rounding, so rounding errors do not drift one way over many lines.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal

from babel.numbers import get_currency_precision, list_currencies

MAX_MINOR = 10**15  # far above any real invoice, and safe in a BIGINT and in JSON
_DECIMAL = re.compile(r"[+-]?[0-9]{1,18}(\.[0-9]{1,18})?")


def parse_decimal(value: object) -> Decimal:
    """Read a decimal string ("12.50", "-3", JSON integers too) exactly.

    JSON numbers with a fraction are refused: they arrive as binary floats, so 0.1 + 0.2 cents
    would already be wrong before we see them. Exponents, NaN and thousands separators are
    refused too, so one spelling means one value.
    """
    if isinstance(value, bool):
        raise ValueError('must be a decimal string such as "12.50", not true/false')
    if isinstance(value, int):
        value = str(value)
    elif isinstance(value, float):
        raise ValueError(
            f'must be a decimal string such as "12.50", not the JSON number {value!r} '
            "(floating point loses cents)"
        )
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        raise ValueError(f'must be a decimal string such as "12.50", got {value!r}')
    return Decimal(value)


def parse_currency(value: object) -> str:
    """An ISO 4217 code, upper-cased: Stripe and others export "eur", ISO 4217 spells it "EUR"."""
    if not isinstance(value, str):
        raise ValueError('must be an ISO 4217 currency code such as "EUR"')
    code = value.upper()
    if len(code) != 3 or code not in list_currencies():
        raise ValueError(f'unknown currency {value!r} (expected an ISO 4217 code such as "EUR")')
    return code


def to_minor(amount: str | Decimal, currency: str) -> int:
    """Convert an exact amount to integer minor units of ``currency`` (cents, yen, fils).

    More significant decimals than the currency has is an error, never rounded: "100.5" JPY is
    refused, while trailing zeros ("100.00" JPY) are fine because they do not change the value.
    """
    value = parse_decimal(amount) if isinstance(amount, str) else amount
    places = get_currency_precision(currency)
    minor = value.scaleb(places)
    if minor != minor.to_integral_value():
        raise ValueError(
            f"{currency} has {places} decimal place{'s' if places != 1 else ''}; "
            f"{value} cannot be represented exactly"
        )
    return _bounded(int(minor))


def from_minor(amount_minor: int, currency: str) -> Decimal:
    """The inverse of :func:`to_minor`, for messages and rendering (1250 EUR -> 12.50)."""
    return Decimal(amount_minor).scaleb(-get_currency_precision(currency))


def round_minor(value: Decimal) -> int:
    """Round a computed amount that is already in minor units to a whole one, half-even.

    The caller computes with enough precision that this quantize is the only rounding step.
    """
    return _bounded(int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN)))


def _bounded(amount_minor: int) -> int:
    if abs(amount_minor) >= MAX_MINOR:
        raise ValueError(f"amount is implausibly large ({amount_minor} minor units)")
    return amount_minor
