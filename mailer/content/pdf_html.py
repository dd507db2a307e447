"""PURE: a PDF document's HTML from its context: the sandboxed templates of ``templates/pdf/``.

The first half of a render, kept apart from WeasyPrint (which this module does not import) so the
templates, their filters and the checks on a context can be used and tested without Pango. The
other PDF modules build on this one, so :class:`PDFError` and the document table live here.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from functools import lru_cache
from gettext import NullTranslations
from pathlib import Path
from typing import Any

import jinja2
from babel.core import UnknownLocaleError
from babel.numbers import format_decimal, format_percent
from babel.support import Translations
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from mailer.content.formatting import format_day, format_money, template_day
from mailer.content.i18n import (
    DOMAIN,
    Language,
    choose_language,
    compile_catalog,
    extract_messages,
)
from mailer.content.render import TEMPLATES
from mailer.errors import MailerError, TemplateError

PDF_TEMPLATES = TEMPLATES / "pdf"
# The PDFs' words are in the emails' catalogs (the ``messages`` domain): a PDF travels with its
# email and speaks its language, chosen the same way (:func:`pdf_language`).
LOCALE_ROOT = TEMPLATES / "locale"
# The document kinds (``mailer.content.kinds.Pdf``), each with the context key that holds its data:
# each template reads exactly that key's TypedDict in mailer/content/shapes.py, as the outbox builds
# it.
DOCUMENTS = {
    "invoice": "invoice",
    "credit_note": "credit_note",
    "estimate": "estimate",
    "receipt": "payment",
    "refund": "refund",
    "statement": "statement",
}
STATEMENT_MODES = ("open_item", "balance_forward")
MAX_HTML = 8 * 1024 * 1024  # about 20,000 invoice lines: beyond it, refuse rather than grind
DEFAULT_BRAND = "#1f6feb"


class PDFError(MailerError):
    """WeasyPrint could not render a document, or its input was refused; the message says why."""


def _isolated(text: str) -> str:
    """Right-to-left values (an Arabic date, with its U+200F marks) between FSI and PDI.

    Unicode bidi isolation (UAX #9) keeps such a value in its own direction inside an English
    sentence; without it "02/03/2026" in the ar locale is reordered to "022026/03/". Plain
    characters, not a <bdi> element, because every element costs layout time.
    """
    if any(unicodedata.bidirectional(char) in ("R", "AL") for char in text):
        return f"\u2068{text}\u2069"
    return text


@jinja2.pass_context
def _money(ctx: jinja2.runtime.Context, amount_minor: int, currency: str) -> str:
    return _isolated(format_money(amount_minor, currency, ctx["locale"]))


@jinja2.pass_context
def _date(ctx: jinja2.runtime.Context, value: str | date, fmt: str = "medium") -> str:
    # The customer's calendar day, as the email prints it.
    return _isolated(format_day(template_day(ctx, value), fmt, ctx["locale"]))


@jinja2.pass_context
def _number(ctx: jinja2.runtime.Context, value: str | int) -> str:
    return _isolated(format_decimal(Decimal(str(value)), locale=ctx["locale"]))


@jinja2.pass_context
def _percent(ctx: jinja2.runtime.Context, value: str | int) -> str:
    rate = Decimal(str(value)) / 100
    return _isolated(format_percent(rate, locale=ctx["locale"], decimal_quantization=False))


def _css_color(value: object) -> str:
    """Only ``#rgb``/``#rrggbb`` reach the stylesheet: autoescaping does not make CSS safe."""
    text = value if isinstance(value, str) else ""
    digits = text[1:]
    ok = text.startswith("#") and len(digits) in (3, 6)
    return text if ok and all(c in "0123456789abcdefABCDEF" for c in digits) else DEFAULT_BRAND


def pdf_language(context: Mapping[str, Any]) -> Language:
    """The language of a PDF: its email's (``Renderer.language_of``), from the context's
    ``locale`` (the customer's chosen language, else the ERP's) and ``fallback_locale`` (the
    tenant's), ending at English. Numbers and dates keep following ``locale``."""
    locale = context.get("locale")
    fallback = context.get("fallback_locale") or "en"
    return choose_language(LOCALE_ROOT, locale if isinstance(locale, str) else None, str(fallback))


@lru_cache(maxsize=32)
def pdf_words(catalogs: tuple[str, ...]) -> str:
    """SHA-256 of the PDFs' words in the language of ``catalogs``: every message of the PDF
    templates with its translation. Part of the render key (``pdf.render_key``), so a PDF is
    rendered again when one of its words is translated anew, and only then: an email's words
    changing in the same catalog leaves the stored PDFs (and their bytes) as they were."""
    translations = _translations(catalogs)
    digest = hashlib.sha256(",".join(catalogs).encode() + b"\0")
    for message in extract_messages(PDF_TEMPLATES):
        if isinstance(message.id, str) and message.id:
            digest.update(f"{message.id}\0{translations.gettext(message.id)}\0".encode())
        elif isinstance(message.id, tuple | list):
            singular, plural = str(message.id[0]), str(message.id[1])
            for n in (1, 2, 5, 21):
                digest.update(translations.ngettext(singular, plural, n).encode() + b"\0")
    return digest.hexdigest()


def _translations(catalogs: tuple[str, ...]) -> NullTranslations:
    """The chain of ``messages`` catalogs named (("es", "fr"): Spanish, then French), English
    for none; built like :func:`mailer.content.i18n.choose_language`'s."""
    chain = [
        Translations(io.BytesIO(compile_catalog(LOCALE_ROOT, name) or b""), domain=DOMAIN)
        for name in catalogs
    ]
    for catalog in chain[1:]:
        chain[0].add_fallback(catalog)
    return chain[0] if chain else NullTranslations()


_COUNTERS = {"%(page)s": "counter(page)", "%(pages)s": "counter(pages)"}


def _css_counters(text: str) -> Markup:
    """A translated "Page %(page)s of %(pages)s" as a CSS ``content`` value: its words as CSS
    strings, every character but letters, digits and spaces escaped (so no quote or ``</style>``
    can close anything), the placeholders as WeasyPrint's page counters."""
    values = []
    for part in re.split(r"(%\(pages?\)s)", str(text)):
        if part in _COUNTERS:
            values.append(_COUNTERS[part])
        elif part:
            chars = (c if c.isalnum() or c == " " else f"\\{ord(c):x} " for c in part)
            values.append(f'"{"".join(chars)}"')
    return Markup(" ".join(values) or '""')


@lru_cache(maxsize=32)
def environment(root: Path = PDF_TEMPLATES, catalogs: tuple[str, ...] = ()) -> SandboxedEnvironment:
    """The sandboxed environment of the templates in ``root`` in one language (the chain of
    ``catalogs``; English for none), built once per process and language."""
    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(root)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # templates change with a deploy, not under a running engine
        extensions=["jinja2.ext.i18n"],
    )
    # Newstyle: the translation is %-formatted with escaped values; trimmed msgids, as extracted.
    env.install_gettext_translations(  # type: ignore[attr-defined]  # added by the extension
        _translations(catalogs), newstyle=True
    )
    env.policies["ext.i18n.trimmed"] = True
    env.filters.update(
        money=_money,
        date=_date,
        number=_number,
        percent=_percent,
        css_color=_css_color,
        css_counters=_css_counters,
    )
    return env


