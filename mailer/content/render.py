"""PURE: render an email's subject, text and HTML parts from ``templates/email/<kind>/``.

Templates run in a sandbox (``mailer/content/sandbox.py``) compiled per language
(``mailer/content/compiled.py``). HTML is autoescaped; its text goes through gettext
(``mailer/content/i18n.py``, ``mailer/content/translation.py``) in the language chosen for the
customer, and money and dates through Babel in that same locale (``mailer/content/formatting.py``).

Mail clients disagree about CSS: Gmail and Outlook drop or ignore much of a ``<style>`` block,
so every rule is copied onto the elements it matches (``css_inline``); the block stays in
place for the clients that honour it, which is where the mobile media query lives. That is
done once per shape, not per message: the HTML renders with its values as placeholders, the
skeleton is inlined once per (tenant, kind, language, template version) and each message
fills it (``mailer/content/slots.py``). Layout is tables, and the only remote resource an
email may load is the tenant's logo.
The text part has its own template; a kind without one gets text converted from its HTML.

Tenant overrides (``mailer/content/overrides.py``) are whole templates, written exactly like the
built-in ones that ``dunmail template show`` prints: an HTML override starts with
``{% extends "_layout.html" %}`` and fills ``{% block content %}``, so it keeps the tenant's
branded layout, and it may ``{% include %}`` the shared partials. ``render(..., overrides=)``
compiles each override in the same sandboxed environment as the part it replaces (per
language, cached by source hash), within a render budget. An HTML override without a text
override also replaces the text part, converted from the overriding HTML, so the two parts
never say different things.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from gettext import NullTranslations
from pathlib import Path
from typing import Any

import css_inline
import jinja2
from inscriptis import get_text
from inscriptis.model.config import ParserConfig
from jinja2 import meta, nodes

from mailer.content.compiled import Compiled, LanguageVars, language_vars
from mailer.content.i18n import choose_language
from mailer.content.sandbox import RENDER_BUDGET, RenderBudget, Sandbox, render_metered
from mailer.content.slots import InlinedShapes, collecting, written
from mailer.errors import TemplateError
from mailer.outbound.compose import Rendered

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
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


class Renderer:
    """Renders the three parts of each kind; one instance serves every tenant and locale.

    Each language gets its own pair of environments, whose templates are compiled with their
    text already translated (``mailer/content/translation.py``): a render does no catalog
    lookups.
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
        self._compiled: dict[tuple[str, ...], Compiled] = {}
        self._lock = threading.Lock()
        source = self._language(NullTranslations(), ())
        self._text, self._html = source.text, source.html  # the source language (English)
        # Remote stylesheets are never fetched and <link> tags are dropped: an email carries
        # its own CSS. The <style> block is kept for clients that support it.
        self._inliner = css_inline.CSSInliner(
            keep_style_tags=True, keep_link_tags=False, load_remote_stylesheets=False
        )
        # Each HTML shape is inlined once, then filled per message (mailer/content/slots.py).
        self.shapes = InlinedShapes(self._inline)

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

        def part(name: str, env: Sandbox, variables: dict[str, Any]) -> str:
            file = FRESH_LINK[name] if fresh else f"{kind}/{PARTS[name][0]}"
            source = overrides.get(name)
            if source is None:
                return self._render(kind, compiled, env, file, variables)
            return self._render_override(
                compiled, env, f"{file} (override)", source, variables, budget=spend
            )

        subject = part("subject", compiled.text, text_vars)
        tenant = context.get("tenant")
        tenant = tenant if isinstance(tenant, Mapping) else {}
        with collecting(attributes="[" not in str(tenant.get("css") or "")) as values:
            skeleton = part("html", compiled.html, html_vars)
        if "text" in overrides:
            text = part("text", compiled.text, text_vars)
        elif fresh or (
            "html" not in overrides and self._exists(compiled, compiled.text, f"{kind}/body.txt")
        ):
            text = part("text", compiled.text, text_vars)
        else:
            text = html_to_text(written(skeleton, values))
        source = overrides.get("html")
        version = hashlib.sha256(source.encode()).hexdigest() if source is not None else ""
        group = (str(tenant.get("name")), "" if fresh else kind, *chosen.catalogs)
        html = self.shapes.fill(group, version, skeleton, values)
        if html is None:  # a value reads as a placeholder: this message is inlined as it is
            html = self._inline(part("html", compiled.html, html_vars))
        return Rendered(subject=one_line(subject), text=text, html=html)

    def forget(self, tenant: str, kind: str) -> None:
        """Drop ``tenant``'s inlined ``kind`` in every language (its override changed); a
        render also notices a changed override by itself."""
        self.shapes.forget(tenant, kind)

    def inline_each(self, html: str) -> str:
        """``html``'s CSS inlined on its elements: what :meth:`render` did per message before
        it inlined each shape once (kept for the equivalence tests and the benchmark)."""
        return self._inline(html)

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
            return render_metered(lambda: env.from_string(source), variables, budget or self.budget)
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

    def _language(self, translations: NullTranslations, catalogs: tuple[str, ...]) -> Compiled:
        compiled = self._compiled.get(catalogs)
        if compiled is None:
            with self._lock:  # renders run in threads; compile each language once
                compiled = self._compiled.get(catalogs)
                if compiled is None:
                    compiled = self._compiled[catalogs] = Compiled(self._loader, translations)
        return compiled

    def _variables(
        self, context: dict[str, Any], fallback: str | None
    ) -> tuple[LanguageVars, dict[str, Any], dict[str, Any]]:
        fallback = fallback or context.get("fallback_locale") or self._default_locale
        chosen = language_vars(self._locales, context.get("locale"), fallback)
        # Ours go last: the context cannot replace gettext, and the locale is the one chosen.
        return chosen, {**context, **chosen.text}, {**context, **chosen.html}

    @staticmethod
    def _render_override(
        compiled: Compiled,
        env: Sandbox,
        name: str,
        source: str,
        variables: dict[str, Any],
        *,
        budget: RenderBudget,
    ) -> str:
        try:
            return render_metered(lambda: compiled.override(env, source), variables, budget)
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            line = error_line(exc)
            where = f"{name}:{line}" if line is not None else name
            if isinstance(exc, jinja2.TemplateSyntaxError):
                raise TemplateError(f"{where}: {exc.message}") from exc
            raise TemplateError(f"{where}: {_describe(exc)}") from exc

    @staticmethod
    def _exists(compiled: Compiled, env: Sandbox, name: str) -> bool:
        try:
            return compiled.template(env, name) is not None
        except jinja2.TemplateError:
            return True  # it exists; rendering it reports the problem

    @staticmethod
    def _render(
        kind: str, compiled: Compiled, env: Sandbox, name: str, variables: dict[str, Any]
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


_TEXT_CONFIG = ParserConfig(display_links=True)


def html_to_text(html: str) -> str:
    """A plain-text part converted from the HTML one, for kinds without a ``body.txt``."""
    text = "\n".join(line.rstrip() for line in str(get_text(html, _TEXT_CONFIG)).splitlines())
    return re.sub(r"\n{3,}", "\n\n", text.strip()) + "\n"
