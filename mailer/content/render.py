"""PURE: render an email's subject, text and HTML parts from ``templates/email/<kind>/``.

Templates run in Jinja2's ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``: a
tenant-edited template cannot reach Python internals nor change its data, and a misspelt
variable is an error at render time instead of a silently empty invoice number. HTML is
autoescaped; its text goes through gettext (``mailer/content/i18n.py``) in the language chosen for
the
customer, and money and dates through Babel in that same locale.

Mail clients disagree about CSS: Gmail and Outlook drop or ignore much of a ``<style>`` block,
so after rendering every rule is copied onto the elements it matches (``css_inline``); the
block stays in place for the clients that honour it, which is where the mobile media query
lives. Layout is tables, and the only remote resource an email may load is the tenant's logo.
The text part has its own template; a kind without one gets text converted from its HTML.

Tenant overrides (``mailer/content/overrides.py``) are whole templates, written exactly like the
built-in ones that ``dunmail template show`` prints: an HTML override starts with
``{% extends "_layout.html" %}`` and fills ``{% block content %}``, so it keeps the tenant's
branded layout, and it may ``{% include %}`` the shared partials. ``render(..., overrides=)``
compiles each override in the same sandboxed environment as the part it replaces (per
language, cached by source hash). An HTML override without a text override also replaces the
text part, converted from the overriding HTML, so the two parts never say different things.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from gettext import NullTranslations
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import css_inline
import jinja2
import tinycss2
from babel.core import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal
from inscriptis import get_text
from inscriptis.model.config import ParserConfig
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer
from markupsafe import Markup, escape

from mailer.content.i18n import choose_language
from mailer.content.safe_html import BANNED_PROPERTIES, clean_html, find_unsafe, loads_resource
from mailer.errors import TemplateError
from mailer.ledger.localtime import local_date
from mailer.ledger.money import from_minor
from mailer.outbound.compose import Rendered

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
DEFAULT_BRAND = "#1f6feb"
# The parts of an email a template renders: part name -> (file in the kind's folder, is HTML).
PARTS: Mapping[str, tuple[str, bool]] = {
    "subject": ("subject.txt", False),
    "text": ("body.txt", False),
    "html": ("body.html", True),
}
# The neutral email a customer's request for a fresh link sends, whatever the kind of the
# email the link came in (``context["fresh_link"]``): shared templates, no tenant override.
FRESH_LINK: Mapping[str, str] = {
    "subject": "_fresh_link_subject.txt",
    "text": "_fresh_link.txt",
    "html": "_fresh_link.html",
}
# Jinja's name for a template compiled from a string; error tracebacks carry it.
_FROM_STRING = "<template>"


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
def _number(ctx: jinja2.runtime.Context, value: str | int | Decimal) -> str:
    return format_decimal(Decimal(str(value)), locale=_locale(ctx.get("locale", "en")))


def normalise_locale(value: str | None, default: str = "en") -> str:
    """A Babel-parsable locale identifier, falling back to ``default`` for junk."""
    try:
        return str(Locale.parse((value or default).replace("-", "_")))
    except (UnknownLocaleError, ValueError, TypeError):
        return default


# -- safety filters: data from tenants and customers never changes the markup ---------------

_HEX_COLOR = re.compile(r"#(?:[0-9a-fA-F]{3}){1,2}")


_NOT_IN_URL = re.compile(r"[\s\x00-\x1f\x7f\"'<>\\]")


def _is_web_url(value: object) -> bool:
    if not isinstance(value, str) or _NOT_IN_URL.search(value):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _css_color(value: object) -> str:
    """The tenant's brand colour if it is a hex colour, else the default: it goes into CSS."""
    return value if isinstance(value, str) and _HEX_COLOR.fullmatch(value) else DEFAULT_BRAND


