"""PURE: the day a customer promises to pay on, read from their words, relative to the day
they wrote.

"on the 15th", "next Friday", "15/01", "le 15 janvier", "el 15 de enero", "pe 15 ianuarie",
"tomorrow", "end of the month", "in 10 days". Month and weekday names come from Babel's CLDR
data for each language (abbreviations too); only the relative words, which CLDR does not
carry, are written here. A date is always read forward: a day that has passed this month is
next month's, a weekday is the next one after the day written. Text is folded first
(bounce/triage.py ``fold``): lower case, no accents.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import date, timedelta
from functools import cache

from babel.dates import get_day_names, get_month_names

LANGUAGES = ("en", "es", "fr", "ro")

# Words for "today + n days" per language (folded).
_RELATIVE_DAYS = {
    r"day after tomorrow|pasado manana|apres-demain|apres demain|poimaine": 2,
    r"tomorrow|manana|demain|maine": 1,
    r"today|later today|hoy|aujourd'hui|azi|astazi": 0,
    r"next week|la semana que viene|la proxima semana|la semaine prochaine|"
    r"saptamana viitoare|saptamana urmatoare": 7,
    r"end of next week|finales de la semana que viene|fin de la semaine prochaine|"
    r"sfarsitul saptamanii viitoare": 11,
}
_END_OF_MONTH = re.compile(
    r"\b(?:end of (?:the |this )?month|month[- ]end|fin(?:ales)? de(?:l)? mes|a fin de mes|"
    r"fin du mois|fin de mois|sfarsitul lunii|finalul lunii)\b"
)
_IN_DAYS = re.compile(
    r"\b(?:in|within|dans|sous|en|dentro de|in termen de|peste) (\d{1,2}|two|three|deux|trois|"
    r"dos|tres|doua|trei) (?:business |working |bank |jours? ouvres |)"
    r"(?:days?|jours?|dias?|zile|weeks?|semaines?|semanas?|saptamani)\b"
)
_SMALL = {"two": 2, "three": 3, "deux": 2, "trois": 3, "dos": 2, "tres": 3, "doua": 2, "trei": 3}
_NUMERIC = re.compile(r"(?<![\d.,/-])(\d{1,2})[/.](\d{1,2})(?:[/.](\d{2}|\d{4}))?(?![\d,]|\.\d)")
_ISO = re.compile(r"\b(20\d\d)-(\d\d)-(\d\d)\b")
_ORDINAL = r"(?:st|nd|rd|th|er|eme|e|a|o)?"
_DAY_ONLY = re.compile(
    r"\b(?:on|by|before|the|le|el|pe|au|al|pana (?:pe|la)|avant le|antes del?|el dia|"
    r"hasta el|d'ici le|in data de) (?:the )?(\d{1,2})" + _ORDINAL + r"\b(?![/.]\d)"
)


def fold(text: str) -> str:
    """Lower case without accents, apostrophes as "'": what every pattern is written against."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return plain.replace("\u2019", "'").replace("\u2018", "'")


@cache
def _months() -> dict[str, int]:
    names: dict[str, int] = {}
    for language in LANGUAGES:
        for width in ("wide", "abbreviated"):
            for ctx in ("format", "stand-alone"):
                for number, name in get_month_names(width, ctx, locale=language).items():
                    key = fold(str(name)).rstrip(".")
                    if len(key) >= 3:
                        names.setdefault(key, int(number))
    names.pop("mar", None)  # March in English and Spanish, Tuesday ("mar.") in French
    names["mar"] = 3
    return names


@cache
def _weekdays() -> dict[str, int]:
    names: dict[str, int] = {}
    for language in LANGUAGES:
        for number, name in get_day_names("wide", "format", locale=language).items():
            names[fold(str(name))] = int(number)
    return names


