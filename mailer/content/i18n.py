"""PURE: which language an email speaks, and its gettext catalog, read straight from ``.po``.

Templates are written in English and mark their text with Jinja's i18n extension. Translations
live in ``templates/locale/<lang>/LC_MESSAGES/messages.po`` and are compiled in memory with
Babel when first needed, so there is no ``.mo`` build step to forget after editing a ``.po``.

The language of one email is the first of (customer's locale, tenant's default, English) that
has a catalog, trying ``es_MX`` before ``es``. Numbers and dates are formatted for that same
locale, so an email never mixes a Spanish text with Japanese number formats. A message missing
from the chosen catalog falls back along the same chain, ending at the English source: a gap
in a translation shows English text, never an error.

After editing templates, ``python -m mailer.content.i18n`` re-extracts ``messages.pot`` and merges
it
into each ``.po``; a test then names every string still to translate.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from gettext import NullTranslations
from pathlib import Path

from babel.core import Locale, UnknownLocaleError
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po
from babel.support import Translations

SOURCE_LANGUAGE = "en"
DOMAIN = "messages"
# How the templates are read when extracting messages; the Renderer's environments agree.
EXTRACT_OPTIONS = {
    "trimmed": "true",
    "newstyle_gettext": "true",
    "trim_blocks": "true",
    "lstrip_blocks": "true",
    "keep_trailing_newline": "true",
    "silent": "false",
}


@dataclass(frozen=True)
class Language:
    """The outcome of choosing: the locale to format with and the translations to use."""

    locale: str  # e.g. "es_MX": the catalog may be "es", the formatting stays Mexican
    translations: NullTranslations
    catalogs: tuple[str, ...] = ()  # the chain behind ``translations``, e.g. ("es", "fr")

    @property
    def language(self) -> str:
        """The language the text is in: the first catalog of the chain ("es" for es_MX), or
        the English source when none applies. What the outbox records as rendered."""
        return self.catalogs[0] if self.catalogs else SOURCE_LANGUAGE


def parse_locale(value: str | None) -> Locale | None:
    """A Babel locale for ``value`` ("es-MX", "es_MX", "fr"), or None for junk and unknowns."""
    if not value:
        return None
    try:
        return Locale.parse(value.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return None


def _candidates(locale: Locale) -> Iterator[str]:
    """Catalog folder names for ``locale``, most specific first: es_MX, es."""
    if locale.territory:
        yield f"{locale.language}_{locale.territory}"
    yield locale.language


@lru_cache(maxsize=64)
def compile_catalog(root: Path, name: str, domain: str = DOMAIN) -> bytes | None:
    """``root/<name>/LC_MESSAGES/<domain>.po`` compiled to ``.mo`` bytes, or None if absent.

    Fuzzy entries are left out, as ``msgfmt`` would: a guess is not a translation. Every
    gettext domain of the project (the emails' ``messages``, the clerk's ``clerk``, the
    portal's ``portal``) is read here.
    """
    path = root / name / "LC_MESSAGES" / f"{domain}.po"
    if not path.is_file():
        return None
    with path.open("rb") as fh:
        catalog = read_po(fh, locale=name, domain=domain)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    return compiled.getvalue()


def domain_translations(
    locale: str | None, root: Path, domain: str
) -> tuple[str, NullTranslations]:
    """The catalog of ``domain`` for ``locale`` ("es_MX" reads es_MX, else es) and its name;
    English, the source, for English, junk, None or a language without a catalog."""
    parsed = parse_locale(locale)
    if parsed is None or parsed.language == SOURCE_LANGUAGE:
        return SOURCE_LANGUAGE, NullTranslations()
    for name in _candidates(parsed):
        compiled = compile_catalog(root, name, domain)
        if compiled is not None:
            return name, Translations(io.BytesIO(compiled), domain=domain)
    return SOURCE_LANGUAGE, NullTranslations()


def write_catalogs(locale_root: Path, domain: str, template: Catalog) -> None:
    """Write ``<domain>.pot`` and merge it into every ``<lang>/LC_MESSAGES/<domain>.po``: new
    strings arrive untranslated, gone ones are dropped, unchanged translations are kept."""
    with (locale_root / f"{domain}.pot").open("wb") as fh:
        write_po(fh, template, width=100, include_lineno=False)
    for path in sorted(locale_root.glob(f"*/LC_MESSAGES/{domain}.po")):
        with path.open("rb") as fh:
            catalog = read_po(fh, locale=path.parent.parent.name, domain=domain)
        catalog.update(template, no_fuzzy_matching=True, update_header_comment=False)
        with path.open("wb") as fh:
            write_po(fh, catalog, width=100, include_lineno=False, ignore_obsolete=True)


def catalog_languages(locale_root: Path, domain: str) -> list[str]:
    """English plus every language with a ``domain`` catalog."""
    found = {p.parent.parent.name for p in locale_root.glob(f"*/LC_MESSAGES/{domain}.po")}
    return sorted({SOURCE_LANGUAGE} | found)


@lru_cache(maxsize=1024)
def choose_language(root: Path, locale: str | None, fallback: str | None) -> Language:
    """Pick the language of an email for a customer ``locale`` and a tenant ``fallback``."""
    chosen: str | None = None
    names: list[str] = []
    for wanted in (locale, fallback, SOURCE_LANGUAGE):
        parsed = parse_locale(wanted)
        if parsed is None:
            continue
        if parsed.language == SOURCE_LANGUAGE:
            chosen = chosen or str(parsed)
            break  # the templates themselves are the English text: nothing to fall back to
        found = [n for n in _candidates(parsed) if compile_catalog(root, n) is not None]
        if found:
            chosen = chosen or str(parsed)
            names.extend(n for n in found if n not in names)
    if not names:
        return Language(chosen or SOURCE_LANGUAGE, NullTranslations())
    # Each chain gets its own Translations objects: add_fallback mutates the one it is called on.
    chain = [
        Translations(io.BytesIO(compile_catalog(root, n) or b""), domain=DOMAIN) for n in names
    ]
    for catalog in chain[1:]:
        chain[0].add_fallback(catalog)
    return Language(chosen or SOURCE_LANGUAGE, chain[0], tuple(names))


def fallback_note(wanted: str | None, language: str) -> str | None:
    """What to tell a person who asked for ``wanted`` when the email is in ``language``
    ("no Japanese templates; rendered in English (en)"), or None when it speaks what was asked
    (its language, or a regional variant of it: es_MX is rendered from the es catalog)."""
    if not wanted:
        return None
    parsed = parse_locale(wanted)
    if parsed is not None and parsed.language == language.split("_")[0]:
        return None
    used = parse_locale(language)
    used_name = used.get_display_name(SOURCE_LANGUAGE) if used is not None else language
    if parsed is None:
        return f"{wanted!r} is not a language; rendered in {used_name} ({language})"
    asked = parsed.get_display_name(SOURCE_LANGUAGE)
    return f"no {asked} templates; rendered in {used_name} ({language})"


def available_languages(root: Path) -> list[str]:
    """The source language plus every language with a catalog under ``root``."""
    found = {p.parent.parent.name for p in root.glob(f"*/LC_MESSAGES/{DOMAIN}.po")}
    return sorted({SOURCE_LANGUAGE} | found)


def extract_messages(email_root: Path, *more: Path) -> Catalog:
    """Every translatable string in the email templates (and in the folders ``more``: the PDF
    templates, which speak their email's language), as Babel's extractor sees them.

    The result is what ``messages.pot`` holds; a test compares it with each ``.po``.
    """
    catalog = Catalog(domain=DOMAIN, project="dunmail", msgid_bugs_address=None)
    method_map: Iterable[tuple[str, str]] = [
        ("**.html", "jinja2.ext:babel_extract"),
        ("**.txt", "jinja2.ext:babel_extract"),
    ]
    options_map = {"**": EXTRACT_OPTIONS}
    for root in (email_root, *more):
        prefix = "" if root == email_root else f"{root.name}/"
        for filename, lineno, message, comments, context in extract_from_dir(
            str(root), method_map=method_map, options_map=options_map
        ):
            location = [(prefix + filename, lineno)]
            catalog.add(message, None, location, auto_comments=comments, context=context)
    return catalog


def refresh_catalogs(root: Path) -> None:
    """Re-extract ``messages.pot`` from ``root/email`` and ``root/pdf`` and merge it into
    every ``.po``.

    New strings arrive untranslated (the coverage test then names them), strings gone from
    the templates are dropped, translations of unchanged strings are kept. Run it with
    ``python -m mailer.content.i18n`` after editing templates, then translate what is new.
    """
    write_catalogs(root / "locale", DOMAIN, extract_messages(root / "email", root / "pdf"))


if __name__ == "__main__":
    refresh_catalogs(Path(__file__).resolve().parents[2] / "templates")