def _contrast(color: str) -> str:
    """White or near-black text, whichever reads better on ``color`` (WCAG 2.x luminance)."""
    digits = color.lstrip("#")
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    channels = [int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    # Contrast with white is 1.05 / (L + 0.05); with #1f2933 (L ~ 0.022) it is (L + 0.05) / 0.072.
    return "#ffffff" if 1.05 / (luminance + 0.05) >= (luminance + 0.05) / 0.072 else "#1f2933"


def _image_url(value: object) -> str | None:
    """The logo URL if it is http(s); a missing or odd one shows the tenant's name instead."""
    return value if isinstance(value, str) and _is_web_url(value) else None


def _link(value: object) -> str:
    if not _is_web_url(value):
        raise TemplateError(f"refusing link {str(value)[:80]!r}: only http(s) URLs are allowed")
    return str(value)


def _has_rtl(text: str) -> bool:
    return not text.isascii() and any(unicodedata.bidirectional(ch) in ("R", "AL") for ch in text)


@jinja2.pass_eval_context
def _bidi(eval_ctx: jinja2.nodes.EvalContext, value: Any) -> Any:
    """Isolate a right-to-left name so it cannot reorder the sentence around it (UAX #9)."""
    if not isinstance(value, str) or not _has_rtl(value):
        return value
    if eval_ctx.autoescape:
        return Markup("<bdi>%s</bdi>") % value
    return f"\u2068{value}\u2069"  # FIRST STRONG ISOLATE ... POP DIRECTIONAL ISOLATE


def _direction(locale: str) -> str:
    try:
        return "rtl" if _locale(locale).text_direction == "rtl" else "ltr"
    except (UnknownLocaleError, ValueError, TypeError):
        return "ltr"


_SELECTOR = re.compile(r"[\w\s.#,>+~*:()\[\]=\"'^$|-]+")
_PROPERTY = re.compile(r"-?[a-z][a-z0-9-]*")
# Anything that loads a resource or runs code: an email may fetch nothing but the logo (the
# same rule as for the HTML of a tenant's override, mailer/content/safe_html.py).
_loads_something = loads_resource
_BANNED_PROPERTIES = BANNED_PROPERTIES


@lru_cache(maxsize=256)
def clean_css(css: str) -> str:
    """Keep the plain style rules of a tenant's CSS; drop at-rules, resources and broken parts.

    Broken CSS is not an error: what parses is kept, the rest is dropped, the email goes out.
    """
    kept: list[str] = []
    for rule in tinycss2.parse_stylesheet(css, skip_comments=True, skip_whitespace=True):
        if rule.type != "qualified-rule":
            continue  # @import, @font-face, @media and parse errors
        selector = str(tinycss2.serialize(rule.prelude)).strip()
        if not _SELECTOR.fullmatch(selector) or _loads_something(rule.prelude):
            continue
        declarations = []
        for decl in tinycss2.parse_declaration_list(
            rule.content, skip_comments=True, skip_whitespace=True
        ):
            if decl.type != "declaration" or not _PROPERTY.fullmatch(decl.lower_name):
                continue
            value = str(tinycss2.serialize(decl.value)).strip()
            if decl.lower_name in _BANNED_PROPERTIES or _loads_something(decl.value):
                continue
            if not value or any(ch in value for ch in "<>{};\\"):
                continue
            declarations.append(f"{decl.lower_name}: {value}{' !important' * decl.important}")
        if declarations:
            kept.append(f"{selector} {{ {'; '.join(declarations)} }}")
    return "\n".join(kept)


def _tenant_css(value: object) -> Markup:
    return Markup(clean_css(value)) if isinstance(value, str) else Markup("")


# -- gettext, resolved while compiling: one pair of environments per language ----------------


def _fill_text(text: str, variables: dict[str, Any]) -> str:
    # "Newstyle" gettext always %-formats, so a literal "%" is spelt "%%" in every msgid.
    return text % variables if "%" in text else text


def _fill_html(text: str, variables: dict[str, Any]) -> Markup:
    # The translated text is trusted markup; what goes into it is escaped. Same result as
    # Markup(text) % variables, at a fraction of its cost (every email makes a dozen calls).
    if variables:
        safe = {k: v if isinstance(v, int) else escape(v) for k, v in variables.items()}
        return Markup(text % safe)
    return Markup(text % variables if "%" in text else text)


def _gettext_functions(translations: NullTranslations, *, html: bool) -> dict[str, Any]:
    """Jinja "newstyle" ``gettext``/``ngettext``/``_`` bound to one catalog and one part.

    Calls with a literal message are translated when the template compiles (see
    :class:`_TranslateLiterals`); these serve the rest, e.g. ``_(some_variable)``.
    """
    fill: Callable[[str, dict[str, Any]], str] = _fill_html if html else _fill_text

    def gettext(message: str, /, **variables: Any) -> str:
        return fill(translations.gettext(message), variables)

    def ngettext(singular: str, plural: str, n: int, /, **variables: Any) -> str:
        variables.setdefault("num", n)
        return fill(translations.ngettext(singular, plural, n), variables)

    return {"gettext": gettext, "ngettext": ngettext, "_": gettext}


def _fill_filters(translations: NullTranslations, *, html: bool) -> dict[str, Any]:
    """The filters that :class:`_TranslateLiterals` compiles calls with variables into."""
    fill: Callable[[str, dict[str, Any]], str] = _fill_html if html else _fill_text

    def fill_translated(text: str, /, **variables: Any) -> str:
        return fill(text, variables)

    def fill_plural(n: int, singular: str, plural: str, /, **variables: Any) -> str:
        variables.setdefault("num", n)
        return fill(translations.ngettext(singular, plural, n), variables)

    return {"_i18n_fill": fill_translated, "_i18n_nfill": fill_plural}


class _TranslateLiterals(NodeTransformer):
    """Translate ``gettext("literal", ...)`` calls in a parsed template, once, at compile time.

    ``{% trans %}`` blocks and ``_("...")`` compile to newstyle ``gettext(msgid, **variables)``
    calls; the msgid is a constant, so the catalog lookup is done here. A message without
    variables becomes constant text (Jinja then folds it into the template's output), one with
    variables a single %-format filter, and ``ngettext`` keeps only its plural choice at render
    time. A call that is not on a literal (or fails to format) is left for the runtime gettext.
    """

    def __init__(self, translations: NullTranslations, *, autoescape: bool) -> None:
        self._translations = translations
        self._autoescape = autoescape

    def visit_Call(self, node: nodes.Call) -> nodes.Node:  # noqa: N802  # NodeTransformer API
        self.generic_visit(node)
        func, args = node.node, node.args
        if not isinstance(func, nodes.Name) or node.dyn_args or node.dyn_kwargs:
            return node
        literal = [isinstance(a, nodes.Const) and isinstance(a.value, str) for a in args]
        if func.name in ("_", "gettext") and literal == [True]:
            text = self._translations.gettext(args[0].as_const())
            if node.kwargs:
                return nodes.Filter(
                    nodes.Const(text), "_i18n_fill", [], node.kwargs, None, None, lineno=node.lineno
                )
            try:
                text = text % {} if "%" in text else text
            except (KeyError, ValueError, TypeError):
                return node  # a placeholder without a value: fails at render time, as before
            const = nodes.Const(text, lineno=node.lineno)
            return nodes.MarkSafe(const, lineno=node.lineno) if self._autoescape else const
        if func.name == "ngettext" and literal[:2] == [True, True] and len(args) == 3:
            return nodes.Filter(
                args[2], "_i18n_nfill", args[:2], node.kwargs, None, None, lineno=node.lineno
            )
        return node


_DICT_ATTRIBUTES = frozenset(dir(dict))


# -- the budget of a tenant's template ---------------------------------------------------------


@dataclass(frozen=True)
class RenderBudget:
    """How much processor time a tenant's template may use and how much it may write, per part.

    The sandbox keeps a template from Python's internals, but not from work: two nested
    ``range(100000)`` loops are ten billion turns with no output at all, a macro calling
    itself twice per level doubles at each one, and ``ns.s ~ ns.s`` in a loop doubles a
    string until the memory is gone. Every loop turn, call, concatenation and ``+`` checks the
    clock and sizes against this budget, and the output is counted as it is written, so such a
    template is stopped with a clear error instead of holding the engine (or ``template set``).
    """

    seconds: float
    max_chars: int


# At send time: a legitimate override renders in milliseconds, a large invoice in well under
# a second; the email's HTML part is far below 5 MB (Gmail clips past 102 kB).
RENDER_BUDGET = RenderBudget(seconds=5.0, max_chars=5_000_000)
# When an override is saved, against the kind's small sample context.
SAVE_BUDGET = RenderBudget(seconds=2.0, max_chars=1_000_000)


class BudgetExceeded(SecurityError):
    """A tenant's template went past its :class:`RenderBudget` (a Jinja ``SecurityError``:
    reported like the sandbox's other refusals, with the template's line)."""


class _Meter:
    """One render's running budget: its deadline and limits."""

    def __init__(self, budget: RenderBudget) -> None:
        self.budget = budget
        # Processor time of this thread, not the wall clock: a legitimate template on a loaded
        # machine (or waiting for the GIL) is not refused, while a loop still burns its budget.
        self.deadline = time.thread_time() + budget.seconds
        self.produced = 0  # characters every ``{{ }}`` wrote, captured or not

    def produce(self, chars: int) -> None:
        """Count what an expression wrote: a ``{% set %}`` block or a macro collects its
        output before anything joins it, so the output's own count comes too late."""
        self.produced += chars
        self.size(self.produced)

    def tick(self) -> None:
        if time.thread_time() > self.deadline:
            raise BudgetExceeded(
                f"rendering took longer than {self.budget.seconds:g} s of processor time "
                "(a loop or a call that runs too long)"
            )

    def size(self, chars: int) -> None:
        if chars > self.budget.max_chars:
            raise BudgetExceeded(
                f"the template would write more than {self.budget.max_chars:,} characters"
            )


# The meter of the render running in this thread (renders run in worker threads): None while
# a built-in template renders, which is not metered.
_METER: ContextVar[_Meter | None] = ContextVar("dunmail_render_meter", default=None)


@contextmanager
def metered(budget: RenderBudget) -> Iterator[_Meter]:
    """Meter what runs inside against ``budget``: a render, and also compiling or analysing a
    tenant's template (Jinja's code generator folds filters on constants as it goes)."""
    meter = _Meter(budget)
    token = _METER.set(meter)
    try:
        yield meter
    finally:
        _METER.reset(token)


def _finalize(value: Any) -> Any:
    """Every ``{{ expression }}`` passes here before it is written (Jinja's ``finalize``)."""
    meter = _METER.get()
    if meter is not None and isinstance(value, str):
        meter.produce(len(value))
    return value


def _loop(iterable: Iterable[Any]) -> Iterable[Any]:
    """Every ``{% for %}`` iterates through this (see :class:`_MeterLoops`)."""
    meter = _METER.get()
    if meter is None:
        return iterable
    return _metered_loop(iterable, meter)


def _metered_loop(iterable: Iterable[Any], meter: _Meter) -> Iterator[Any]:
    for item in iterable:
        meter.tick()
        yield item


@jinja2.pass_eval_context
def _concat(eval_ctx: nodes.EvalContext, parts: list[Any]) -> str:
    """``a ~ b``, as Jinja joins it, with the result's size checked."""
    joined = markup_join(parts) if eval_ctx.autoescape else str_join(parts)
    meter = _METER.get()
    if meter is not None:
        meter.tick()
        meter.size(len(joined))
    return joined


class _MeterLoops(NodeTransformer):
    """Route every loop's iterable and every ``~`` through the budget's filters."""

    def visit_For(self, node: nodes.For) -> nodes.Node:  # noqa: N802  # NodeTransformer API
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_budget_loop", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:  # noqa: N802
        self.generic_visit(node)
        parts = nodes.List(list(node.nodes), lineno=node.lineno)
        return nodes.Filter(parts, "_budget_concat", [], [], None, None, lineno=node.lineno)


# A width or count in a format string ("%999999999s", "{:>999999999}"): seven digits and more
# would pad the output past any budget before it could be counted.
_HUGE_WIDTH = re.compile(r"\d{7,}")
# String methods and filters whose integer arguments are the size of what they build.
_SIZED = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "indent", "wordwrap"})


