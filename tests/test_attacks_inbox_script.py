"""The attack catalogue, inbox script family: <script>/onerror= in bounce diagnostics, subjects and
reply bodies, in Chromium.

Part of the catalogue split by attack family (``tests/test_attacks_*.py``); every attack goes
through the real paths, on SQLite and PostgreSQL where a database is involved.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dunmail.app import Services
from mailer.outbound.memory import MemoryTransport
from tests.test_bounce_ingest import _sent, dsn
from tests.test_web_ui import PASSWORD, add_user, fast_argon2, reply

__all__ = ["fast_argon2"]  # a fixture used here, imported from test_web_ui


@pytest.fixture
def relay_env(
    two_tenant_env: tuple[Services, MemoryTransport],
) -> tuple[Services, MemoryTransport]:
    """conftest's ``relay_env`` plus a second tenant, "beta" (what ``web_server`` serves)."""
    return two_tenant_env


# -- 4. script in the inbox, in Chromium ---------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")


def _chromium_reason() -> str | None:
    if not CHROMIUM.exists():
        return f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return (
            "Playwright for Python is not installed (pip install playwright; no browser download)"
        )
    return None


@pytest.mark.skipif(_chromium_reason() is not None, reason=_chromium_reason() or "")
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_script_in_a_diagnostic_subject_or_reply_never_runs_in_the_inbox(
    relay_env: tuple[Services, MemoryTransport], web_server: str, fast_argon2: None
) -> None:
    from playwright.async_api import async_playwright

    services, transport = relay_env
    sent = await _sent(services, transport)
    diagnostic = "smtp; 550 5.1.1 <script>window.pwned='diag'</script> unknown"
    subject = "Re: invoice <img src=x onerror=\"window.pwned='subject'\">"
    body = "<script>window.pwned='body'</script><svg onload=\"window.pwned='svg'\">\r\n"
    mails = [("b.eml", dsn(sent, diagnostic=diagnostic)), ("r.eml", reply(sent, subject, body))]
    assert services.inbound.ingest(mails).matched == 2
    add_user(services, "ana@acme.example")
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            page = await browser.new_page(base_url=web_server)
            page.set_default_timeout(5000)
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: dialogs.append(dialog.message))
            await page.goto("/login")
            await page.fill("input[name=email]", "ana@acme.example")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button:has-text('Sign in')")
            await page.wait_for_url("**/inbox")
            listed = await page.inner_text("body")
            await page.click("#threads a:has-text('INV-1042')")
            timeline = await page.inner_text("#timeline")
            pwned = await page.evaluate("window.pwned")
            injected = await page.locator("#timeline script, #timeline img, #timeline svg").count()
            await page.goto("/inbox")
            pwned_list = await page.evaluate("window.pwned")
        finally:
            await browser.close()
    assert "<script>window.pwned='diag'</script>" in timeline  # shown literally, as typed
    assert "<img src=x onerror=\"window.pwned='subject'\">" in timeline
    assert "<script>window.pwned='body'</script>" in timeline
    assert "INV-1042" in listed
    assert (pwned, pwned_list, injected, dialogs) == (None, None, 0, [])
