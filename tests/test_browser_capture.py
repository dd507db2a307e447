"""The dev capture viewer in a real headless Chromium (as tests/test_browser.py drives it).

A message crosses a real SMTP conversation into the capture server's Maildir; the browser finds
it in the list, opens it, reads its text, sees its HTML in a sandboxed frame where the message's
script does not run, and downloads its PDF attachment.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dunmail.capture import start_capture
from mailer.config import SMTPEndpoint
from mailer.outbound.smtp import SMTPTransport
from tests.chromium import CHROMIUM, browser, needs_chromium
from tests.test_capture_viewer import invoice_mail

if TYPE_CHECKING:
    from playwright.async_api import Browser

__all__ = ["browser"]  # the Chromium fixture (tests/chromium.py)

pytestmark = [
    needs_chromium,
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]
SCRIPTED = (
    "<h1 id='greeting'>Invoice INV-1042</h1><p>Amount due: 120.00 EUR</p>"
    "<script>document.getElementById('greeting').textContent='script ran';"
    "parent.document.title='pwned'; alert('pwned')</script>"
)


@pytest.fixture
def services_config(tmp_path: Path) -> dict[str, Any]:
    return {"capture": {"enabled": True, "maildir": str(tmp_path / "maildir")}}


async def test_a_captured_invoice_is_read_framed_and_its_pdf_downloaded(
    web_server: str, browser: Browser, tmp_path: Path
) -> None:
    assert CHROMIUM.exists()
    server = await start_capture("127.0.0.1", 0, tmp_path / "maildir")
    smtp = SMTPTransport(SMTPEndpoint(host="127.0.0.1", port=server.sockets[0].getsockname()[1]))
    try:
        mail = invoice_mail(to="Ștefan <ap@globex.example>", html=SCRIPTED)
        result = await smtp.send(mail, sender="b@relay.example", recipients=["ap@globex.example"])
    finally:
        await smtp.close()
        server.close()
        await server.wait_closed()
    assert result.code == 250

    page = await browser.new_page(base_url=web_server, accept_downloads=True)
    page.set_default_timeout(5000)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await page.goto("/capture")
    await page.fill("#search input[name=q]", "ȘTEFAN")  # the recipient, any case
    await page.click("#search button")
    await page.click("#captured a:has-text('Invoice INV-1042')")
    await page.wait_for_selector("#subject")

    assert "Amount due: 120.00 EUR" in await page.inner_text("#text")
    assert await page.get_attribute("iframe#html", "sandbox") == ""
    frame = page.frame_locator("iframe#html")
    assert await frame.locator("#greeting").inner_text() == "Invoice INV-1042"  # not "script ran"
    assert await page.title() == "Invoice INV-1042" and dialogs == []

    async with page.expect_download() as info:
        await page.click("#attachments a:has-text('INV-1042.pdf')")
    download = await info.value
    assert download.suggested_filename == "INV-1042.pdf"
    saved = await download.path()
    assert Path(saved).read_bytes().startswith(b"%PDF")

    shot = tmp_path / "capture-viewer.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