def _check_sizes(name: str, subject: object, args: tuple[Any, ...], limit: int) -> None:
    """Refuse, before it runs, a string operation that would build more than ``limit``."""
    if name in _SIZED and any(isinstance(a, int) and abs(a) > limit for a in args):
        raise BudgetExceeded(f"{name}() with a size over {limit:,} characters")
    if name in ("format", "format_map") and isinstance(subject, str):
        if _HUGE_WIDTH.search(subject):
            raise BudgetExceeded("a format with a width of a million characters or more")
    if name == "replace" and isinstance(subject, str) and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        count = len(subject) + 1 if not old else subject.count(old)
        if len(subject) + count * (len(new) - len(old)) > limit:
            raise BudgetExceeded(f"replace() would build more than {limit:,} characters")


def _sized_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """A built-in filter that checks its sizes first while a tenant's template renders."""

    # Jinja passes a context, eval context or environment first to a filter marked so
    # (``replace`` is @pass_eval_context, ``wordwrap`` @pass_environment).
    skip = 1 if hasattr(original, "jinja_pass_arg") else 0

    def checked(*args: Any, **kwargs: Any) -> Any:
        meter = _METER.get()
        if meter is not None and len(args) > skip:
            meter.tick()
            value, rest = args[skip], args[skip + 1 :]
            subject = str(value) if name == "format" else value
            _check_sizes(name, subject, (*rest, *kwargs.values()), meter.budget.max_chars)
        return original(*args, **kwargs)

    if skip:
        checked.jinja_pass_arg = original.jinja_pass_arg  # type: ignore[attr-defined]
    return checked


