"""German (``de``), the issue's own example: a customer in de_DE reads the invoice email and the
account page behind its View link entirely in German, and both write the same amount and the
same due date the German way ("120,00 €", "31.03.2026"), as the PDF's formatters do.

"Entirely German" is checked word by word: a word of the English source (any msgid of the
emails' or the page's catalog) that no German translation uses must not be on the page or in
the email. A label left untranslated, or a template string never marked for translation that
shares a word with the catalog, fails here."""

from __future__ import annotations

import email
import html
import re
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from babel.messages.pofile import read_po

from dunmail.app import Services
from mailer.content.formatting import format_money
from mailer.outbound.memory import MemoryTransport
from tests.portal_fixtures import form_checkout, ledger, row_cells, tenants, view_token

LOCALE_ROOT = Path(__file__).resolve().parents[1] / "templates" / "locale"
WORD = re.compile(r"[^\W\d_]{3,}")


def _words(text: str) -> set[str]:
    return {w.lower() for w in WORD.findall(re.sub(r"%\(\w+\)[sd]", " ", text))}


def _english_only_words(*domains: str) -> set[str]:
    """Words of the English source of ``domains`` that no German translation of them uses."""
    english: set[str] = set()
    german: set[str] = set()
    for domain in domains:
        with (LOCALE_ROOT / "de" / "LC_MESSAGES" / f"{domain}.po").open("rb") as fh:
            catalog = read_po(fh, locale="de", domain=domain)
        for message in catalog:
            if not message.id:
                continue
            ids = message.id if isinstance(message.id, tuple) else (message.id,)
            strings = message.string if isinstance(message.string, tuple) else (message.string,)
            english |= set().union(*(_words(str(i)) for i in ids))
            german |= set().union(*(_words(str(s)) for s in strings))
    return english - german


def _visible(markup: str) -> str:
    """The text a reader sees (and a screen reader reads: alt and aria-label) of ``markup``."""
    markup = re.sub(r"<(style|script)\b.*?</\1>", " ", markup, flags=re.S)
    labels = " ".join(re.findall(r'(?:alt|aria-label|title)="([^"]*)"', markup))
    return html.unescape(re.sub(r"<[^>]+>", " ", markup) + " " + labels)


def _values(data: Any) -> Iterator[str]:
    """Every string value (not key, not code) of nested dicts and lists."""
    if isinstance(data, dict):
        for value in data.values():
            yield from _values(value)
    elif isinstance(data, list):
        for value in data:
            yield from _values(value)
    elif isinstance(data, str) and not re.fullmatch(r"[a-z_]+", data):  # not a code ("open")
        yield data


def _data_words(services: Services) -> set[str]:
    """Words that come from the ledger and the tenant (names, descriptions, addresses)."""
    doc = ledger("de_DE", "Europe/Berlin")
    tenant = services.config.tenants["acme"].model_dump(mode="json")
    return _words(" ".join([*_values(doc), *_values(tenant)]))


@pytest.fixture
def services_config(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("ACME_HOOK", "hook-secret")
    monkeypatch.setenv("ACME_PAY", "portal-form-secret-for-tests")
    return tenants(tmp_path, db_url, form_checkout())


@pytest.fixture
def relay_env(services: Services, transport: MemoryTransport) -> tuple[Services, MemoryTransport]:
    doc = ledger("de_DE", "Europe/Berlin")
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    return services, transport


# The language is the subject, not the database: SQLite only.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_german_customer_reads_email_and_account_page_in_german_formatted_alike(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, text = await view_token(services, transport)
    sent = email.message_from_bytes(transport.sent[-1].data, policy=policy.default)
    assert isinstance(sent, EmailMessage)
    html_part = sent.get_body(preferencelist=("html",))
    assert html_part is not None
    email_html = html_part.get_content()
    async with httpx.AsyncClient(base_url=web_server) as client:
        response = await client.get(f"/l/{token}/account")
    assert response.status_code == 200
    page = response.text

    # One locale for everything: German words, German numbers, German dates.
    money, due = "120,00\xa0€", "31.03.2026"
    assert money == format_money(12000, "EUR", "de_DE")
    assert str(sent["Subject"]).startswith("Rechnung INV-1042 von ")
    flat = re.sub(r"\s+", " ", text).replace(" €", "\xa0€")
    assert f"Anbei erhalten Sie die Rechnung INV-1042 über {money}, fällig am {due}." in flat
    assert text.startswith("Guten Tag ")
    assert 'lang="de' in email_html and 'lang="de' in page
    assert "<h1>Ihr Kundenkonto</h1>" in page
    assert "Offene Rechnungen" in page and "Überfällig (EUR)" in page
    # The page's row of the same invoice writes its due date and amount as the email does.
    cells = row_cells(page, "INV-1042")
    assert cells[3] == due and cells[5].replace(" ", "\xa0") == money
    assert due in _visible(email_html) and money in _visible(email_html).replace(" €", "\xa0€")
    assert row_cells(page, "INV-1050")[4] == "20 Tage überfällig"
    assert row_cells(page, "INV-1051")[5].replace(" ", "\xa0") == "1.234,56\xa0€"
    assert row_cells(page, "INV-1052")[4] == "Fällig in 3 Tagen"

    # No English word of either catalog is left on the page or in the email.
    english = _english_only_words("messages", "portal") - _data_words(services)
    for name, shown in (
        ("page", _visible(page)),
        ("email text", text),
        ("email html", _visible(email_html)),
        ("subject", str(sent["Subject"])),
    ):
        left = sorted(_words(shown) & english)
        assert left == [], f"English in the German {name}: {left}"


def test_english_words_are_found_when_a_label_is_not_translated() -> None:
    """The check above can fail: the English of an untranslated label is caught."""
    english = _english_only_words("portal")
    assert {"overdue", "account", "invoices"} <= english
    assert not _words("Ihr Kundenkonto · Offene Rechnungen · 20 Tage überfällig") & english
    assert _words("Ihr Kundenkonto · Open invoices") & english == {"open", "invoices"}
