"""A query raised from the account page in a real headless Chromium (Debian's chromium via
Playwright): the customer picks the invoice, the reason and writes by the form's labels, attaches
a PDF, sends, and sees the query with reminders paused; a clerk answers from the AR inbox and the
answer appears on the page. The screenshot of the section goes to the test's tmp dir, or to
``$PORTAL_SHOTS`` (``PORTAL_SHOTS=docs/screenshots`` refreshes docs/screenshots/portal-query.png).
SQLite only: tests/test_portal_query.py covers both databases."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlmodel import Session, select

from dunmail.app import Services
from dunmail.services import query_desk
from mailer.outbound.memory import MemoryTransport
from mailer.query_models import InvoiceQuery
from tests.chromium import browser, needs_chromium
from tests.portal_fixtures import form_checkout, ledger, tenants, view_token

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
    monkeypatch.setenv("ACME_PAY", "pay-secret")
    return tenants(tmp_path, db_url, form_checkout())


@pytest.fixture
def relay_env(services: Services, transport: MemoryTransport) -> tuple[Services, MemoryTransport]:
    assert services.ledger.import_document(ledger(), tenant="acme").errors == []
    return services, transport


async def test_raise_a_query_from_the_page_and_see_the_clerks_answer(
    relay_env: tuple[Services, MemoryTransport],
    web_server: str,
    browser: Browser,
    tmp_path: Path,
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    shots = Path(os.environ.get("PORTAL_SHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    scan = tmp_path / "remittance-advice.pdf"
    scan.write_bytes(b"%PDF-1.4\n%%EOF\n")
    page = await browser.new_page(base_url=web_server, viewport={"width": 1280, "height": 900})
    page.set_default_timeout(5000)
    await page.goto(f"/l/{token}/account")
    form = page.locator("#query-form")
    await form.get_by_label("Invoice", exact=True).select_option(label="INV-1050")
    # The reason by keyboard: focus the first choice, arrow down to the next, as a keyboard
    # user moves through a radio group.
    await form.get_by_label("The amount is wrong").focus()
    await page.keyboard.press("ArrowDown")
    assert await form.get_by_label("I did not receive the goods or service").is_checked()
    await form.get_by_label("The amount is wrong").check()
    await form.get_by_label("Your message").fill(
        "We were charged for 20 licences; the order was for 10. Remittance advice attached."
    )
    await form.get_by_label("Attach a file (optional)").set_input_files(str(scan))
    await form.get_by_role("button", name="Send to the accounts team").click()
    await page.wait_for_url("**/account?query=sent*")
    status = page.get_by_role("status")
    assert "paused reminders" in (await status.text_content() or "")
    section = page.locator("#queries")
    assert "Waiting for our answer; reminders are paused" in (await section.text_content() or "")
    assert "Attached: remittance-advice.pdf" in (await section.text_content() or "")

    with Session(services.engine) as session:
        (query,) = session.exec(select(InvoiceQuery)).all()
    await query_desk.answer(
        services,
        query.id or 0,
        "You are right, thank you. A credit note for the 10 extra licences follows today.",
        tenant="acme",
        by="ana@acme.example",
    )
    await page.reload()
    answer = page.locator("#queries li.step-answer")
    await answer.wait_for()
    assert "credit note for the 10 extra licences" in (await answer.text_content() or "")
    assert "Acme" in (await answer.text_content() or "")  # "<tenant> (accounts team)"
    await section.screenshot(path=str(shots / "portal-query.png"))