# The largest string or list a template may build with ``*`` (a page of text is ~10 kB).
_MAX_PRODUCT = 100_000


class _Environment(ImmutableSandboxedEnvironment):
    """A sandbox bound to one language: its templates are compiled already translated.

    Immutable: a tenant's template cannot change the data it renders (``invoice.update(...)``).
    ``*`` and ``**`` are checked, so ``'x' * 10**9`` is refused rather than eating the memory
    of the engine that renders every tenant's email.
    """

    translations: NullTranslations = NullTranslations()
    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise SecurityError("exponent too large in a template")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    if len(seq) * times > _MAX_PRODUCT:
                        raise SecurityError("a template may not build text this large")
        meter = _METER.get()
        if meter is not None:
            meter.tick()
            if operator == "%" and isinstance(left, str) and _HUGE_WIDTH.search(left):
                raise BudgetExceeded("a format with a width of a million characters or more")
        result = super().call_binop(context, operator, left, right)
        if meter is not None and operator == "+" and isinstance(result, str | list | tuple):
            meter.size(len(result))
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        """Every call a template makes (a function, a macro, a method) first checks the
        budget, and a string method that would build text past it is refused before it runs."""
        meter = _METER.get()
        if meter is not None:
            meter.tick()
            subject = getattr(__obj, "__self__", None)
            if isinstance(subject, str):
                name = getattr(__obj, "__name__", "")
                _check_sizes(name, subject, (*args, *kwargs.values()), meter.budget.max_chars)
        return super().call(__context, __obj, *args, **kwargs)

    @staticmethod
    def concat(parts: Iterable[str]) -> str:
        """Joins what a macro, a ``{% set %}`` block or a filter block captured (compiled
        templates call ``environment.concat``): sized before the join allocates it."""
        meter = _METER.get()
        if meter is None:
            return "".join(parts)
        pieces = parts if isinstance(parts, list) else list(parts)
        meter.tick()
        meter.size(sum(len(piece) for piece in pieces))
        return "".join(pieces)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``'{:>9}'.format(x)``, which the sandbox runs through its own formatter: refused,
        before it runs, with a width that would pad past the budget."""
        wrapped = super().wrap_str_format(value)
        subject = getattr(value, "__self__", None)
        if wrapped is None or not isinstance(subject, str):
            return wrapped
        run: Callable[..., str] = wrapped

        def checked(*args: Any, **kwargs: Any) -> str:
            meter = _METER.get()
            if meter is not None:
                _check_sizes("format", subject, (), meter.budget.max_chars)
            return run(*args, **kwargs)

        return checked

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``invoice.number`` on a context dict, without the AttributeError Jinja goes through.

        Same answer as the sandbox's: a dict's own attributes (``.items``) still come first.
        """
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        folder = _TranslateLiterals(self.translations, autoescape=bool(self.autoescape))
        return cast(nodes.Template, _MeterLoops().visit(folder.visit(tree)))


