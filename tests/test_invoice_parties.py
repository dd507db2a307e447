"""What an invoice needs: both parties' billing addresses and tax ids on every PDF, and Pay as
the leading button wherever there is something to pay online (issue 18).

The ledger keeps a customer's ``billing_address`` and ``tax_id`` from the ERP's import (absent
keeps them, ``[]`` / ``""`` clear them); the tenant's are ``[branding] address`` and
``tax_id``. Delivered PDFs are read back with pypdf in every shipped language; the buttons are
checked on every kind's sample email in every language, and on the fresh-link email.
"""

from __future__ import annotations

import io
import re
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from sqlmodel import Session, select

from dunmail.app import Services
from mailer.clock import FixedClock
from mailer.content.kinds import KINDS
from mailer.content.render import Renderer
from mailer.content.samples import sample_context
from mailer.ledger.models import Customer
from mailer.outbound.memory import MemoryTransport
from tests.conftest import WEASYPRINT_SKIP, emails
from tests.test_render import LOCALES

TENANT_ADDRESS = ["Acme Supplies SRL", "Strada Exemplu 12", "010101 București"]
TENANT_TAX_ID = "RO12345678"
# One customer per language, each with an address of its own country and a tax id.
CUSTOMERS = {
    "en": (["Globex Ltd", "1 Globex Way", "Leeds LS1 4AP"], "GB987654321"),
    "de": (["Globex Deutschland GmbH", "Friedrichstraße 1", "10117 Berlin"], "DE123456789"),
    "es": (["Globex Ibérica S.L.", "Calle Mayor 5", "28013 Madrid"], "ESB12345678"),
    "fr": (["Globex France SAS", "12 rue de la Paix", "75002 Paris"], "FR40303265045"),
    "ro": (["Globex România SRL", "Bulevardul Unirii 1", "030167 București"], "RO7654321"),
}
TAX_LABEL = {
    "en": "Tax ID: ",
    "de": "USt-IdNr.: ",
    "es": "NIF: ",
    "fr": "N° TVA\xa0: ",
    "ro": "Cod fiscal: ",
}


def _customer(lang: str, **fields: Any) -> dict[str, Any]:
    address, tax_id = CUSTOMERS[lang]
    return {
        "id": f"C-{lang}",
        "name": address[0],
        "locale": lang,
        "time_zone": "UTC",
        "billing_address": address,
        "tax_id": tax_id,
        "contacts": [{"email": f"ap@{lang}.globex.example", "roles": ["ap"]}],
        **fields,
    }


def _invoice(lang: str) -> dict[str, Any]:
    return {
        "id": f"i-{lang}",
        "number": f"INV-{lang.upper()}-1",
        "customer": f"C-{lang}",
        "currency": "EUR",
        "issued_at": "2026-03-01",
        "due_at": "2026-03-31",
        "status": "open",
        "lines": [{"description": "Support", "quantity": "1", "unit_price": "120.00"}],
    }


def _row(services: Services, external_id: str) -> Customer:
    with Session(services.engine) as session:
        row = session.exec(select(Customer).where(Customer.external_id == external_id)).one()
        session.expunge(row)
        return row


# -- the ledger keeps what the ERP sends ---------------------------------------------------------


async def test_import_keeps_clears_and_refuses_billing_details(services: Services) -> None:
    imported = services.ledger.import_document({"customers": [_customer("fr")]}, tenant="acme")
    assert imported.errors == []
    row = _row(services, "C-fr")
    assert (row.billing_address, row.tax_id) == (CUSTOMERS["fr"][0], "FR40303265045")

    without = _customer("fr")
    del without["billing_address"], without["tax_id"]
    assert services.ledger.import_document({"customers": [without]}, tenant="acme").errors == []
    row = _row(services, "C-fr")  # absent: the ledger's values stay
    assert (row.billing_address, row.tax_id) == (CUSTOMERS["fr"][0], "FR40303265045")

    cleared = _customer("fr", billing_address=[], tax_id="")
    assert services.ledger.import_document({"customers": [cleared]}, tenant="acme").errors == []
    row = _row(services, "C-fr")
    assert (row.billing_address, row.tax_id) == (None, None)

    bad = [
        _customer("fr", billing_address=["12 rue\nde la Paix"]),
        _customer("fr", billing_address=[f"line {n}" for n in range(11)]),
        _customer("fr", tax_id="X" * 51),
        _customer("fr", tax_id=12345),
    ]
    errors = [
        error
        for record in bad
        for error in services.ledger.import_document({"customers": [record]}, tenant="acme").errors
    ]
    assert [error.where for error in errors] == [
        "customers[0].billing_address[0]",
        "customers[0].billing_address",
        "customers[0].tax_id",
        "customers[0].tax_id",
    ]
    assert all("\n" not in str(error) for error in errors)
    assert _row(services, "C-fr").tax_id is None  # nothing of a refused record was applied


