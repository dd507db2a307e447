"""Bank transfer instructions where customers see them: the invoice emails in every shipped
language (only for a tenant with ``[bank]``), the reference copied out of a sent email and fed to
the bank statement import, the overdue summary's customer reference, the invoice PDF and the
hosted document page; on SQLite and PostgreSQL, sent through the outbox into a MemoryTransport."""

from __future__ import annotations

import email
import io
import re
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select

from dunmail.app import Services
from mailer.content.kinds import Kind
from mailer.ledger.models import Customer, Invoice
from mailer.ledger.references import customer_reference, format_reference, invoice_reference
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.models import Message
from tests.bank_files import Entry, camt
from tests.conftest import WEASYPRINT_SKIP, make_config
from tests.test_bank_transfer import decode_png

BANK = {
    "iban": "DE89 3704 0044 0532 0130 00",
    "bic": "COBADEFFXXX",
    "account_name": "Acme Supplies GmbH",
}
IBAN_SHOWN = "DE89 3704 0044 0532 0130 00"
HEADINGS = {
    "en": "Pay by bank transfer",
    "es": "Pagar por transferencia bancaria",
    "fr": "Payer par virement bancaire",
    "ro": "Plată prin transfer bancar",
}
KINDS = (Kind.NEW_INVOICE, Kind.INVOICE_REMINDER, Kind.LATE_PAYMENT_REMINDER)


def _doc() -> dict[str, Any]:
    """A customer per language with a euro invoice; the English one also owes in dollars and
    has an invoice overdue since February."""
    doc: dict[str, Any] = {"customers": [], "invoices": []}
    for lang in HEADINGS:
        doc["customers"].append(
            {
                "id": f"C-{lang}",
                "name": f"Globex {lang}",
                "locale": lang,
                "time_zone": "UTC",
                "contacts": [{"email": f"ap-{lang}@globex.example", "roles": ["ap"]}],
            }
        )
    rows = [(lang, f"C-{lang}", "EUR", "2026-03-31") for lang in HEADINGS]
    rows += [("usd", "C-en", "USD", "2026-03-31"), ("old", "C-en", "EUR", "2026-02-10")]
    for name, customer, currency, due in rows:
        doc["invoices"].append(
            {
                "id": f"i-{name}",
                "number": f"INV-{name}",
                "customer": customer,
                "currency": currency,
                "issued_at": "2026-02-01",
                "due_at": due,
                "lines": [{"description": "Support", "quantity": "1", "unit_price": "120.00"}],
            }
        )
    return doc