@dataclass(frozen=True)
class _LanguageVars:
    """What a render adds to the context: the chosen locale and its gettext, per part."""

    catalogs: tuple[str, ...]  # which compiled environments serve this language
    translations: NullTranslations
    text: dict[str, Any]
    html: dict[str, Any]


@lru_cache(maxsize=1024)
def _language_vars(root: Path, locale: str | None, fallback: str | None) -> _LanguageVars:
    language = choose_language(root, locale, fallback)
    chosen = {"locale": language.locale}
    return _LanguageVars(
        catalogs=language.catalogs,
        translations=language.translations,
        text={**chosen, **_gettext_functions(language.translations, html=False)},
        html={**chosen, **_gettext_functions(language.translations, html=True)},
    )


def _environment(
    loader: jinja2.BaseLoader, translations: NullTranslations, *, autoescape: bool
) -> _Environment:
    env = _Environment(
        loader=loader,
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,  # templates change with a deploy, not under a running engine
        extensions=["jinja2.ext.i18n"],
        finalize=_finalize,
    )
    env.translations = translations
    # {% trans %} compiles to "newstyle" gettext calls, which _TranslateLiterals resolves; the
    # installed functions serve pgettext and calls on non-literals.
    env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
    env.policies["ext.i18n.trimmed"] = True  # msgids without template indentation
    env.filters.update(
        money=_money,
        date=_date,
        number=_number,
        bidi=_bidi,
        css_color=_css_color,
        contrast=_contrast,
        image_url=_image_url,
        link=_link,
        direction=_direction,
        tenant_css=_tenant_css,
        _budget_loop=_loop,
        _budget_concat=_concat,
        **_fill_filters(translations, html=autoescape),
    )
    for name in ("center", "indent", "wordwrap", "format", "replace"):
        env.filters[name] = _sized_filter(name, env.filters[name])
    return env


_TEXT_CONFIG = ParserConfig(display_links=True)


class _Compiled:
    """One language's two environments (text and HTML) and the templates found in them."""

    def __init__(self, loader: jinja2.BaseLoader, translations: NullTranslations) -> None:
        self.text = _environment(loader, translations, autoescape=False)
        self.html = _environment(loader, translations, autoescape=True)
        # Compiled templates by name, None for "no such file"; filled once per name. Syntax
        # errors are not kept, so they are reported on every render.
        self._found: dict[tuple[bool, str], jinja2.Template | None] = {}
        self._overrides: dict[tuple[bool, str], jinja2.Template] = {}

    def template(self, env: _Environment, name: str) -> jinja2.Template | None:
        key = (env is self.html, name)
        try:
            return self._found[key]
        except KeyError:
            pass
        try:
            found: jinja2.Template | None = env.get_template(name)
        except jinja2.TemplateNotFound as exc:
            if exc.name != name:
                raise  # an include inside it is missing, not the template itself
            found = None
        self._found[key] = found
        return found

    def override(self, env: _Environment, source: str) -> jinja2.Template:
        """A tenant's template compiled in ``env``, cached by its source's hash; an HTML one
        writes only what mailer/content/safe_html.py allows (:func:`_confine`)."""
        key = (env is self.html, hashlib.sha256(source.encode()).hexdigest())
        found = self._overrides.get(key)
        if found is None:
            if len(self._overrides) >= 4096:  # tenants edit rarely; a bound, not an LRU
                self._overrides.clear()
            found = env.from_string(source)
            if env is self.html:
                _confine(found, env.parse(source))
            self._overrides[key] = found
        return found


