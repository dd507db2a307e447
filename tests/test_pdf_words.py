"""The PDFs and the hosted document page speak the customer's email's language (issue 19).

Every label of ``templates/pdf`` is in the emails' catalogs (``messages``), the hosted page's in
the ``portal`` catalogs; both choose the language as the email does. For each shipped language a
real invoice email and its PDF (read back with pypdf) are rendered: the PDF holds no word of the
English source that the language's translations do not use, and it writes the email's own words
for the invoice's labels. The stored PDF's key carries the language, so a German and an English
PDF of one document version are two rows, and each is the same bytes every time it is asked for.
"""

from __future__ import annotations

import io
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from babel.messages.pofile import read_po

from dunmail.app import Services
from mailer.clock import FixedClock
from mailer.content.i18n import extract_messages
from mailer.content.pdf_html import PDF_TEMPLATES, pdf_language
from mailer.content.pdfstore import build_pdf_context
from mailer.content.render import Renderer
from mailer.content.samples import sample_context
from mailer.outbound.links import verify_link
from mailer.outbound.memory import MemoryTransport
from tests.conftest import WEASYPRINT_SKIP
from tests.portal_fixtures import view_token
from tests.test_german import _data_words, _visible, relay_env, services_config

pytestmark = pytest.mark.skipif(bool(WEASYPRINT_SKIP), reason=WEASYPRINT_SKIP or "")

__all__ = ["relay_env", "services_config"]  # the German customer's fixtures, reused

SHIPPED = ("de", "es", "fr", "ro")
LOCALE_ROOT = Path(__file__).resolve().parents[1] / "templates" / "locale"
WORD = re.compile(r"[^\W\d_]{2,}")
# The invoice's labels the email shows too (templates/email/_summary.html).
SHARED_LABELS = ("Invoice", "Issued", "Due", "Total", "Balance due")


def _words(text: str) -> set[str]:
    return {w.lower() for w in WORD.findall(re.sub(r"%\(\w+\)[sd]", " ", text))}


def _catalog(language: str, domain: str = "messages") -> dict[str, str]:
    with (LOCALE_ROOT / language / "LC_MESSAGES" / f"{domain}.po").open("rb") as fh:
        catalog = read_po(fh, locale=language, domain=domain)
    return {str(m.id): str(m.string) for m in catalog if isinstance(m.id, str) and m.id}


def _english_only(language: str, ids: set[str]) -> set[str]:
    """Words of the English ``ids`` that no translation in ``language``'s catalog uses."""
    translated = set().union(*(_words(t) for t in _catalog(language).values()))
    return set().union(*(_words(i) for i in ids)) - translated


def _pdf_ids() -> set[str]:
    return {m.id for m in extract_messages(PDF_TEMPLATES) if isinstance(m.id, str) and m.id}


def _flat(text: str) -> str:
    return " ".join(text.split())


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    return _flat(" ".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages))


def _strings(data: Any) -> list[str]:
    if isinstance(data, dict):
        return [s for v in data.values() for s in _strings(v)]
    if isinstance(data, list):
        return [s for v in data for s in _strings(v)]
    return [data] if isinstance(data, str) else []


