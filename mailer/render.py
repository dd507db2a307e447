"""PURE: render an email's subject, text and HTML parts from ``templates/email/<kind>/``.

Templates run in Jinja2's ``SandboxedEnvironment`` with ``StrictUndefined``: a tenant-edited
template cannot reach Python internals, and a misspelt variable is an error at render time
instead of a silently empty invoice number.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from babel.core import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal
from jinja2.sandbox import SandboxedEnvironment

from mailer.compose import Rendered
from mailer.errors import TemplateError
from mailer.money import from_minor

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


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


@jinja2.pass_context
def _date(ctx: jinja2.runtime.Context, value: str | date | datetime, fmt: str = "medium") -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        value = value.date()
    return format_day(value, fmt, ctx.get("locale", "en"))


@jinja2.pass_context
def _number(ctx: jinja2.runtime.Context, value: str | int | Decimal) -> str:
    return format_decimal(Decimal(str(value)), locale=_locale(ctx.get("locale", "en")))


def normalise_locale(value: str | None, default: str = "en") -> str:
    """A Babel-parsable locale identifier, falling back to ``default`` for junk."""
    try:
        return str(Locale.parse((value or default).replace("-", "_")))
    except (UnknownLocaleError, ValueError, TypeError):
        return default


class Renderer:
    """Renders the three parts of each kind; one instance serves every tenant and locale."""

    def __init__(self, root: Path = TEMPLATES) -> None:
        loader = jinja2.FileSystemLoader(str(root / "email"))
        self._text = self._environment(loader, autoescape=False)
        self._html = self._environment(loader, autoescape=True)

    @staticmethod
    def _environment(loader: jinja2.BaseLoader, *, autoescape: bool) -> SandboxedEnvironment:
        env = SandboxedEnvironment(
            loader=loader,
            autoescape=autoescape,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,  # templates change with a deploy, not under a running engine
        )
        env.filters.update(money=_money, date=_date, number=_number)
        return env

    def render(self, kind: str, context: dict[str, Any]) -> Rendered:
        """Render ``kind`` with ``context``; any template problem becomes a TemplateError."""
        try:
            subject = self._text.get_template(f"{kind}/subject.txt").render(context)
            text = self._text.get_template(f"{kind}/body.txt").render(context)
            html = self._html.get_template(f"{kind}/body.html").render(context)
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"no template {exc.name!r} for email kind {kind!r}") from exc
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{exc.name}:{exc.lineno}: {exc.message}") from exc
        except (jinja2.UndefinedError, jinja2.exceptions.SecurityError) as exc:
            raise TemplateError(f"{kind}: {exc}") from exc
        return Rendered(subject=" ".join(subject.split()), text=text, html=html)

    def kinds(self) -> list[str]:
        """Every kind that has templates."""
        names = self._text.list_templates(filter_func=lambda n: n.endswith("/subject.txt"))
        return sorted(n.split("/", 1)[0] for n in names)