# Problems found in what HTML overrides wrote, while :func:`collect_unsafe` listens (saving).
_UNSAFE: ContextVar[list[str] | None] = ContextVar("dunmail_unsafe_html", default=None)


@contextmanager
def collect_unsafe() -> Iterator[list[str]]:
    """Collect what the HTML overrides rendered inside refuse (mailer/content/safe_html.py), for the
    check when an override is saved: it names the problem instead of quietly removing it."""
    found: list[str] = []
    token = _UNSAFE.set(found)
    try:
        yield found
    finally:
        _UNSAFE.reset(token)


def _confine(template: jinja2.Template, tree: nodes.Template) -> None:
    """Make a tenant's HTML template write only what mailer/content/safe_html.py allows.

    An override that starts with ``{% extends %}`` (as the README asks) writes only its
    blocks, and the layout around them is ours: each of its blocks is cleaned. Any other
    writes the whole document itself, which is cleaned as a whole.
    """
    leading = [n for n in tree.body if not _is_blank(n)]
    if leading and isinstance(leading[0], nodes.Extends):
        for name, block in list(template.blocks.items()):
            template.blocks[name] = _cleaned(block)
    else:
        template.root_render_func = _cleaned(template.root_render_func)


def _is_blank(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Output) and all(
        isinstance(child, nodes.TemplateData) and not child.data.strip() for child in node.nodes
    )


def _cleaned(
    render: Callable[[jinja2.runtime.Context], Iterator[str]],
) -> Callable[[jinja2.runtime.Context], Iterator[str]]:
    def cleaned(context: jinja2.runtime.Context) -> Iterator[str]:
        meter = _METER.get()
        pieces: list[str] = []
        written = 0
        for piece in render(context):
            written += len(piece)
            if meter is not None:
                meter.size(written)
            pieces.append(piece)
        html = "".join(pieces)
        tenant = context.get("tenant")
        logo = _image_url(tenant.get("logo_url")) if isinstance(tenant, Mapping) else None
        listening = _UNSAFE.get()
        if listening is not None:
            listening.extend(find_unsafe(html, logo=logo))
        yield clean_html(html, logo=logo)

    return cleaned


