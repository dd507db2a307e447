"""The account page's bank-transfer box in a real headless Chromium: the EPC QR code (an inline
PNG) is drawn under the page's own CSP, ticking an invoice and asking for its bank transfer
shows that invoice's amount and reference, and a phone does not scroll sideways. Screenshots at
desktop and phone width go to ``$PORTAL_SHOTS`` (the README's are made with
``PORTAL_SHOTS=docs/screenshots``), else the test's tmp dir. SQLite only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlmodel import Session, select

from dunmail.app import Services
from mailer.ledger.models import Invoice
from mailer.ledger.references import format_reference, invoice_reference
from mailer.outbound.memory import MemoryTransport
from tests.chromium import browser, needs_chromium
from tests.portal_fixtures import FORM_SECRET, form_checkout, ledger, tenants, view_token

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

__all__ = ["browser"]  # the Chromium fixture (tests/chromium.py)

pytestmark = [
    needs_chromium,
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]
BANK = {"iban": "DE89370400440532013000", "bic": "COBADEFFXXX", "account_name": "Acme GmbH"}


@pytest.fixture
def services_config(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("ACME_HOOK", "hook-secret")
    monkeypatch.setenv("ACME_PAY", FORM_SECRET)
    config = tenants(tmp_path, db_url, form_checkout())
    config["tenants"]["acme"]["bank"] = BANK
    return config


@pytest.fixture
def services_options() -> dict[str, Any]:
    """PDFs on (rendered in-process when asked for), so the statements show their links."""
    from mailer.content.pdf_pool import PDFRenderer

    return {"pdfs": True, "pdf_renderer": PDFRenderer(workers=0)}


@pytest.fixture
def relay_env(services: Services, transport: MemoryTransport) -> tuple[Services, MemoryTransport]:
    assert services.ledger.import_document(ledger(), tenant="acme").errors == []
    return services, transport


async def _qr_drawn(page: Page) -> list[int]:
    """The natural width of each QR image: 0 when the browser refused or could not decode it."""
    widths = await page.eval_on_selector_all(
        "#bank-transfer img.qr", "images => images.map(i => i.complete ? i.naturalWidth : 0)"
    )
    return [int(w) for w in widths]


async def test_the_box_is_drawn_follows_a_ticked_invoice_and_fits_a_phone(
    relay_env: tuple[Services, MemoryTransport],
    web_server: str,
    browser: Browser,
    tmp_path: Path,
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    await services.sending.send_statement("C-1", tenant="acme")
    with Session(services.engine) as session:
        invoice = session.exec(select(Invoice).where(Invoice.number == "INV-1051")).one()
        reference = format_reference(invoice_reference(invoice.tenant_id, invoice.id or 0))
    shots = Path(os.environ.get("PORTAL_SHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    refused: list[str] = []
    page = await browser.new_page(base_url=web_server, viewport={"width": 1280, "height": 900})
    page.on(
        "console",
        lambda m: (
            refused.append(m.text)
            if m.type == "error" and "Content Security Policy" in m.text
            else None
        ),
    )
    page.on(
        "response",
        lambda r: (
            refused.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    page.set_default_timeout(5000)
    await page.goto(f"/l/{token}/account")
    box = page.locator("#bank-transfer")
    assert await box.get_by_role("heading", name="Pay by bank transfer").is_visible()
    drawn = await _qr_drawn(page)
    assert len(drawn) == 1 and drawn[0] > 100, drawn  # EUR only: the USD transfer has none
    assert "€1,384.56" in (await box.text_content() or "")
    statements = page.get_by_role("region", name="Statements")
    assert await statements.get_by_role("link", name="Download statement (PDF) in EUR").count()
    await page.screenshot(path=str(shots / "portal-account.png"), full_page=True)

    await page.get_by_label("Pay invoice INV-1051").check()
    eur = page.locator('form[aria-label="Invoices in EUR"]')
    await eur.get_by_role("button", name="Bank transfer for the selected invoices").click()
    await page.wait_for_selector("#bank-transfer h3:has-text('Invoice INV-1051')")
    text = await box.text_content() or ""
    assert "€1,234.56" in text and reference in text
    assert await page.get_by_label("Pay invoice INV-1051").is_checked()
    assert [w > 100 for w in await _qr_drawn(page)] == [True]
    assert not refused, refused  # nothing blocked by the CSP, nothing failed to load

    phone = await browser.new_page(
        base_url=web_server, viewport={"width": 390, "height": 844}, is_mobile=True
    )
    await phone.goto(f"/l/{token}/account")
    width = await phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
    assert [w > 100 for w in await _qr_drawn(phone)] == [True]
    await phone.screenshot(path=str(shots / "portal-account-phone.png"), full_page=True)
