"""The account page's bank-transfer box, its statements and its PDF links, through real HTTP
(uvicorn) on SQLite and PostgreSQL: the tenant's IBAN/BIC, the customer's and each invoice's
RF reference, an EPC QR whose payload (decoded from the PNG with zxing) is the one the email
carries for the same invoices, the amount following the ticked invoices, no box without
``[bank]``, revocation of the View link stopping every PDF link the page showed, and no way
from one customer's (or tenant's) link to another's documents."""

from __future__ import annotations

import email
import re
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select

from dunmail.app import Services
from dunmail.web.link_service import revoke_links
from mailer.content.kinds import Kind
from mailer.content.models import StoredPDF
from mailer.ledger.models import Customer, Invoice
from mailer.ledger.references import customer_reference, format_reference, invoice_reference
from mailer.outbound.links import issue_link
from mailer.outbound.memory import MemoryTransport
from tests.portal_fixtures import (
    FORM_SECRET,
    SECRET_NAME,
    csrf_of,
    form_checkout,
    ledger,
    row_cells,
    tenants,
    view_token,
)
from tests.test_bank_transfer import decode_png

BANK = {"iban": "DE89 3704 0044 0532 0130 00", "bic": "COBADEFFXXX", "account_name": "Acme GmbH"}
QR = re.compile(r'<img class="qr" src="(data:image/png;base64,[^"]+)"')