class Renderer:
    """Renders the three parts of each kind; one instance serves every tenant and locale.

    Each language gets its own pair of environments, whose templates are compiled with their
    text already translated (:class:`_TranslateLiterals`): a render does no catalog lookups.
    """

    def __init__(
        self,
        root: Path = TEMPLATES,
        *,
        default_locale: str = "en",
        budget: RenderBudget = RENDER_BUDGET,
    ) -> None:
        self.budget = budget  # what a tenant's override may spend at send time
        self._loader = jinja2.FileSystemLoader(str(root / "email"))
        self._locales = root / "locale"
        self._default_locale = default_locale
        self._compiled: dict[tuple[str, ...], _Compiled] = {}
        self._lock = threading.Lock()
        source = self._language(NullTranslations(), ())
        self._text, self._html = source.text, source.html  # the source language (English)
        # Remote stylesheets are never fetched and <link> tags are dropped: an email carries
        # its own CSS. The <style> block is kept for clients that support it.
        self._inliner = css_inline.CSSInliner(
            keep_style_tags=True, keep_link_tags=False, load_remote_stylesheets=False
        )

    def render(
        self,
        kind: str,
        context: dict[str, Any],
        *,
        fallback_locale: str | None = None,
        overrides: Mapping[str, str] | None = None,
        budget: RenderBudget | None = None,
    ) -> Rendered:
        """Render ``kind`` with ``context``; any template problem becomes a TemplateError.

        ``context["locale"]`` is the customer's; ``fallback_locale`` (or
        ``context["fallback_locale"]``) is the tenant's default, used when the customer's
        language has no translation. ``overrides`` maps a part (``subject``, ``text``,
        ``html``) to the tenant's template source, used instead of the built-in one; each
        renders within ``budget`` (default: the renderer's), past which it is a TemplateError.
        A context marked ``fresh_link`` renders the neutral :data:`FRESH_LINK` templates
        instead of the kind's own (and no override): the customer asked for a new link.
        """
        fresh = bool(context.get("fresh_link"))
        overrides = {} if fresh else overrides or {}
        spend = budget or self.budget
        chosen, text_vars, html_vars = self._variables(context, fallback_locale)
        compiled = self._language(chosen.translations, chosen.catalogs)

        def part(name: str, env: _Environment, variables: dict[str, Any]) -> str:
            file = FRESH_LINK[name] if fresh else f"{kind}/{PARTS[name][0]}"
            source = overrides.get(name)
            if source is None:
                return self._render(kind, compiled, env, file, variables)
            return self._render_override(
                compiled, env, f"{file} (override)", source, variables, budget=spend
            )

        subject = part("subject", compiled.text, text_vars)
        html = part("html", compiled.html, html_vars)
        if "text" in overrides:
            text = part("text", compiled.text, text_vars)
        elif fresh or (
            "html" not in overrides and self._exists(compiled, compiled.text, f"{kind}/body.txt")
        ):
            text = part("text", compiled.text, text_vars)
        else:
            text = html_to_text(html)
        return Rendered(subject=one_line(subject), text=text, html=self._inline(html))

    def snippet(self, name: str, context: dict[str, Any], **values: Any) -> tuple[str, str]:
        """The shared snippet ``_<name>.txt`` and ``_<name>.html`` in the email's language.

        For text the engine adds to an email whatever template made it, a tenant's override
        included (the download notice of a PDF too large to attach): it is translated with
        the templates' catalogs, so it speaks the language of the email it joins.
        """
        chosen, text_vars, html_vars = self._variables(context, None)
        compiled = self._language(chosen.translations, chosen.catalogs)
        text = self._render(name, compiled, compiled.text, f"_{name}.txt", {**text_vars, **values})
        html = self._render(name, compiled, compiled.html, f"_{name}.html", {**html_vars, **values})
        return text, html

    def language_of(self, context: Mapping[str, Any]) -> str:
        """The language :meth:`render` writes ``context`` in (``Language.language``: "es" for
        a customer in es_MX, "en" when neither the customer's language nor the tenant's has
        templates), chosen exactly as a render chooses it. The outbox records it on the row,
        and the CLI tells a person when it is not the language they asked for."""
        fallback = context.get("fallback_locale") or self._default_locale
        return choose_language(self._locales, context.get("locale"), fallback).language

    def builtin_source(self, kind: str, part: str) -> str | None:
        """The built-in template source of ``kind``'s ``part``, or None if it has none."""
        file = PARTS[part][0]
        try:
            source, _, _ = self._loader.get_source(self._text, f"{kind}/{file}")
        except jinja2.TemplateNotFound:
            return None
        return source

    def render_string(
        self,
        source: str,
        context: dict[str, Any],
        *,
        html: bool = True,
        fallback_locale: str | None = None,
        budget: RenderBudget | None = None,
    ) -> str:
        """Render template ``source`` in the same sandbox and budget: for previews and
        override checks."""
        chosen, text_vars, html_vars = self._variables(context, fallback_locale)
        compiled = self._language(chosen.translations, chosen.catalogs)
        env = compiled.html if html else compiled.text
        variables = html_vars if html else text_vars
        try:
            return _render_metered(
                lambda: env.from_string(source), variables, budget or self.budget
            )
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            raise TemplateError(f"template: {_describe(exc)}") from exc

    def parse(self, source: str) -> nodes.Template:
        """The syntax tree of template ``source``, as the renderer compiles it.

        A syntax error is a TemplateError reading ``line N: reason``.
        """
        try:
            return self._html.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(_describe(exc)) from exc

    def global_names(self) -> frozenset[str]:
        """Names every template may use besides its context: Jinja's globals and gettext."""
        return frozenset(self._html.globals) | {"_", "gettext", "ngettext"}

    def names_used(self, source: str) -> set[str]:
        """Top-level names a template source reads: checked against ``KindSpec.variables``."""
        try:
            names = meta.find_undeclared_variables(self._html.parse(source))
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"template: {_describe(exc)}") from exc
        return names - {"_", "gettext", "ngettext"}

    def kinds(self) -> list[str]:
        """Every kind that has templates."""
        names = self._text.list_templates(filter_func=lambda n: n.endswith("/subject.txt"))
        return sorted(n.split("/", 1)[0] for n in names)

    def _language(self, translations: NullTranslations, catalogs: tuple[str, ...]) -> _Compiled:
        compiled = self._compiled.get(catalogs)
        if compiled is None:
            with self._lock:  # renders run in threads; compile each language once
                compiled = self._compiled.get(catalogs)
                if compiled is None:
                    compiled = self._compiled[catalogs] = _Compiled(self._loader, translations)
        return compiled

    def _variables(
        self, context: dict[str, Any], fallback: str | None
    ) -> tuple[_LanguageVars, dict[str, Any], dict[str, Any]]:
        fallback = fallback or context.get("fallback_locale") or self._default_locale
        chosen = _language_vars(self._locales, context.get("locale"), fallback)
        # Ours go last: the context cannot replace gettext, and the locale is the one chosen.
        return chosen, {**context, **chosen.text}, {**context, **chosen.html}

    @staticmethod
    def _render_override(
        compiled: _Compiled,
        env: _Environment,
        name: str,
        source: str,
        variables: dict[str, Any],
        *,
        budget: RenderBudget,
    ) -> str:
        try:
            return _render_metered(lambda: compiled.override(env, source), variables, budget)
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            line = error_line(exc)
            where = f"{name}:{line}" if line is not None else name
            if isinstance(exc, jinja2.TemplateSyntaxError):
                raise TemplateError(f"{where}: {exc.message}") from exc
            raise TemplateError(f"{where}: {_describe(exc)}") from exc

    @staticmethod
    def _exists(compiled: _Compiled, env: _Environment, name: str) -> bool:
        try:
            return compiled.template(env, name) is not None
        except jinja2.TemplateError:
            return True  # it exists; rendering it reports the problem

    @staticmethod
    def _render(
        kind: str, compiled: _Compiled, env: _Environment, name: str, variables: dict[str, Any]
    ) -> str:
        try:
            template = compiled.template(env, name)
            if template is None:
                raise jinja2.TemplateNotFound(name)
            return template.render(variables)
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"no template {exc.name!r} for email kind {kind!r}") from exc
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{exc.name or name}:{exc.lineno}: {exc.message}") from exc
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            # TypeError and friends: data of the wrong shape, e.g. a string where an amount
            # in minor units belongs. The message names the template, never the data.
            raise TemplateError(f"{name}: {_describe(exc)}") from exc

    def _inline(self, html: str) -> str:
        try:
            return self._inliner.inline(html)
        except ValueError as exc:  # css_inline.InlineError
            raise TemplateError(f"could not inline the email's CSS: {exc}") from exc