def render_html(document: str, context: Mapping[str, Any], *, root: Path = PDF_TEMPLATES) -> str:
    """The HTML of ``document`` for ``context``: PURE, the first half of
    ``mailer.content.pdf.render_pdf``.

    A template problem (syntax, a missing variable, a sandbox refusal) becomes a TemplateError
    naming the template and line; a context WeasyPrint must not see is refused with PDFError.
    """
    key = DOCUMENTS.get(document)
    if key is None:
        raise TemplateError(f"no PDF template for {document!r} (one of {', '.join(DOCUMENTS)})")
    if key not in context:
        raise TemplateError(f"{document}.html: the context has no {key!r}")
    if document == "statement" and context[key].get("style") not in STATEMENT_MODES:
        raise PDFError(f"statement.style must be one of {STATEMENT_MODES}")
    try:
        env = environment(root, pdf_language(context).catalogs)
        html = env.get_template(f"{document}.html").render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{exc.name}:{exc.lineno}: {exc.message}") from exc
    except _RENDER_ERRORS as exc:
        raise TemplateError(f"{_template_line(exc, root, document)}: {exc}") from exc
    if len(html) > MAX_HTML:
        raise PDFError(
            f"{document} is too large to render as a PDF ({len(html):,} characters of HTML; "
            f"the limit is {MAX_HTML:,})"
        )
    return html


# What a template or a filter raises on bad data: an unknown variable, a sandbox refusal, a date
# or decimal that does not parse (InvalidOperation is an ArithmeticError), an unknown locale.
_RENDER_ERRORS = (
    jinja2.UndefinedError,
    jinja2.exceptions.SecurityError,
    TypeError,
    ValueError,
    ArithmeticError,
    LookupError,
    UnknownLocaleError,
)


def _template_line(exc: BaseException, root: Path, document: str) -> str:
    """``name:line`` of the innermost template frame; Jinja rewrites tracebacks to show them."""
    where = f"{document}.html"
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(str(root)):
            where = f"{Path(filename).name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where
