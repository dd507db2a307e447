"""A customer's "PDF as a link only" choice, end to end on SQLite and PostgreSQL: the same
tenant, whose templates attach the invoice PDF, sends that customer's next email with the
download link instead (in the email's language), and every other customer's with the PDF
attached. Real WeasyPrint (in process), real HTTP for the account page and the download."""

from __future__ import annotations

import email
import re
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import WEASYPRINT_SKIP

if WEASYPRINT_SKIP:
    pytest.skip(WEASYPRINT_SKIP, allow_module_level=True)

from dunmail.app import Services  # noqa: E402  (after the skip)
from mailer.content.pdf_pool import PDFRenderer
from mailer.outbound.memory import MemoryTransport
from tests.portal_fixtures import FORM_SECRET, csrf_of, form_checkout, ledger, tenants, view_token


@pytest.fixture
def services_config(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("ACME_HOOK", "hook-secret")
    monkeypatch.setenv("ACME_PAY", FORM_SECRET)
    config = tenants(tmp_path, db_url, form_checkout())
    emails = config["tenants"]["acme"]["emails"]
    for kind in ("new_invoice", "invoice_reminder"):
        emails[kind] = {**emails[kind], "attach_pdf": True}
    return config


@pytest.fixture
def services_options() -> dict[str, Any]:
    return {"pdf_renderer": PDFRenderer(workers=0)}  # in process: no pool to start


@pytest.fixture
def relay_env(services: Services, transport: MemoryTransport) -> tuple[Services, MemoryTransport]:
    assert services.ledger.import_document(ledger(), tenant="acme").errors == []
    return services, transport


def _parsed(data: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _pdfs(message: EmailMessage) -> list[str]:
    return [
        part.get_filename() or ""
        for part in message.iter_attachments()
        if part.get_content_type() == "application/pdf"
    ]


async def test_link_only_sends_the_download_link_and_attached_sends_the_pdf(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)  # a new_invoice email: PDF attached
    first = _parsed(transport.sent[-1].data)
    assert _pdfs(first) == ["INV-1042.pdf"]
    async with httpx.AsyncClient(base_url=web_server, follow_redirects=False) as client:
        page = await client.get(f"/l/{token}/account/preferences")
        done = await client.post(
            f"/l/{token}/account/preferences",
            data={
                "csrf": csrf_of(page.text),
                "action": "delivery",
                "pdf": "link",
                "language": "en",
            },
            headers={"Origin": web_server},
        )
        assert done.status_code == 303
        await services.sending.send_invoice("INV-1042", kind="invoice_reminder", tenant="acme")
        linked = _parsed(transport.sent[-1].data)
        assert _pdfs(linked) == []
        body = linked.get_body(preferencelist=("plain",))
        assert body is not None
        text = str(body.get_content())
        assert "As you asked, the PDF (INV-1042.pdf) is not attached. Download it here:" in text
        found = re.search(r"Download it here: \S+/l/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", text)
        assert found is not None, text
        download = await client.get(f"/l/{found.group(1)}")
        assert download.status_code == 200 and download.content.startswith(b"%PDF-")
        # Back to attached: the next email carries the PDF again.
        page = await client.get(f"/l/{token}/account/preferences")
        assert 'value="link" id="pdf-link" checked' in page.text
        await client.post(
            f"/l/{token}/account/preferences",
            data={
                "csrf": csrf_of(page.text),
                "action": "delivery",
                "pdf": "attach",
                "language": "en",
            },
            headers={"Origin": web_server},
        )
    await services.sending.send_invoice("INV-1051", kind="new_invoice", tenant="acme")
    assert _pdfs(_parsed(transport.sent[-1].data)) == ["INV-1051.pdf"]