def _render_metered(
    compile_template: Callable[[], jinja2.Template],
    variables: dict[str, Any],
    budget: RenderBudget,
) -> str:
    """Compile and render a tenant's template within ``budget``; its output is counted as it
    is written. Compiling is metered too: Jinja folds a filter on constants while compiling
    (``'x' | center(10**9)``), and a refused fold is left for the render, which reports it."""
    with metered(budget) as meter:
        template = compile_template()
        chunks: list[str] = []
        written = 0
        for chunk in template.generate(variables):
            written += len(chunk)
            meter.size(written)
            chunks.append(chunk)
        return "".join(chunks)


def error_line(exc: BaseException) -> int | None:
    """The line of a template compiled from a string where ``exc`` arose, if it is known.

    Jinja rewrites a render error's traceback so that template frames carry template lines;
    the innermost frame of the string template is where it went wrong (an error inside an
    included or extended file is reported at the line that included it).
    """
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return exc.lineno if exc.name is None and exc.filename in (None, _FROM_STRING) else None
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _FROM_STRING:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def describe_error(exc: Exception) -> str:
    """A template error's reason, without the data that caused it."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return exc.message or str(exc)
    return _describe(exc)


def _describe(exc: Exception) -> str:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"line {exc.lineno}: {exc.message}"
    if isinstance(exc, jinja2.exceptions.SecurityError):
        return f"refused by the sandbox: {exc}"
    if isinstance(exc, jinja2.TemplateError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


# Whitespace that may not survive into a header, but not the no-break spaces that CLDR puts in
# "7 345,62 €" and French typography puts before ":"; and the C0/C1 controls and DEL, which a
# header may not carry either (RFC 5322 s2.2): a NUL from an imported invoice number would
# otherwise make compose refuse the email on every retry, and ESC reach the recipient's header.
_BREAKING_SPACE = re.compile(r"(?:[^\S\u00a0\u202f\u2007]|[\x00-\x1f\x7f-\x9f])+")


def one_line(subject: str) -> str:
    """A subject on one line: CR, LF, tabs, other control characters and runs of spaces
    become one space."""
    return _BREAKING_SPACE.sub(" ", subject).strip()


def html_to_text(html: str) -> str:
    """A plain-text part converted from the HTML one, for kinds without a ``body.txt``."""
    text = "\n".join(line.rstrip() for line in str(get_text(html, _TEXT_CONFIG)).splitlines())
    return re.sub(r"\n{3,}", "\n\n", text.strip()) + "\n"
