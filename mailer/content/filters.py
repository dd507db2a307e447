"""PURE: the template filters that keep tenants' and customers' data from changing the markup.

A brand colour goes into CSS only if it is a hex colour, a logo or a link only if it is an
http(s) URL, a right-to-left name is isolated so it cannot reorder the sentence around it, and
a tenant's extra CSS keeps only plain style rules that load nothing (the same rule as for the
HTML of a tenant's override, ``mailer/content/safe_html.py``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import jinja2
import tinycss2
from markupsafe import Markup

from mailer.content.safe_html import BANNED_PROPERTIES, loads_resource
from mailer.errors import TemplateError

DEFAULT_BRAND = "#1f6feb"
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


def image_url(value: object) -> str | None:
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


# The template filters this module gives every environment (mailer/content/compiled.py).
SAFETY_FILTERS: Mapping[str, Callable[..., Any]] = {
    "bidi": _bidi,
    "css_color": _css_color,
    "contrast": _contrast,
    "image_url": image_url,
    "link": _link,
    "tenant_css": _tenant_css,
}
