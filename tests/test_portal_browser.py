"""The account page in a real headless Chromium (Debian's /usr/bin/chromium via Playwright):
a customer opens the View link of their email, goes to their account, ticks two invoices by
their labels, sees the server's total and is handed off to the payment provider, a tiny local
page here that verifies the signature as a provider would. Screenshots at desktop and phone
widths land in the test's tmp dir. SQLite only: tests/test_portal.py covers both databases."""

from __future__ import annotations

import html
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import pytest

from dunmail.app import Services
from dunmail.services.handoff import verify
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


class _Provider(BaseHTTPRequestHandler):
    """The payment provider's page: shows whether the posted selection's signature holds."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        form = {k: v[0] for k, v in parse_qs(body).items()}
        ok = verify(FORM_SECRET, form.get("payload", ""), form.get("signature", ""))
        page = f"<h1>Provider</h1><p id=verified>{'verified' if ok else 'FORGED'}</p>"
        page += f"<pre id=payload>{html.escape(form.get('payload', ''))}</pre>"
        data = page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def provider() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Provider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/checkout"
    server.shutdown()
    server.server_close()


@pytest.fixture
def services_config(
    tmp_path: Path, db_url: str, provider: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.setenv("ACME_HOOK", "hook-secret")
    monkeypatch.setenv("ACME_PAY", FORM_SECRET)
    return tenants(tmp_path, db_url, form_checkout(provider))


@pytest.fixture
def relay_env(services: Services, transport: MemoryTransport) -> tuple[Services, MemoryTransport]:
    assert services.ledger.import_document(ledger(), tenant="acme").errors == []
    return services, transport


async def test_open_the_email_link_go_to_the_account_tick_two_and_be_handed_off(
    relay_env: tuple[Services, MemoryTransport],
    web_server: str,
    browser: Browser,
    tmp_path: Path,
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    shots = Path(os.environ.get("PORTAL_SHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    page = await browser.new_page(base_url=web_server, viewport={"width": 1280, "height": 900})
    page.set_default_timeout(5000)
    await page.goto(f"/l/{token}")
    await page.get_by_role("link", name="Your account").click()
    await page.wait_for_url(f"**/l/{token}/account")
    await page.screenshot(path=str(shots / "account-desktop.png"), full_page=True)
    await page.get_by_label("Pay invoice INV-1050").check()
    # The second by keyboard: focus its box and press space, as a keyboard user would.
    await page.get_by_label("Pay invoice INV-1042").focus()
    await page.keyboard.press("Space")
    assert await page.get_by_label("Pay invoice INV-1042").is_checked()
    eur = page.locator('form[aria-label="Invoices in EUR"]')
    await eur.get_by_role("button", name="Pay selected invoices").click()
    await page.wait_for_selector("#total")
    assert await page.text_content("#total") == "€270.00"
    await page.screenshot(path=str(shots / "handoff-desktop.png"), full_page=True)
    await page.get_by_role("button", name="Continue to payment").click()
    await page.wait_for_selector("#verified")
    assert await page.text_content("#verified") == "verified"
    assert '"total_minor":27000' in (await page.text_content("#payload") or "")

    phone = await browser.new_page(
        base_url=web_server, viewport={"width": 390, "height": 844}, is_mobile=True
    )
    await phone.goto(f"/l/{token}/account")
    width = await phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone ({width}px)"
    await phone.screenshot(path=str(shots / "account-phone.png"), full_page=True)
