"""PURE: gettext in templates, resolved while a template compiles: one pair of environments per
language (``mailer/content/compiled.py``), whose templates hold their text already translated.

The catalogs themselves, and which language a customer gets, are ``mailer/content/i18n.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from gettext import NullTranslations
from typing import Any

from jinja2 import nodes
from jinja2.visitor import NodeTransformer
from markupsafe import Markup, escape


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


def gettext_functions(translations: NullTranslations, *, html: bool) -> dict[str, Any]:
    """Jinja "newstyle" ``gettext``/``ngettext``/``_`` bound to one catalog and one part.

    Calls with a literal message are translated when the template compiles (see
    :class:`TranslateLiterals`); these serve the rest, e.g. ``_(some_variable)``.
    """
    fill: Callable[[str, dict[str, Any]], str] = _fill_html if html else _fill_text

    def gettext(message: str, /, **variables: Any) -> str:
        return fill(translations.gettext(message), variables)

    def ngettext(singular: str, plural: str, n: int, /, **variables: Any) -> str:
        variables.setdefault("num", n)
        return fill(translations.ngettext(singular, plural, n), variables)

    return {"gettext": gettext, "ngettext": ngettext, "_": gettext}


def fill_filters(translations: NullTranslations, *, html: bool) -> dict[str, Any]:
    """The filters that :class:`TranslateLiterals` compiles calls with variables into."""
    fill: Callable[[str, dict[str, Any]], str] = _fill_html if html else _fill_text

    def fill_translated(text: str, /, **variables: Any) -> str:
        return fill(text, variables)

    def fill_plural(n: int, singular: str, plural: str, /, **variables: Any) -> str:
        variables.setdefault("num", n)
        return fill(translations.ngettext(singular, plural, n), variables)

    return {"_i18n_fill": fill_translated, "_i18n_nfill": fill_plural}


class TranslateLiterals(NodeTransformer):
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
