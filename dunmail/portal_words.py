"""PURE: the customer account page's own words, in the customer's language.

They live in their own gettext domain, ``portal``
(``templates/locale/<lang>/LC_MESSAGES/portal.po``), apart from the emails' ``messages`` (whole
email sentences, mailer/content/i18n.py) and the clerk's ``clerk`` (dunmail/labels.py). The
English text is the message id. The language is chosen exactly as an email's
(:func:`mailer.content.i18n.choose_language`: customer's locale, tenant's default, English), so
the page speaks the language the customer's emails speak; a message missing from the catalog
shows in English. ``python -m dunmail.portal_words`` re-extracts ``portal.pot`` from the page
templates (``_("...")``), the page builder (``words.gettext``/``words.ngettext``) and the
routes' notices (``N_``) and merges it
into each ``portal.po``; a test names every string still to translate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from gettext import NullTranslations
from pathlib import Path
from typing import Any

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir, extract_from_file

from mailer.content.i18n import (
    Language,
    catalog_languages,
    choose_language,
    domain_translations,
    write_catalogs,
)

DOMAIN = "portal"
ROOT = Path(__file__).resolve().parents[1] / "templates"
LOCALE_ROOT = ROOT / "locale"
PAGES = ROOT / "web" / "portal"
BUILDER = Path(__file__).resolve().parent / "web" / "portal_page.py"
ROUTES = Path(__file__).resolve().parent / "web" / "portal.py"
QUERY_BUILDER = Path(__file__).resolve().parent / "web" / "portal_query_page.py"
QUERY_ROUTES = Path(__file__).resolve().parent / "web" / "portal_query.py"
PREFS_ROUTES = Path(__file__).resolve().parent / "web" / "portal_prefs.py"
# The hosted document page behind an email's View link, and the notices of its links.
HOSTED_PAGES = (
    ROOT / "web" / "link_document.html",
    ROOT / "web" / "link_message.html",
    ROOT / "web" / "hosted" / "_brand.html",
    ROOT / "web" / "hosted" / "_footer.html",
)
HOSTED_BUILDER = Path(__file__).resolve().parent / "web" / "hosted.py"
LINK_ROUTES = Path(__file__).resolve().parent / "web" / "links.py"


@lru_cache(maxsize=64)
def words_for(locale: str | None, root: Path = LOCALE_ROOT) -> NullTranslations:
    """The page's words for ``locale`` ("es_MX" reads the es catalog, then English)."""
    return domain_translations(locale, root, DOMAIN)[1]


def email_words(context: Mapping[str, Any]) -> tuple[Language, NullTranslations]:
    """The language of the email whose frozen ``context`` this is (its ``locale`` formats the
    numbers and dates), chosen exactly as its render chose it (the customer's chosen or ERP
    locale, the tenant's fallback, English), and the page words in it: the hosted page speaks
    the email's language."""
    locale, fallback = context.get("locale"), context.get("fallback_locale")
    language = choose_language(
        LOCALE_ROOT,
        locale if isinstance(locale, str) else None,
        fallback if isinstance(fallback, str) and fallback else "en",
    )
    return language, words_for(language.locale)


def page_gettext(words: NullTranslations) -> Callable[..., str]:
    """A page template's ``_``: ``words`` translated, ``%(name)s`` filled from keywords."""

    def gettext(message: str, **values: Any) -> str:
        text = words.gettext(message)
        return text % values if values else text

    return gettext


def languages(root: Path = LOCALE_ROOT) -> list[str]:
    """English plus every language with a portal catalog."""
    return catalog_languages(root, DOMAIN)


def extract_words() -> Catalog:
    """Every message of the page: ``_()`` in its templates, ``gettext``/``ngettext`` in the
    builder."""
    catalog = Catalog(domain=DOMAIN, project="dunmail", msgid_bugs_address=None)
    for filename, lineno, message, comments, context in extract_from_dir(
        str(PAGES),
        method_map=[("**.html", "jinja2.ext:babel_extract")],
        options_map={"**": {"trimmed": "true"}},
    ):
        catalog.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    for page in HOSTED_PAGES:
        for lineno, message, comments, context in extract_from_file(
            "jinja2.ext:babel_extract", str(page), options={"trimmed": "true"}
        ):
            where = [(f"{page.parent.name}/{page.name}", lineno)]
            catalog.add(message, None, where, auto_comments=comments, context=context)
    for path, keywords in (
        (BUILDER, {"gettext": None, "ngettext": (1, 2)}),
        (ROUTES, {"N_": None}),
        (QUERY_BUILDER, {"gettext": None, "ngettext": (1, 2)}),
        (QUERY_ROUTES, {"N_": None}),
        (PREFS_ROUTES, {"N_": None}),
        (HOSTED_BUILDER, {"gettext": None, "ngettext": (1, 2)}),
        (LINK_ROUTES, {"N_": None}),
    ):
        for lineno, message, comments, _ in extract_from_file(
            "python", str(path), keywords=keywords
        ):
            catalog.add(message, None, [(path.name, lineno)], auto_comments=comments)
    return catalog


def refresh_catalogs(root: Path = LOCALE_ROOT) -> None:
    """Re-extract ``portal.pot`` and merge it into every ``portal.po`` (new messages arrive
    untranslated; translations of unchanged ones are kept)."""
    write_catalogs(root, DOMAIN, extract_words())


if __name__ == "__main__":
    refresh_catalogs()
