"""PURE: what HTML a tenant's template override may put in an email, checked and enforced.

An email may link only to ``http(s)`` addresses and load only one remote resource, the
tenant's logo (README, "Emails and templates"). The built-in templates keep to that; a tenant's
HTML override is the tenant's own markup, so it is held to the same policy twice:

* when saved, :func:`find_unsafe` reads what the override rendered with sample data (an HTML
  parser, not a pattern) and names the first thing it may not contain: ``<script>``, an event
  handler, a ``javascript:`` link, a remote image, CSS that loads something;
* when rendered, :func:`clean_html` passes what the override itself wrote through nh3 (Rust's
  ammonia, an html5ever parser with an allow-list) under the same policy, so an override saved
  before the check existed (or a branch the sample data did not take) cannot slip it through.
"""

from __future__ import annotations

from collections.abc import Iterable
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import nh3
import tinycss2

# Table layout, text and the elements the built-in partials use; no forms, frames, media,
# objects or scripts.
TAGS = frozenset(
    {
        "a", "abbr", "b", "bdi", "bdo", "blockquote", "br", "caption", "center", "cite",
        "code", "col", "colgroup", "dd", "del", "div", "dl", "dt", "em", "font", "h1", "h2",
        "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "li", "ol", "p", "pre", "q", "s",
        "small", "span", "strike", "strong", "sub", "sup", "table", "tbody", "td", "tfoot",
        "th", "thead", "tr", "u", "ul", "wbr",
    }
)  # fmt: skip
# Removed with everything inside them (the rest lose the tag and keep their text).
DROPPED_WITH_CONTENT = frozenset({"script", "style", "noscript", "template", "iframe", "object"})
_COMMON = {"class", "style", "dir", "lang", "title", "align", "valign", "role", "width", "height"}
_TABLE = {"border", "cellpadding", "cellspacing", "bgcolor", "colspan", "rowspan", "summary"}
ATTRIBUTES: dict[str, set[str]] = {
    "*": _COMMON,
    "a": {"href", "name", "target"},
    "img": {"src", "alt", "border"},
    "font": {"color", "face", "size"},
    **dict.fromkeys(("table", "tr", "td", "th", "tbody", "thead", "tfoot", "col"), _TABLE),
}
SCHEMES = frozenset({"http", "https"})
# CSS functions that fetch something or run code, and properties that bind behaviour.
_FETCHING_FUNCTIONS = {"url", "src", "image", "image-set", "-webkit-image-set", "expression"}
BANNED_PROPERTIES = frozenset({"behavior", "-moz-binding"})


def loads_resource(tokens: Iterable[Any]) -> bool:
    """Whether tinycss2 ``tokens`` load a resource or run code (``url()``, ``image-set()``)."""
    for token in tokens:
        if token.type == "url":
            return True
        if token.type == "function" and token.lower_name in _FETCHING_FUNCTIONS:
            return True
        if token.type in ("function", "() block", "[] block", "{} block"):
            inner = token.arguments if token.type == "function" else token.content
            if loads_resource(inner):
                return True
    return False


def _style_loads(style: str) -> bool:
    for declaration in tinycss2.parse_declaration_list(style, skip_comments=True):
        if declaration.type == "declaration" and (
            declaration.lower_name in BANNED_PROPERTIES or loads_resource(declaration.value)
        ):
            return True
    return "\\" in style  # CSS escapes spell url( or expression( past any check


def _web_link(value: str) -> bool:
    parts = urlsplit(value.strip())
    return parts.scheme.lower() in SCHEMES and bool(parts.netloc)


def _problem(tag: str, name: str, value: str, logo: str | None) -> str | None:
    """What is wrong with attribute ``name="value"`` of ``<tag>``, or None."""
    if name.startswith("on"):
        return f"<{tag} {name}=...>: event handlers (scripts) are not allowed in an email"
    if name not in ATTRIBUTES["*"] and name not in ATTRIBUTES.get(tag, set()):
        return f"<{tag} {name}=...>: the attribute {name!r} is not allowed in an email"
    if tag == "a" and name == "href" and not _web_link(value):
        return f"link to {value[:80]!r}: only http(s) links are allowed"
    if tag == "img" and name == "src" and (logo is None or value != logo):
        return (
            f"image {value[:80]!r}: an email loads no image but the tenant's logo "
            "(branding.logo_url)"
        )
    if name == "style" and _style_loads(value):
        return f"<{tag} style={value[:60]!r}>: CSS that loads a resource is not allowed"
    return None


class _Checker(HTMLParser):
    def __init__(self, logo: str | None) -> None:
        super().__init__(convert_charrefs=True)
        self.logo = logo
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TAGS:
            self.problems.append(f"<{tag}> is not allowed in an email")
            return
        # Event handlers first: a script is the worst thing an attribute can carry.
        for name, value in sorted(attrs, key=lambda pair: not pair[0].startswith("on")):
            found = _problem(tag, name, value or "", self.logo)
            if found is not None:
                self.problems.append(found)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def find_unsafe(html: str, *, logo: str | None) -> list[str]:
    """Everything in ``html`` (an override's own output) the policy refuses, in order.

    ``logo`` is the tenant's logo URL as the layout shows it: the one image allowed.
    """
    checker = _Checker(logo)
    checker.feed(html)
    checker.close()
    return checker.problems


def clean_html(html: str, *, logo: str | None) -> str:
    """``html`` with what the policy refuses removed (tags, attributes, links, images)."""

    def keep(tag: str, name: str, value: str) -> str | None:
        return value if _problem(tag, name, value, logo) is None else None

    return nh3.clean(
        html,
        tags=set(TAGS),
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes={tag: set(names) for tag, names in ATTRIBUTES.items()},
        attribute_filter=keep,
        url_schemes=set(SCHEMES),
        link_rel=None,
        strip_comments=True,
    )
