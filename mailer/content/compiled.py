"""PURE: one language's compiled templates, and a tenant's override compiled beside them.

Each language gets a pair of sandboxes (``mailer/content/sandbox.py``), one for text and one for
HTML, with every filter (``formatting``, ``filters``, ``translation``) installed; its templates
are compiled once, with their text already translated. A tenant's HTML override is compiled in
the same sandbox and confined to what ``mailer/content/safe_html.py`` allows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from gettext import NullTranslations
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes

from mailer.content.filters import SAFETY_FILTERS, image_url
from mailer.content.formatting import LOCALE_FILTERS
from mailer.content.i18n import choose_language
from mailer.content.safe_html import clean_html, find_unsafe
from mailer.content.sandbox import Sandbox, active_meter, build_sandbox
from mailer.content.slots import SLOT_FILTERS, literal_attributes
from mailer.content.translation import fill_filters, gettext_functions


@dataclass(frozen=True)
class LanguageVars:
    """What a render adds to the context: the chosen locale and its gettext, per part."""

    catalogs: tuple[str, ...]  # which compiled environments serve this language
    translations: NullTranslations
    text: dict[str, Any]
    html: dict[str, Any]


@lru_cache(maxsize=1024)
def language_vars(root: Path, locale: str | None, fallback: str | None) -> LanguageVars:
    language = choose_language(root, locale, fallback)
    chosen = {"locale": language.locale}
    return LanguageVars(
        catalogs=language.catalogs,
        translations=language.translations,
        text={**chosen, **gettext_functions(language.translations, html=False)},
        html={**chosen, **gettext_functions(language.translations, html=True)},
    )


def _environment(
    loader: jinja2.BaseLoader, translations: NullTranslations, *, autoescape: bool
) -> Sandbox:
    filters = {**LOCALE_FILTERS, **SAFETY_FILTERS, **fill_filters(translations, html=autoescape)}
    filters.update(SLOT_FILTERS)
    return build_sandbox(loader, translations, autoescape=autoescape, filters=filters)


class Compiled:
    """One language's two environments (text and HTML) and the templates found in them."""

    def __init__(self, loader: jinja2.BaseLoader, translations: NullTranslations) -> None:
        self.text = _environment(loader, translations, autoescape=False)
        self.html = _environment(loader, translations, autoescape=True)
        # Compiled templates by name, None for "no such file"; filled once per name. Syntax
        # errors are not kept, so they are reported on every render.
        self._found: dict[tuple[bool, str], jinja2.Template | None] = {}
        self._overrides: dict[tuple[bool, str], jinja2.Template] = {}

    def template(self, env: Sandbox, name: str) -> jinja2.Template | None:
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

    def override(self, env: Sandbox, source: str) -> jinja2.Template:
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
        meter = active_meter()
        pieces: list[str] = []
        written = 0
        with literal_attributes():  # its links are checked as written
            for piece in render(context):
                written += len(piece)
                if meter is not None:
                    meter.size(written)
                pieces.append(piece)
        html = "".join(pieces)
        tenant = context.get("tenant")
        logo = image_url(tenant.get("logo_url")) if isinstance(tenant, Mapping) else None
        listening = _UNSAFE.get()
        if listening is not None:
            listening.extend(find_unsafe(html, logo=logo))
        yield clean_html(html, logo=logo)

    return cleaned
