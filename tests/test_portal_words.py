"""The account page's ``portal`` gettext domain: every message of its templates, builder and
routes is in ``portal.pot`` and translated in every language that has a catalog (en, de, es,
fr, ro), and placeholders survive translation."""

from __future__ import annotations

import re

import pytest
from babel.messages.pofile import read_po

from dunmail.portal_words import DOMAIN, LOCALE_ROOT, extract_words, languages, words_for

LANGUAGES = ["de", "es", "fr", "ro"]
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]")


def _ids() -> set[str | tuple[str, ...] | list[str]]:
    return {m.id for m in extract_words() if m.id}


def test_the_domain_has_catalogs_for_de_es_fr_ro_beside_the_other_domains() -> None:
    assert languages() == sorted(["en", *LANGUAGES])
    assert (LOCALE_ROOT / f"{DOMAIN}.pot").is_file()
    # A separate domain: the emails' and the clerk's catalogs are other files.
    assert (LOCALE_ROOT / "fr" / "LC_MESSAGES" / "messages.po").is_file()


def test_pot_is_up_to_date() -> None:
    with (LOCALE_ROOT / f"{DOMAIN}.pot").open("rb") as fh:
        pot = {m.id for m in read_po(fh) if m.id}
    assert pot == _ids(), "run: python -m dunmail.portal_words"


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_is_translated_with_its_placeholders(language: str) -> None:
    with (LOCALE_ROOT / language / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as fh:
        catalog = read_po(fh, locale=language)
    missing = []
    for wanted in _ids():
        message = catalog.get(wanted)
        found = message.string if message is not None else None
        strings: list[str] = [found] if isinstance(found, str) else [str(s) for s in found or ()]
        if message is None or message.fuzzy or not all(strings):
            missing.append(wanted)
            continue
        source = wanted[0] if isinstance(wanted, tuple) else wanted
        for text in strings:
            assert set(PLACEHOLDER.findall(text)) == set(PLACEHOLDER.findall(str(source))), text
    assert not missing, f"{language}: untranslated: {missing}"


def test_regional_locales_read_the_language_and_unknowns_read_english() -> None:
    assert words_for("fr_CA").gettext("Your account") == "Votre compte"
    assert words_for("es-MX").gettext("Overdue") == "Vencidas"
    assert words_for("de_AT").gettext("Your account") == "Ihr Kundenkonto"
    assert words_for("ja_JP").gettext("Your account") == "Your account"
    assert words_for("junk!").gettext("Your account") == "Your account"
    ro = words_for("ro")
    assert [
        ro.ngettext("%(num)d day overdue", "%(num)d days overdue", n) % {"num": n}
        for n in (1, 2, 21)
    ] == ["1 zi de întârziere", "2 zile de întârziere", "21 de zile de întârziere"]
    de = words_for("de_DE")
    assert [
        de.ngettext("%(num)d day overdue", "%(num)d days overdue", n) % {"num": n}
        for n in (1, 2, 21)
    ] == ["1 Tag überfällig", "2 Tage überfällig", "21 Tage überfällig"]
