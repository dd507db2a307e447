"""The clerk's pages in a real headless Chromium (/usr/bin/chromium through Playwright, as in
tests/test_browser.py): sign in, find a customer, open its page, read plain words where the
engine has codes, resend an email from its thread. Screenshots go to the test's temporary
folder (``--basetemp`` keeps them) for a person to look at.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dunmail.app import Services
from mailer.outbound.memory import MemoryTransport
from tests.chromium import browser, needs_chromium
from tests.test_web_ui import PASSWORD, add_user, bounced, fast_argon2

if TYPE_CHECKING:
    from playwright.async_api import Browser

__all__ = ["browser", "fast_argon2"]  # fixtures, imported

pytestmark = [
    needs_chromium,
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]


async def test_find_a_customer_and_read_its_page_in_plain_words(
    relay_env: tuple[Services, MemoryTransport],
    web_server: str,
    browser: Browser,
    fast_argon2: None,
    tmp_path: Path,
) -> None:
    services, transport = relay_env
    await bounced(services, transport, "smtp; 550 5.1.1 <ap@globex.example>: user unknown")
    add_user(services, "ana@acme.example")
    dialogs: list[str] = []
    page = await browser.new_page(base_url=web_server, viewport={"width": 1280, "height": 900})
    page.set_default_timeout(5000)
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))

    await page.goto("/inbox")
    await page.fill("input[name=email]", "ana@acme.example")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button:has-text('Sign in')")
    await page.wait_for_url("**/inbox")
    threads = await page.inner_text("#threads")
    assert "bounced: address does not exist (5.1.1)" in threads and "userunknown" not in threads

    await page.click("nav >> text=Customers")
    await page.fill("#customer-search input[name=q]", "billing@globex")
    await page.click("#customer-search button")
    await page.click("#customers a:has-text('Globex')")
    await page.wait_for_selector("#customer-name")
    await page.screenshot(path=str(tmp_path / "customer.png"), full_page=True)

    contacts = await page.inner_text("#contacts")
    assert "Blocked" in contacts and "address does not exist (5.1.1)" in contacts
    assert "what came back about New invoice INV-1042" in contacts
    emails = await page.inner_text("#emails")
    assert "New invoice" in emails and "new_invoice" not in emails
    assert "accepted (250), then bounced: address does not exist (5.1.1)" in emails
    assert "accepted by the receiving server (250)" in emails
    assert "bounced 250" not in emails

    await page.click("#customer-threads a")
    await page.wait_for_selector("#timeline")
    await page.click("form.resend-email button")
    await page.wait_for_selector("text=New invoice resent to billing@globex.example")
    await page.screenshot(path=str(tmp_path / "thread.png"), full_page=True)
    assert transport.sent[-1].recipients == ("billing@globex.example",)

    await page.click("nav >> text=Outbox")
    outbox = await page.inner_text("#outbox")
    assert "accepted (250), then bounced: address does not exist (5.1.1)" in outbox
    await page.screenshot(path=str(tmp_path / "outbox.png"), full_page=True)
    assert all((tmp_path / f"{name}.png").stat().st_size > 10_000 for name in ("customer",))
    assert dialogs == []
