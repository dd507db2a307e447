"""Delivery preferences in a real headless Chromium (Debian's /usr/bin/chromium via Playwright):
from the account page, the customer switches PDFs to "link only" and the language to French
by keyboard, adds a billing contact, and the new address's confirmation link (read from the
email actually sent) confirms it. The screenshot lands in ``$PORTAL_SHOTS``
(``PORTAL_SHOTS=docs/screenshots`` refreshes docs/screenshots/portal-preferences.png), else the
test's tmp dir. SQLite only: tests/test_portal_preferences.py covers both databases."""

from __future__ import annotations

import email
import os
import re
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlmodel import Session, select

from dunmail.app import Services
from mailer.ledger.models import Contact, Customer
from mailer.outbound.memory import MemoryTransport
from tests.chromium import browser, needs_chromium
from tests.portal_fixtures import FORM_SECRET, form_checkout, ledger, tenants, view_token

if TYPE_CHECKING:
    from playwright.async_api import Browser

__all__ = ["browser"]  # the Chromium fixture (tests/chromium.py)

pytestmark = [
    needs_chromium,
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]


@pytest.fixture
def services_config(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("ACME_HOOK", "hook-secret")
    monkeypatch.setenv("ACME_PAY", FORM_SECRET)
    return tenants(tmp_path, db_url, form_checkout())


@pytest.fixture
def relay_env(services: Services, transport: MemoryTransport) -> tuple[Services, MemoryTransport]:
    assert services.ledger.import_document(ledger(), tenant="acme").errors == []
    return services, transport


def _confirm_path(transport: MemoryTransport, address: str) -> str:
    mail = next(m for m in reversed(transport.sent) if m.recipients == (address,))
    parsed = email.message_from_bytes(mail.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None
    found = re.search(r"(/l/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/confirm)", str(body.get_content()))
    assert found is not None
    return found.group(1)


async def test_change_delivery_and_add_a_contact_confirmed_from_its_email(
    relay_env: tuple[Services, MemoryTransport],
    web_server: str,
    browser: Browser,
    tmp_path: Path,
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    shots = Path(os.environ.get("PORTAL_SHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    page = await browser.new_page(base_url=web_server, viewport={"width": 1100, "height": 900})
    page.set_default_timeout(5000)
    await page.goto(f"/l/{token}/account")
    await page.get_by_role("link", name="Delivery preferences: contacts, PDF, language").click()
    await page.wait_for_url(f"**/l/{token}/account/preferences")
    # By keyboard: the radio by its label, the language from its labelled select.
    await page.get_by_label("Link only: download from the email's link").focus()
    await page.keyboard.press("Space")
    assert await page.get_by_label("Link only: download from the email's link").is_checked()
    await page.get_by_label("Language of our emails and this page").select_option("fr")
    await page.get_by_role("button", name="Save preferences").click()
    await page.wait_for_selector("#notice")
    assert await page.text_content("#notice") == "Vos préférences ont été enregistrées."
    assert await page.get_attribute("html", "lang") == "fr"
    # Now in French: add a billing contact.
    await page.get_by_label("Adresse e-mail").fill("payables@globex.example")
    await page.get_by_label("Nom (facultatif)").fill("Payables")
    await page.get_by_role("button", name="Envoyer le lien de confirmation").last.click()
    await page.wait_for_selector("#pending")
    assert "payables@globex.example" in (await page.text_content("#pending") or "")
    await page.screenshot(path=str(shots / "portal-preferences.png"), full_page=True)
    with Session(services.engine) as session:
        c1 = session.exec(select(Customer).where(Customer.external_id == "C-1")).one()
        assert c1.pdf_link_only and c1.chosen_locale == "fr"
        emails = session.exec(select(Contact.email).where(Contact.customer_id == c1.id)).all()
        assert "payables@globex.example" not in emails  # not before it is confirmed
    # The new address's owner follows the link from the email and presses the button.
    confirm = await browser.new_page(base_url=web_server)
    await confirm.goto(_confirm_path(transport, "payables@globex.example"))
    await confirm.get_by_role("button", name="Confirmer cette adresse").click()
    await confirm.wait_for_selector("h1")
    assert "L’adresse est confirmée" in (await confirm.text_content("h1") or "")
    await page.reload()
    assert "payables@globex.example" in (await page.text_content("#contacts") or "")
    phone = await browser.new_page(
        base_url=web_server, viewport={"width": 390, "height": 844}, is_mobile=True
    )
    await phone.goto(f"/l/{token}/account/preferences")
    width = await phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