def _invoice(renderer: Renderer, context: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """The invoice email's visible HTML text, its PDF's text and the PDF's context."""
    from mailer.content.pdf import render_document

    email = renderer.render("new_invoice", context)
    pdf_context, _ = build_pdf_context("invoice", context)
    pdf = render_document("invoice", pdf_context)
    return _flat(_visible(email.html or "")), _pdf_text(pdf.data), pdf_context


@pytest.mark.parametrize("language", SHIPPED)
def test_the_invoice_pdf_speaks_the_emails_language_with_its_words(
    renderer: Renderer, language: str
) -> None:
    context = sample_context("new_invoice", locale=language)
    email, pdf, pdf_context = _invoice(renderer, context)
    assert renderer.language_of(context) == pdf_language(pdf_context).language == language

    # No English label left: no word of the PDFs' English source that the language lacks
    # (words of the data itself, a product description or the tenant's footer, aside).
    data = set().union(*(_words(s) for s in _strings(pdf_context)))
    left = sorted((_words(pdf) & _english_only(language, _pdf_ids())) - data)
    assert left == [], f"English in the {language} invoice PDF: {left}"

    # The email's words for the invoice: the same in the PDF.
    words = _catalog(language)
    for label in SHARED_LABELS:
        assert words[label] in email and words[label] in pdf, (language, label, words[label])
    page = words["Page %(page)s of %(pages)s"] % {"page": 1, "pages": 1}
    assert page in pdf


def test_the_check_finds_english_labels_in_an_english_pdf(renderer: Renderer) -> None:
    """The check above can fail: an English PDF read against the German words fails it."""
    _, pdf, _ = _invoice(renderer, sample_context("new_invoice", locale="en"))
    found = _words(pdf) & _english_only("de", _pdf_ids())
    assert {"issued", "due", "description", "page", "please", "pay"} <= found


def test_the_tenants_language_serves_a_customer_without_a_catalog_in_email_and_pdf(
    renderer: Renderer,
) -> None:
    from mailer.content.pdf import render_document, render_key

    context = {**sample_context("new_invoice", locale="ja"), "fallback_locale": "de"}
    english = {**context, "fallback_locale": "en"}
    german_pdf, css = build_pdf_context("invoice", context)
    english_pdf, _ = build_pdf_context("invoice", english)
    assert renderer.language_of(context) == pdf_language(german_pdf).language == "de"
    assert pdf_language(english_pdf).language == "en"
    # Same document, same locale, another language: another key; the same input: the same key.
    key = render_key("invoice", german_pdf, tenant_css=css)
    assert key != render_key("invoice", english_pdf, tenant_css=css)
    assert key == render_key("invoice", build_pdf_context("invoice", context)[0], tenant_css=css)
    first = render_document("invoice", german_pdf)
    assert "Rechnung" in _pdf_text(first.data) and "Fällig am" in _pdf_text(first.data)
    assert render_document("invoice", german_pdf).data == first.data  # byte-stable


@pytest.fixture
def services_options() -> dict[str, Any]:
    """PDFs rendered in this process (no pool to start)."""
    from mailer.content.pdf_pool import PDFRenderer

    return {"pdf_renderer": PDFRenderer(workers=0)}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_german_and_an_english_pdf_of_one_version_are_stored_apart(
    services: Services,
) -> None:
    from mailer.content.pdf_pool import PDFRenderer
    from mailer.content.pdfstore import PDFStore

    store = PDFStore(services.engine, renderer=PDFRenderer(workers=0), clock=services.clock)
    fetch: dict[str, Any] = {
        "tenant_id": services.tenants.id("acme"),
        "document": "invoice:1",
        "version": 1,
        "pdf": "invoice",
    }
    german_context = sample_context("new_invoice", locale="de_DE")
    english = await store.fetch_pdf(**fetch, context=sample_context("new_invoice", locale="en"))
    german = await store.fetch_pdf(**fetch, context=german_context)
    assert german.id != english.id and german.sha256 != english.sha256
    assert "Rechnung" in _pdf_text(german.data) and "Invoice" not in _pdf_text(german.data)
    assert "Invoice" in _pdf_text(english.data)
    again = await store.fetch_pdf(**fetch, context=german_context)
    assert again.id == german.id and again.data == german.data


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_hosted_page_of_a_german_customers_invoice_is_german(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    async with httpx.AsyncClient(base_url=web_server) as client:
        response = await client.get(f"/l/{token}")
    assert response.status_code == 200
    page = response.text
    shown = _flat(_visible(page))
    assert 'lang="de"' in page
    assert "<h1>Rechnung INV-1042</h1>" in page
    assert "Fällig am 31.03.2026" in shown and "Offener Betrag (Stand " in shown
    assert "Ihr Kundenkonto: alle offenen Rechnungen, Gutschriften und Zahlungen" in shown
    # No word of the page's English source (both catalogs) that German does not use.
    portal = _catalog("de", "portal")
    translated = set().union(*(_words(t) for t in [*portal.values(), *_catalog("de").values()]))
    english = set().union(*(_words(i) for i in [*portal, *_catalog("de")])) - translated
    left = sorted(_words(shown) & english - _data_words(services) - {"iban", "bic", "epc"})
    assert left == [], f"English on the German hosted page: {left}"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_an_expired_link_of_a_german_customer_says_so_in_german(
    relay_env: tuple[Services, MemoryTransport], web_server: str, clock: FixedClock
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    expires = verify_link(token, keys=services.links.keys, now=clock.now()).expires_at
    clock.set(expires + timedelta(days=1))
    async with httpx.AsyncClient(base_url=web_server) as client:
        gone = await client.get(f"/l/{token}")
        assert gone.status_code == 410
        assert 'lang="de"' in gone.text
        assert "<h1>Dieser Link ist abgelaufen</h1>" in gone.text
        assert "Neuen Link per E-Mail senden" in gone.text and "expired" not in gone.text
        sent = await client.post(f"/l/{token}/refresh")
        assert sent.status_code == 200 and "Ein neuer Link ist unterwegs" in sent.text
        # A link that is not valid names no customer, so no language: English.
        refused = await client.get("/l/x.y")
        assert refused.status_code == 404 and "This link is not valid" in refused.text
