"""The AR inbox in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright's
async API on the test's event loop, next to conftest's uvicorn ``web_server``).

A clerk signs in, opens the thread whose every contact bounced, corrects the address, resends
and sees the new attempt; and mail carrying script shows as text without running. SQLite only:
the database paths are covered on both databases by tests/test_web_ui.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from dunmail.app import Services
from mailer.outbound.memory import MemoryTransport
from tests.chromium import browser, needs_chromium
from tests.test_bounce_ingest import _sent, dsn
from tests.test_bounce_recovery import _only_ap
from tests.test_web_ui import PASSWORD, add_user, fast_argon2, reply

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

__all__ = ["browser", "fast_argon2"]  # fixtures this module uses, imported


pytestmark = [
    needs_chromium,
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]


async def _signed_in(browser: Browser, base: str, dialogs: list[str]) -> Page:
    page = await browser.new_page(base_url=base)
    page.set_default_timeout(5000)
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await page.goto("/inbox")
    assert "/login" in page.url  # pages need a sign-in
    await page.fill("input[name=email]", "ana@acme.example")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button:has-text('Sign in')")
    await page.wait_for_url("**/inbox")
    return page


async def test_fix_the_contact_resend_and_see_the_new_attempt(
    relay_env: tuple[Services, MemoryTransport],
    web_server: str,
    browser: Browser,
    fast_argon2: None,
) -> None:
    services, transport = relay_env
    _only_ap(services)  # one contact: its bounce leaves nobody, the thread gets fix_contact
    sent = await _sent(services, transport)
    assert services.inbound.ingest([("file:b.eml", dsn(sent))]).paused == 1
    add_user(services, "ana@acme.example")
    dialogs: list[str] = []
    page = await _signed_in(browser, web_server, dialogs)

    await page.click("text=Needs contact fix")
    await page.click("#threads a:has-text('INV-1042')")
    assert "needs contact fix" in await page.inner_text("#task")
    assert "bounced: address does not exist (5.1.1)" in await page.inner_text("#timeline")

    await page.fill("form.fix-contact input[name=new]", "payables@globex.example")
    await page.click("form.fix-contact button")
    await page.wait_for_selector("text=is now payables@globex.example")
    assert await page.inner_text("#contacts .contact-email") == "payables@globex.example"
    assert "the ERP still lists ap@globex.example" in await page.inner_text("#contacts .erp-email")

    await page.click("#resend button")
    await page.wait_for_selector("text=resent to payables@globex.example")
    timeline = await page.inner_text("#timeline")
    assert "New invoice sent to payables@globex.example" in timeline
    assert await page.locator("#task").count() == 0  # the task is done, chasing resumes
    assert transport.sent[-1].recipients == ("payables@globex.example",)
    assert dialogs == []


async def test_script_in_a_bounce_or_a_reply_shows_as_text_and_never_runs(
    relay_env: tuple[Services, MemoryTransport],
    web_server: str,
    browser: Browser,
    fast_argon2: None,
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    hostile = dsn(sent, diagnostic="smtp; 550 5.1.1 <script>window.pwned=1</script> unknown")
    subject = "Re: invoice <img src=x onerror=alert(1)>"
    answer = reply(sent, subject, "<script>alert(2)</script>\r\n")
    assert services.inbound.ingest([("b.eml", hostile), ("r.eml", answer)]).matched == 2
    add_user(services, "ana@acme.example")
    dialogs: list[str] = []
    page = await _signed_in(browser, web_server, dialogs)

    await page.click("#threads a:has-text('INV-1042')")
    text = await page.inner_text("#timeline")
    assert "<script>window.pwned=1</script>" in text  # shown literally, as typed
    assert "<img src=x onerror=alert(1)>" in text and "<script>alert(2)</script>" in text
    assert await page.evaluate("window.pwned") is None
    assert await page.locator("#timeline script, #timeline img").count() == 0
    assert dialogs == []
