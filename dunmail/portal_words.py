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

from functools import lru_cache
from gettext import NullTranslations
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir, extract_from_file

from mailer.content.i18n import catalog_languages, domain_translations, write_catalogs

DOMAIN = "portal"
ROOT = Path(__file__).resolve().parents[1] / "templates"
LOCALE_ROOT = ROOT / "locale"
PAGES = ROOT / "web" / "portal"
BUILDER = Path(__file__).resolve().parent / "web" / "portal_page.py"
ROUTES = Path(__file__).resolve().parent / "web" / "portal.py"
QUERY_BUILDER = Path(__file__).resolve().parent / "web" / "portal_query_page.py"
QUERY_ROUTES = Path(__file__).resolve().parent / "web" / "portal_query.py"
PREFS_ROUTES = Path(__file__).resolve().parent / "web" / "portal_prefs.py"


@lru_cache(maxsize=64)
def words_for(locale: str | None, root: Path = LOCALE_ROOT) -> NullTranslations:
    """The page's words for ``locale`` ("es_MX" reads the es catalog, then English)."""
    return domain_translations(locale, root, DOMAIN)[1]


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
    for path, keywords in (
        (BUILDER, {"gettext": None, "ngettext": (1, 2)}),
        (ROUTES, {"N_": None}),
        (QUERY_BUILDER, {"gettext": None, "ngettext": (1, 2)}),
        (QUERY_ROUTES, {"N_": None}),
        (PREFS_ROUTES, {"N_": None}),
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