@pytest.fixture(params=[True, False], ids=["bank", "no-bank"])
def has_bank(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def services_config(tmp_path: Path, db_url: str, has_bank: bool) -> dict[str, Any]:
    """acme as the shared tests configure it (links, relay), with or without ``[bank]``."""
    acme = make_config(tmp_path, db_url).tenants["acme"].model_dump(mode="json")
    if has_bank:
        acme["bank"] = BANK
    return {"tenants": {"acme": acme}}


@pytest.fixture
def ledger(services: Services) -> Services:
    assert services.ledger.import_document(_doc(), tenant="acme").errors == []
    return services


def _parts(data: bytes) -> tuple[str, str]:
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    text, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content().replace("\r\n", "\n"), html.get_content()


def _reference(services: Services, number: str) -> str:
    with Session(services.engine) as session:
        invoice = session.exec(select(Invoice).where(Invoice.number == number)).one()
    return invoice_reference(services.tenants.id("acme"), invoice.id or 0)


def _balance(services: Services, number: str) -> int:
    with Session(services.engine) as session:
        return session.exec(select(Invoice).where(Invoice.number == number)).one().balance_minor


async def test_the_invoice_emails_show_the_block_only_with_bank_details(
    ledger: Services, transport: MemoryTransport, has_bank: bool
) -> None:
    for lang, heading in HEADINGS.items():
        number = f"INV-{lang}"
        reference = format_reference(_reference(ledger, number))
        for kind in KINDS:
            await ledger.sending.send_email(kind, document="invoice", ref=number, tenant="acme")
            text, html = _parts(transport.sent[-1].data)
            where = f"{kind} in {lang}"
            if not has_bank:
                assert heading not in text and "IBAN" not in text, where
                assert "data:image" not in html and reference not in html, where
                continue
            assert heading in text and heading in html, where
            colon = " : " if lang == "fr" else ": "
            assert f"IBAN{colon}{IBAN_SHOWN}" in text and f"BIC{colon}COBADEFFXXX" in text, where
            assert re.search(rf"^.+ ?: {re.escape(reference)}$", text, re.M), where
            assert reference in html and IBAN_SHOWN in html, where
            qr = re.search(r'<img src="(data:image/png;base64,[^"]+)"', html)
            assert qr is not None, where
            lines = decode_png(qr.group(1)).split("\n")
            assert lines[5:8] == ["Acme Supplies GmbH", BANK["iban"].replace(" ", ""), "EUR120"]
            assert lines[9] == reference.replace(" ", ""), where


@pytest.mark.parametrize("has_bank", [True])
async def test_a_reference_copied_from_the_email_pays_that_invoice(
    ledger: Services, transport: MemoryTransport
) -> None:
    await ledger.sending.send_email(
        Kind.NEW_INVOICE, document="invoice", ref="INV-fr", tenant="acme"
    )
    text, _ = _parts(transport.sent[-1].data)
    copied = re.search(r"^Référence : (.+)$", text, re.M)  # French spacing
    assert copied is not None
    statement = camt([Entry("120.00", text=f"Facture {copied.group(1)} merci")])
    report = ledger.bank.import_statement(statement, tenant="acme")
    assert report is not None
    assert _balance(ledger, "INV-fr") == 0
    assert {n: _balance(ledger, n) for n in ("INV-en", "INV-es", "INV-ro")} == dict.fromkeys(
        ("INV-en", "INV-es", "INV-ro"), 12000
    )


@pytest.mark.parametrize("has_bank", [True])
async def test_the_overdue_summary_asks_for_the_total_under_the_customers_reference(
    ledger: Services, transport: MemoryTransport
) -> None:
    await ledger.sending.send_email(
        Kind.OVERDUE_SUMMARY, document="customer", ref="C-en", tenant="acme"
    )
    text, html = _parts(transport.sent[-1].data)
    with Session(ledger.engine) as session:
        customer = session.exec(select(Customer).where(Customer.external_id == "C-en")).one()
    reference = format_reference(customer_reference(ledger.tenants.id("acme"), customer.id or 0))
    assert f"Reference: {reference}" in text and "Amount: €120.00" in text
    assert 'src="data:image/png;base64,' in html
    copied = re.search(r"^Reference: (.+)$", text, re.M)
    assert copied is not None
    ledger.bank.import_statement(camt([Entry("120.00", ref=copied.group(1))]), tenant="acme")
    assert _balance(ledger, "INV-old") == 0 and _balance(ledger, "INV-en") == 12000


@pytest.mark.parametrize("has_bank", [True])
async def test_other_currencies_get_the_text_without_a_qr_code(
    ledger: Services, transport: MemoryTransport
) -> None:
    await ledger.sending.send_email(
        Kind.NEW_INVOICE, document="invoice", ref="INV-usd", tenant="acme"
    )
    text, html = _parts(transport.sent[-1].data)
    assert "Pay by bank transfer" in text and "Amount: $120.00" in text
    assert format_reference(_reference(ledger, "INV-usd")) in text
    assert "data:image" not in html


@pytest.mark.skipif(bool(WEASYPRINT_SKIP), reason=WEASYPRINT_SKIP or "")
@pytest.mark.parametrize("has_bank", [True])
async def test_the_invoice_pdf_carries_iban_reference_and_fetches_nothing(
    ledger: Services, caplog: pytest.LogCaptureFixture
) -> None:
    from pypdf import PdfReader

    from mailer.content.pdf import render_document
    from mailer.content.pdfstore import build_pdf_context

    message = ledger.sending.enqueue_invoice_email(
        "INV-es", kind=Kind.NEW_INVOICE, tenant="acme", manual=True
    )
    assert message is not None
    with Session(ledger.engine) as session:
        context = session.exec(select(Message).where(col(Message.id) == message.id)).one().context
    rendered = render_document("invoice", build_pdf_context("invoice", context)[0])
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(rendered.data)).pages)
    # INV-es is a Spanish customer's: the PDF speaks the email's Spanish.
    assert "Pagar por transferencia bancaria" in text and IBAN_SHOWN in text
    assert format_reference(_reference(ledger, "INV-es")) in text
    assert "refused to fetch" not in caplog.text


@pytest.mark.parametrize("has_bank", [True])
async def test_the_hosted_page_shows_the_block(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    text, _ = _parts(transport.sent[-1].data)
    view = re.search(r"/l/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", text)
    assert view is not None
    async with httpx.AsyncClient(base_url=web_server) as client:
        response = await client.get(f"/l/{view.group(1)}")
    assert response.status_code == 200
    page = response.text
    reference = format_reference(_reference(services, "INV-1042"))
    assert "Pay by bank transfer" in page and IBAN_SHOWN in page and reference in page
    qr = re.search(r'<img src="(data:image/png;base64,[^"]+)"', page)
    assert qr is not None and decode_png(qr.group(1)).endswith(reference.replace(" ", ""))
    assert "data:" in response.headers["content-security-policy"]


async def test_the_statement_asks_for_its_balance_under_the_customers_reference(
    ledger: Services, transport: MemoryTransport, has_bank: bool
) -> None:
    await ledger.sending.send_statement("C-ro", tenant="acme")
    text, html = _parts(transport.sent[-1].data)
    with Session(ledger.engine) as session:
        customer = session.exec(select(Customer).where(Customer.external_id == "C-ro")).one()
    reference = format_reference(customer_reference(ledger.tenants.id("acme"), customer.id or 0))
    if not has_bank:
        assert "IBAN" not in text and reference not in text and "data:image" not in html
        return
    assert HEADINGS["ro"] in text and f"IBAN: {IBAN_SHOWN}" in text and reference in text
    assert "120,00" in text.split(HEADINGS["ro"])[1]  # the balance, in Romanian
    assert 'src="data:image/png;base64,' in html
