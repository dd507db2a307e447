"""A clerk accepts what a customer's reply proposes in a real headless Chromium (as in
tests/test_clerk_browser.py): the proposal is on the thread's page with the customer's own
words, one click places the hold, and the page then says who accepted it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dunmail.app import Services
from mailer.clock import FixedClock
from mailer.outbound.memory import MemoryTransport
from tests.chromium import browser, needs_chromium
from tests.test_bounce_ingest import _sent
from tests.test_reply_proposals import _reply
from tests.test_web_ui import PASSWORD, add_user, fast_argon2

if TYPE_CHECKING:
    from playwright.async_api import Browser

__all__ = ["browser", "fast_argon2"]  # fixtures, imported

pytestmark = [
    needs_chromium,
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]


async def test_the_clerk_accepts_a_promise_to_pay_in_one_click(
    relay_env: tuple[Services, MemoryTransport],
    web_server: str,
    browser: Browser,
    fast_argon2: None,
    clock: FixedClock,
    tmp_path: Path,
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    raw = _reply(sent, "Bună ziua,\r\n\r\nVom plăti factura pe 20 martie.", clock)
    assert services.inbound.ingest([("file:reply.eml", raw)]).matched == 1
    (row,) = services.inbox.threads(tenant="acme", status=None)
    add_user(services, "ana@acme.example")
    page = await browser.new_page(base_url=web_server, viewport={"width": 1280, "height": 900})
    page.set_default_timeout(5000)

    await page.goto(f"/inbox/threads/{row['id']}")
    await page.fill("input[name=email]", "ana@acme.example")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button:has-text('Sign in')")
    await page.wait_for_selector("#proposals")
    proposals = await page.inner_text("#proposals")
    assert "promise to pay" in proposals and "Vom plăti factura pe 20 martie." in proposals
    assert "No active hold" in await page.content()

    await page.click("#proposals button:has-text('Accept')")
    await page.wait_for_selector("#holds")
    await page.screenshot(path=str(tmp_path / "accepted.png"), full_page=True)
    holds = await page.inner_text("#holds")
    assert "promised to pay" in holds and "2026-03-23" in holds and "ana@acme.example" in holds
    assert "accepted by ana@acme.example" in await page.inner_text("#proposals")
    assert await page.locator(".accept-proposal").count() == 0
