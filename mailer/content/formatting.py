"""PURE: money, dates and numbers in the customer's language, through Babel (CLDR data).

The emails' ``money``, ``date``, ``time`` and ``number`` filters, the PDFs
(``mailer/content/pdf_html.py``) and the hosted pages all format through these functions, so
one amount reads the same in all three. ``template_day`` turns an instant into the day it is
where the customer is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, cast

import jinja2
from babel.core import Locale, UnknownLocaleError
from babel.dates import format_date, format_time
from babel.numbers import format_currency, format_decimal

from mailer.ledger.localtime import DEFAULT_ZONE, local_date, local_instant
from mailer.ledger.money import from_minor


# Babel's formatters re-read CLDR data on every call; a dunning run formats the same handful
# of dates and amounts thousands of times, so the pure formatting is memoised.
@lru_cache(maxsize=64)
def _locale(name: str) -> Locale:
    return Locale.parse(name)


@lru_cache(maxsize=8192)
def format_money(amount_minor: int, currency: str, locale: str) -> str:
    """``12345, "EUR", "fr"`` -> ``"123,45 €"``: exact minor units, CLDR formatting."""
    return format_currency(from_minor(amount_minor, currency), currency, locale=_locale(locale))


@lru_cache(maxsize=4096)
def format_day(value: date, fmt: str, locale: str) -> str:
    """A calendar date in the locale's ``short``/``medium``/``long`` form."""
    return format_date(value, format=fmt, locale=_locale(locale))


@jinja2.pass_context
def _money(ctx: jinja2.runtime.Context, amount_minor: int, currency: str) -> str:
    return format_money(amount_minor, currency, ctx.get("locale", "en"))


def template_day(ctx: jinja2.runtime.Context, value: object) -> date:
    """The day ``value`` (an instant, its ISO text, or a date) is where the customer is.

    The zone is the context's ``time_zone``; a context queued before contexts carried a zone
    has none, and its dates print as they always did, in UTC. A missing variable is reported
    as Jinja reports it ("'dict object' has no attribute 'due_at'"), not as a type error.
    """
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()  # Jinja's documented hook for undefined values
    return local_date(cast(str | date | datetime, value), ctx.get("time_zone"))


@jinja2.pass_context
def _date(ctx: jinja2.runtime.Context, value: str | date | datetime, fmt: str = "medium") -> str:
    return format_day(template_day(ctx, value), fmt, ctx.get("locale", "en"))


@jinja2.pass_context
def _time(ctx: jinja2.runtime.Context, value: str | datetime) -> str:
    """The time of day an instant is where the customer is, with the zone ("17:41
    (Europe/Bucharest)"): for an email that says when something happened."""
    zone = ctx.get("time_zone") or DEFAULT_ZONE
    shown = format_time(
        local_instant(value, zone), "short", locale=_locale(ctx.get("locale", "en"))
    )
    return f"{shown} ({zone})"


@jinja2.pass_context
def _number(ctx: jinja2.runtime.Context, value: str | int | Decimal) -> str:
    return format_decimal(Decimal(str(value)), locale=_locale(ctx.get("locale", "en")))


def normalise_locale(value: str | None, default: str = "en") -> str:
    """A Babel-parsable locale identifier, falling back to ``default`` for junk."""
    try:
        return str(Locale.parse((value or default).replace("-", "_")))
    except (UnknownLocaleError, ValueError, TypeError):
        return default


def _direction(locale: str) -> str:
    try:
        return "rtl" if _locale(locale).text_direction == "rtl" else "ltr"
    except (UnknownLocaleError, ValueError, TypeError):
        return "ltr"


# The template filters this module gives every environment (mailer/content/compiled.py).
LOCALE_FILTERS: Mapping[str, Callable[..., Any]] = {
    "money": _money,
    "date": _date,
    "time": _time,
    "number": _number,
    "direction": _direction,
}