# -- the PDFs show both parties, in every shipped language ----------------------------------------


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    pages = PdfReader(io.BytesIO(data)).pages
    return " ".join(" ".join(page.extract_text() for page in pages).split())


@pytest.fixture
def services_options() -> dict[str, Any]:
    """PDFs rendered in this process (no pool to start)."""
    from mailer.content.pdf_pool import PDFRenderer

    return {"pdf_renderer": PDFRenderer(workers=0)}


@pytest.mark.skipif(WEASYPRINT_SKIP is not None, reason=WEASYPRINT_SKIP or "")
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.services_config(
    pdfs=True,
    tenants={
        "acme": {
            "name": "Acme Supplies",
            "email": "ar@acme.example",
            "branding": {"address": TENANT_ADDRESS, "tax_id": TENANT_TAX_ID},
        }
    },
)
async def test_every_invoice_pdf_shows_both_addresses_and_tax_ids(
    services: Services, transport: MemoryTransport, clock: FixedClock
) -> None:
    document = {
        "customers": [_customer(lang) for lang in LOCALES],
        "invoices": [_invoice(lang) for lang in LOCALES],
    }
    assert services.ledger.import_document(document, tenant="acme").errors == []
    clock.advance(timedelta(minutes=6))  # past the new invoices' grace
    await services.dunning.tick()
    sent = {mail.recipients[0]: mail for mail in emails(transport)}
    missing: dict[str, list[str]] = {}
    for lang in LOCALES:
        parsed = message_from_bytes(sent[f"ap@{lang}.globex.example"].data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        [pdf] = [p for p in parsed.iter_attachments() if p.get_content_type() == "application/pdf"]
        data = pdf.get_payload(decode=True)
        assert isinstance(data, bytes)
        text = _pdf_text(data)
        address, tax_id = CUSTOMERS[lang]
        wanted = [*TENANT_ADDRESS, TENANT_TAX_ID, *address, tax_id, f"INV-{lang.upper()}-1"]
        missing[lang] = [line for line in wanted if line not in text]
        # The email's footer names the tenant's tax id too, in the customer's language.
        body = parsed.get_body(preferencelist=("plain",))
        assert body is not None and f"{TAX_LABEL[lang]}{TENANT_TAX_ID}" in body.get_content()
    assert missing == dict.fromkeys(LOCALES, [])


# -- Pay leads where there is something to pay online --------------------------------------------

BUTTON = re.compile(r'<a class="(btn|btn-secondary)" href="([^"]+)"')
WITH_BUTTONS = sorted(kind for kind, spec in KINDS.items() if spec.buttons)


def _buttons(html: str) -> list[tuple[str, str]]:
    """(class, which link) of each button: the sample links end "<button>-7f3a9c"."""
    return [
        (cls, href.rsplit("/", 1)[-1].removesuffix("-7f3a9c")) for cls, href in BUTTON.findall(html)
    ]


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("kind", WITH_BUTTONS)
@pytest.mark.parametrize("fresh", [False, True], ids=["kind", "fresh-link"])
def test_pay_is_the_primary_button_where_there_is_a_payment_url(
    renderer: Renderer, kind: str, locale: str, fresh: bool
) -> None:
    context = sample_context(kind, locale=locale)
    if fresh:
        context["fresh_link"] = True
    with_pay = _buttons(renderer.render(kind, context).html or "")
    context["links"] = {**context["links"], "pay": None}
    without_pay = _buttons(renderer.render(kind, context).html or "")
    for shown in (with_pay, without_pay):
        # exactly one primary wherever a button shows (the overdue summary has only Pay)
        assert [cls for cls, _ in shown].count("btn") == min(1, len(shown)), shown
    [lead] = [link for cls, link in with_pay if cls == "btn"]
    lead_without = next((link for cls, link in without_pay if cls == "btn"), None)
    buttons = KINDS[kind].buttons
    if "pay" in buttons:
        assert lead == "pay"
        assert all(cls == "btn-secondary" for cls, link in with_pay if link == "view")
    if "view" in buttons:
        assert lead_without == "view"
    assert all(link != "pay" for _, link in without_pay)