@cache
def _named_patterns() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    months = "|".join(sorted(map(re.escape, _months()), key=len, reverse=True))
    days = "|".join(sorted(map(re.escape, _weekdays()), key=len, reverse=True))
    day_month = re.compile(
        rf"\b(\d{{1,2}}){_ORDINAL}\.? (?:of |de )?({months})\.?(?:,? (20\d\d))?\b"
    )
    month_day = re.compile(rf"\b({months})\.? (\d{{1,2}}){_ORDINAL}(?:,? (20\d\d))?\b")
    weekday = re.compile(rf"\b({days})a?\b")
    return day_month, month_day, weekday


def find_promised_date(text: str, *, written_on: date, month_first: bool = False) -> date | None:
    """The first day named in ``text`` (folded), read forward from ``written_on``; None when
    it names none. A date before ``written_on`` is not a promise and reads as None.
    ``month_first``: "02/03" is 3 February (the customer's locale writes dates month first,
    en_US), else 2 March; a number over 12 decides either way."""
    found = _candidates(fold(text), written_on, month_first)
    if not found:
        return None
    # A full date beats a weekday or a relative word beside it ("Friday 15 January").
    _, _, when = min(found)
    return when if when >= written_on else None


def _candidates(text: str, today: date, month_first: bool) -> list[tuple[int, int, date]]:
    """(tier, position, date) of every date expression in ``text``: tier 0 names the month,
    tier 1 does not (a day of the month, a weekday, a relative word)."""
    hits: list[tuple[int, date | None]] = []
    day_month, month_day, weekday = _named_patterns()
    for m in _ISO.finditer(text):
        hits.append((m.start(), _safe(int(m[1]), int(m[2]), int(m[3]))))
    for m in day_month.finditer(text):
        hits.append((m.start(), _forward(today, _months()[m[2]], int(m[1]), m[3])))
    for m in month_day.finditer(text):
        hits.append((m.start(), _forward(today, _months()[m[1]], int(m[2]), m[3])))
    for m in _NUMERIC.finditer(text):
        first, second = int(m[1]), int(m[2])
        swap = second <= 12 < first if month_first else second > 12 >= first
        day, month = (second, first) if swap != month_first else (first, second)
        hits.append((m.start(), _forward(today, month, day, m[3])))
    full = len(hits)
    for m in _DAY_ONLY.finditer(text):
        hits.append((m.start(), _next_day_of_month(today, int(m[1]))))
    for m in weekday.finditer(text):
        ahead = (_weekdays()[m[1]] - today.weekday() - 1) % 7 + 1
        hits.append((m.start(), today + timedelta(days=ahead)))
    for words, days in _RELATIVE_DAYS.items():
        for m in re.finditer(rf"\b(?:{words})\b", text):
            hits.append((m.start(), today + timedelta(days=days)))
    for m in _END_OF_MONTH.finditer(text):
        last = calendar.monthrange(today.year, today.month)[1]
        hits.append((m.start(), today.replace(day=last)))
    for m in _IN_DAYS.finditer(text):
        count = int(m[1]) if m[1].isdigit() else _SMALL[m[1]]
        weeks = re.search(r"week|semain|seman|saptaman", m[0]) is not None
        hits.append((m.start(), today + timedelta(days=count * (7 if weeks else 1))))
    return [(int(i >= full), at, when) for i, (at, when) in enumerate(hits) if when is not None]


def _safe(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _forward(today: date, month: int, day: int, year: str | None) -> date | None:
    """``day``/``month`` in ``year`` if given, else the next such day from ``today``."""
    if year:
        full = int(year) + (2000 if len(year) == 2 else 0)
        return _safe(full, month, day)
    this_year = _safe(today.year, month, day)
    if this_year is None or this_year >= today - timedelta(days=7):
        return this_year
    return _safe(today.year + 1, month, day)


def _next_day_of_month(today: date, day: int) -> date | None:
    """The next ``day`` of a month on or after ``today`` (the 15th, said on the 20th: next
    month's)."""
    if not 1 <= day <= 31:
        return None
    year, month = today.year, today.month
    for _ in range(3):
        when = _safe(year, month, day)
        if when is not None and when >= today:
            return when
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return None
