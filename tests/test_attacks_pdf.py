"""The attack catalogue, pdf family: WeasyPrint asked for http://, file:///etc/passwd and another
tenant's asset.

Part of the catalogue split by attack family (``tests/test_attacks_*.py``); every attack goes
through the real paths, on SQLite and PostgreSQL where a database is involved.
"""

from __future__ import annotations

import copy
import email
import io
import logging
import threading
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dunmail.app import Services
from mailer.outbound.memory import MemoryTransport
from tests.conftest import DEMO_DOC, WEASYPRINT_SKIP, make_config
from tests.test_web_ui import fast_argon2

__all__ = ["fast_argon2"]  # a fixture used here, imported from test_web_ui


@pytest.fixture
def relay_env(
    two_tenant_env: tuple[Services, MemoryTransport],
) -> tuple[Services, MemoryTransport]:
    """conftest's ``relay_env`` plus a second tenant, "beta" (what ``web_server`` serves)."""
    return two_tenant_env


# -- 3. WeasyPrint asked for the network, the server's files and another tenant's asset -----------


class _Listener(BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
        pass


@pytest.fixture
def http_listener() -> Iterator[tuple[str, list[str]]]:
    """A real loopback HTTP server recording every request it gets (none may arrive)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Listener)
    _Listener.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Listener.requests
    finally:
        server.shutdown()
        server.server_close()


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    return " ".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def _png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (60, 20), (11, 110, 79)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def services_config(http_listener: tuple[str, list[str]]) -> dict[str, Any]:
    """This module's shared ``services``: PDFs on; acme's logo is at ``http_listener``."""
    base, _ = http_listener
    return {
        "pdfs": True,
        "tenants": {
            "acme": {
                "name": "Acme Supplies",
                "email": "ar@acme.example",
                "branding": {"logo_url": f"{base}/logo.png"},
            }
        },
    }


@pytest.fixture
def services_options() -> dict[str, Any]:
    """This module's shared ``services`` render their PDFs in-process."""
    from mailer.content.pdf_pool import PDFRenderer

    return {"pdf_renderer": PDFRenderer(workers=0)}


@pytest.mark.skipif(WEASYPRINT_SKIP is not None, reason=WEASYPRINT_SKIP or "")
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_invoice_pdf_fetches_nothing_from_the_network_or_the_disk(
    tmp_path: Path, db_url: str, http_listener: tuple[str, list[str]], services: Services
) -> None:
    base, requests = http_listener
    # The only URL a tenant configures is its logo, and only as http(s).
    with pytest.raises(ValidationError, match="logo_url must be an http"):
        make_config(
            tmp_path,
            db_url,
            tenants={
                "acme": {
                    "name": "Acme",
                    "email": "ar@acme.example",
                    "branding": {"logo_url": "file:///etc/passwd"},
                }
            },
        )
    try:
        doc = copy.deepcopy(DEMO_DOC)
        # Markup in customer data that would load things if it were not escaped.
        doc["customers"][0]["name"] = f'Globex <img src="{base}/name.png">'
        doc["invoices"][0]["lines"][0]["description"] = (
            '<link rel="stylesheet" href="file:///etc/passwd">'
            f'<iframe src="file:///etc/passwd"></iframe><img src="{base}/line.png">'
        )
        assert services.ledger.import_document(doc, tenant="acme").errors == []
        preview = await services.previews.build("new_invoice", invoice="INV-1042", tenant="acme")
    finally:
        await services.close()
    assert preview.pdf == "INV-1042.pdf", preview.pdf_skipped
    parsed = email.message_from_bytes(preview.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    (attachment,) = list(parsed.iter_attachments())
    pdf = attachment.get_content()
    assert pdf.startswith(b"%PDF-")
    assert requests == []  # neither the logo nor anything in the data was fetched
    text = _pdf_text(pdf)
    assert "root:" not in text and "/bin/" not in text
    assert "etc/passwd" in text  # the markup is printed as text, not obeyed
    assert b"/Image" not in pdf


@pytest.mark.skipif(WEASYPRINT_SKIP is not None, reason=WEASYPRINT_SKIP or "")
def test_tenant_css_and_logo_reach_only_the_assets_of_their_own_render(
    http_listener: tuple[str, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    from mailer.content.pdf import render_document
    from mailer.content.pdf_samples import sample_pdf_context

    base, requests = http_listener
    acme = sample_pdf_context("invoice", lines=1)
    acme["tenant"]["logo_url"] = "asset:acme-logo.png"
    drawn = render_document("invoice", acme, assets={"asset:acme-logo.png": _png()})
    assert b"/Image" in drawn.data  # acme's own logo, handed to acme's render

    beta = sample_pdf_context("invoice", lines=1)
    beta["tenant"]["logo_url"] = "asset:acme-logo.png"  # acme's asset, by name
    css = (
        f"@import url({base}/import.css);\n"
        f".letterhead {{ background-image: url({base}/bg.png) }}\n"
        "h1 { background-image: url(asset:acme-logo.png) }\n"
        ".tenant-name::after { content: url(file:///etc/passwd) }\n"
        "body::before { content: url(file:///proc/self/environ) }\n"
    )
    with caplog.at_level(logging.WARNING, logger="mailer.content.pdf_fetch"):
        rendered = render_document("invoice", beta, tenant_css=css)
    assert requests == []
    assert b"/Image" not in rendered.data  # no logo: acme's asset is not beta's
    text = _pdf_text(rendered.data)
    assert "root:" not in text and "PATH=" not in text
    refused = " ".join(r.getMessage() for r in caplog.records)
    for url in (
        f"{base}/import.css",
        f"{base}/bg.png",
        "asset:acme-logo.png",
        "file:///etc/passwd",
    ):
        assert url in refused