@pytest.fixture(params=[True, False], ids=["bank", "no-bank"])
def has_bank(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def services_config(
    tmp_path: Path, db_url: str, has_bank: bool, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.setenv("ACME_HOOK", "hook-secret")
    monkeypatch.setenv("ACME_PAY", FORM_SECRET)
    config = tenants(tmp_path, db_url, form_checkout())
    if has_bank:
        config["tenants"]["acme"]["bank"] = BANK
    return config


@pytest.fixture
def relay_env(services: Services, transport: MemoryTransport) -> tuple[Services, MemoryTransport]:
    assert services.ledger.import_document(ledger(), tenant="acme").errors == []
    return services, transport


def _client(base: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, follow_redirects=False)


async def _page(client: httpx.AsyncClient, token: str) -> str:
    response = await client.get(f"/l/{token}/account")
    assert response.status_code == 200, response.text
    return response.text


def _html_of(transport: MemoryTransport) -> str:
    parsed = email.message_from_bytes(transport.sent[-1].data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    part = parsed.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def _email_payload(transport: MemoryTransport) -> str:
    found = re.search(r'<img src="(data:image/png;base64,[^"]+)"', _html_of(transport))
    assert found is not None, "the email carries no EPC QR code"
    return decode_png(found.group(1))


def _ids(services: Services) -> tuple[int, int, dict[str, int]]:
    with Session(services.engine) as session:
        c1 = session.exec(select(Customer).where(Customer.external_id == "C-1")).one()
        numbers = {i.number: i.id or 0 for i in session.exec(select(Invoice)).all()}
    return services.tenants.id("acme"), c1.id or 0, numbers


def _box(page: str) -> str:
    found = re.search(r'<section id="bank-transfer"[^>]*>(.*?)</section>', page, re.S)
    assert found is not None
    return found.group(1)


@pytest.mark.parametrize("has_bank", [True], indirect=True)
async def test_the_box_shows_account_references_and_the_overdue_summarys_qr(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    tenant_id, customer_id, ids = _ids(services)
    async with _client(web_server) as client:
        page = await _page(client, token)
    box = _box(page)
    assert "Pay by bank transfer" in box and "Acme GmbH" in box
    assert "DE89 3704 0044 0532 0130 00" in box and "COBADEFFXXX" in box
    mine = format_reference(customer_reference(tenant_id, customer_id))
    assert mine in box
    # Each invoice's own reference beside it in the list; none of the other customer's.
    for number in ("INV-1050", "INV-1051", "INV-1052", "INV-1042"):
        ref = format_reference(invoice_reference(tenant_id, ids[number]))
        assert row_cells(page, number)[2] == ref
    assert format_reference(invoice_reference(tenant_id, ids["INV-2001"])) not in page
    assert SECRET_NAME not in page
    # Nothing ticked: everything overdue in euros (150.00 + 1,234.56), under the customer's
    # reference, and in dollars the text without a QR code (EPC codes are for euros only).
    assert "Everything overdue in EUR" in box and "€1,384.56" in box
    assert "Everything open in USD" in box and "$99.00" in box
    (qr,) = QR.findall(page)
    await services.sending.send_email(
        Kind.OVERDUE_SUMMARY, document="customer", ref="C-1", tenant="acme", currency="EUR"
    )
    summary = _email_payload(transport)
    assert decode_png(qr) == summary
    assert summary.split("\n")[5:] == [
        "Acme GmbH",
        "DE89370400440532013000",
        "EUR1384.56",
        "",
        mine.replace(" ", ""),
    ]


@pytest.mark.parametrize("has_bank", [True], indirect=True)
async def test_the_amount_follows_the_ticked_invoices(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    tenant_id, customer_id, ids = _ids(services)
    url = f"/l/{token}/account/transfer"
    async with _client(web_server) as client:
        page = await _page(client, token)
        assert f'formaction="{url}#bank-transfer"' in page
        csrf = csrf_of(page)
        pick = {"csrf": csrf, "currency": "EUR", "action": "transfer"}
        one = await client.post(url, data={**pick, "invoice": str(ids["INV-1051"])})
        two = await client.post(
            url, data={**pick, "invoice": [str(ids["INV-1042"]), str(ids["INV-1050"])]}
        )
        oldest = await client.post(
            url, data={**pick, "invoice": [str(ids["INV-1051"]), str(ids["INV-1050"])]}
        )
    # One invoice: its own reference and balance, the QR its own email carries.
    assert one.status_code == 200, one.text
    box = _box(one.text)
    assert "Invoice INV-1051" in box and "€1,234.56" in box
    assert format_reference(invoice_reference(tenant_id, ids["INV-1051"])) in box
    assert re.search(rf'value="{ids["INV-1051"]}" id="pick-\d+" checked', one.text)
    (qr,) = QR.findall(one.text)
    await services.sending.send_email(
        Kind.INVOICE_REMINDER, document="invoice", ref="INV-1051", tenant="acme"
    )
    assert decode_png(qr) == _email_payload(transport)
    # Several: the total under the customer's reference; not the oldest ones, so the page says
    # how a customer reference is applied.
    box = _box(two.text)
    assert "The invoices you chose: INV-1050, INV-1042" in box and "€270.00" in box
    mine = format_reference(customer_reference(tenant_id, customer_id))
    (qr,) = QR.findall(two.text)
    assert decode_png(qr).split("\n")[7:] == ["EUR270", "", mine.replace(" ", "")]
    assert "oldest open invoices first" in box
    # The two oldest: the same total as the overdue summary, and no such note.
    box = _box(oldest.text)
    assert "€1,384.56" in box and "oldest open invoices first" not in box


@pytest.mark.parametrize("has_bank", [True], indirect=True)
async def test_a_transfer_selection_is_checked_like_a_payment(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    tenant_id, _, ids = _ids(services)
    url = f"/l/{token}/account/transfer"
    async with _client(web_server) as client:
        page = await _page(client, token)
        good = {"csrf": csrf_of(page), "currency": "EUR", "action": "transfer"}
        theirs = await client.post(url, data={**good, "invoice": str(ids["INV-2001"])})
        mixed = await client.post(
            url, data={**good, "invoice": [str(ids["INV-1050"]), str(ids["INV-1052"])]}
        )
        nothing = await client.post(url, data=good)
        forged = await client.post(
            url, data={**good, "csrf": "0" * 64, "invoice": str(ids["INV-1050"])}
        )
        junk = await client.post(url, data={**good, "invoice": "1 OR 1"})
    assert theirs.status_code == 400 and "is not open on this account" in theirs.text
    other = format_reference(invoice_reference(tenant_id, ids["INV-2001"]))
    assert other not in theirs.text and "€500.00" not in theirs.text
    assert "Everything overdue in EUR" in _box(theirs.text)  # the default box instead
    assert mixed.status_code == 400 and "different currencies" in mixed.text
    assert nothing.status_code == 400 and "at least one invoice" in nothing.text
    assert forged.status_code == 403 and "Invoice INV-1050</h3>" not in forged.text
    assert junk.status_code == 400


@pytest.mark.parametrize("has_bank", [False], indirect=True)
async def test_no_bank_configured_no_box(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    async with _client(web_server) as client:
        page = await _page(client, token)
        refused = await client.post(
            f"/l/{token}/account/transfer",
            data={"csrf": csrf_of(page), "currency": "EUR", "invoice": "1"},
        )
    assert _box(page).strip() == ""
    assert "Pay by bank transfer" not in page and "RF" not in page and "data:image" not in page
    assert "/account/transfer" not in page and ">Reference<" not in page
    assert "Pay by bank transfer" not in refused.text


@pytest.mark.parametrize("has_bank", [True], indirect=True)
async def test_revoking_the_view_link_stops_the_pdf_links_it_showed(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    tenant_id, _, ids = _ids(services)
    _store_pdf(services, "INV-1050", b"%PDF-1.7 1050")
    _store_pdf(services, "INV-1051", b"%PDF-1.7 1051")
    async with _client(web_server) as client:
        page = await _page(client, token)
        links = {
            number: url
            for url, number in re.findall(r'href="(/l/[^"]+/pdf)">Download (INV-\d+)<', page)
        }
        assert set(links) == {"INV-1050", "INV-1051"}
        assert all(url.startswith(f"/l/{token}/account/") for url in links.values())
        first = await client.get(links["INV-1050"])
        assert first.status_code == 200 and first.content == b"%PDF-1.7 1050"
        assert first.headers["cache-control"] == "private, no-store"
        assert 'filename="INV-1050.pdf"' in first.headers["content-disposition"]
        # Every link to one invoice revoked: that invoice's PDF stops, the others go on.
        revoke_links(services, tenant="acme", invoice="INV-1051", by="test")
        assert (await client.get(links["INV-1051"])).status_code == 404
        assert (await client.get(links["INV-1050"])).status_code == 200
        # The View link revoked: the page and every PDF link it showed stop.
        revoke_links(services, tenant="acme", token=token, by="test")
        assert (await client.get(f"/l/{token}/account")).status_code == 404
        gone = await client.get(links["INV-1050"])
        assert gone.status_code == 404 and b"%PDF" not in gone.content
        statement = await client.get(f"/l/{token}/account/statement/EUR/pdf")
        assert statement.status_code == 404
    del tenant_id


def _store_pdf(services: Services, number: str, data: bytes) -> None:
    with Session(services.engine) as session:
        invoice = session.exec(select(Invoice).where(Invoice.number == number)).one()
        session.add(
            StoredPDF(
                tenant_id=invoice.tenant_id,
                document=f"invoice:{invoice.id}",
                version=invoice.version,
                render_key=number.ljust(64, "r"),
                sha256=number.ljust(64, "s"),
                pages=1,
                data=data,
                created_at=services.clock.now(),
            )
        )
        session.commit()


@pytest.mark.parametrize("has_bank", [True], indirect=True)
async def test_no_link_reaches_another_customers_or_tenants_documents(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    _, _, ids = _ids(services)
    _store_pdf(services, "INV-1050", b"%PDF-1.7 C-1's")
    _store_pdf(services, "INV-2001", b"%PDF-1.7 C-2's")
    sent = await services.sending.send_statement("C-1", tenant="acme")
    statement_ids = [m.id for m in sent]
    assert len(statement_ids) == 2  # EUR and USD
    now = services.clock.now()
    with Session(services.engine) as session:
        theirs = session.exec(select(Invoice).where(Invoice.number == "INV-2001")).one()
        mine = session.exec(select(Invoice).where(Invoice.number == "INV-1042")).one()
    key = services.links.signing
    # C-2's own View link (a preview's: no email), beta's link naming acme's invoice, and a
    # Pay link of C-1's invoice.
    c2 = issue_link(
        "view",
        services.tenants.id("acme"),
        f"invoice:{theirs.id}",
        theirs.version,
        key=key,
        expires_at=now + timedelta(days=1),
    )
    beta = issue_link(
        "view",
        services.tenants.id("beta"),
        f"invoice:{mine.id}",
        mine.version,
        key=key,
        expires_at=now + timedelta(days=1),
    )
    pay = issue_link(
        "pay",
        services.tenants.id("acme"),
        f"invoice:{mine.id}",
        mine.version,
        key=key,
        expires_at=now + timedelta(days=1),
    )
    async with _client(web_server) as client:
        page = await _page(client, token)
        assert "Statements sent to you" in page
        c2_page = await _page(client, c2)
        assert "INV-1050" not in c2_page and "Statements sent to you" not in c2_page
        own = await client.get(f"/l/{c2}/account/invoices/{ids['INV-2001']}/pdf")
        assert own.status_code == 200 and own.content == b"%PDF-1.7 C-2's"
        for bad in (c2, beta, pay):
            for path in (
                f"/account/invoices/{ids['INV-1050']}/pdf",
                *(f"/account/statements/{i}/pdf" for i in statement_ids),
                "/account/statement/EUR/pdf",
                "/account/statement/USD/pdf",
            ):
                if bad == c2 and path == "/account/statement/EUR/pdf":
                    continue  # C-2's own statement: it owes in euros too (below)
                response = await client.get(f"/l/{bad}{path}")
                assert response.status_code in (404,), (bad == c2, path)
                assert b"C-1" not in response.content and b"%PDF" not in response.content
        # The other way round: C-1's link never reaches C-2's invoice.
        crossed = await client.get(f"/l/{token}/account/invoices/{ids['INV-2001']}/pdf")
        assert crossed.status_code == 404 and b"%PDF" not in crossed.content
        unknown = await client.get(f"/l/{token}/account/statement/eur/pdf")
        assert unknown.status_code == 404


@pytest.mark.parametrize("has_bank", [True], indirect=True)
async def test_a_french_customer_reads_the_box_in_french_with_the_emails_amount(
    services: Services, transport: MemoryTransport, web_server: str
) -> None:
    # ``web_server`` imports the English ledger first; the customer then moves to French.
    doc = ledger("fr", "Europe/Paris")
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    token, _ = await view_token(services, transport)
    async with _client(web_server) as client:
        page = await _page(client, token)
    await services.sending.send_email(
        Kind.OVERDUE_SUMMARY, document="customer", ref="C-1", tenant="acme", currency="EUR"
    )
    parsed = email.message_from_bytes(transport.sent[-1].data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    text = parsed.get_body(("plain",))
    assert text is not None
    amount = re.search(r"^Montant : (.+)$", str(text.get_content()), re.M)
    assert amount is not None  # "1 384,56 €" with the locale's own spaces
    box = _box(page)
    assert "Payer par virement bancaire" in box and "Titulaire du compte" in box
    assert f'<strong class="amount">{amount.group(1).strip()}</strong>' in box
    assert "Tout ce qui est en retard en EUR" in box
    (qr,) = QR.findall(page)
    assert decode_png(qr) == _email_payload(transport)
