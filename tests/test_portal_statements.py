"""Statements on the account page, rendered by WeasyPrint in-process (SQLite only: the
database side is covered on both in tests/test_portal_bank.py): the statements the customer
was sent, each with its PDF, and a statement of the account as it stands now per currency,
all under the View link, limited per customer per hour and out of reach of another
customer's link."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select

from dunmail.app import Services
from dunmail.web.link_service import revoke_links
from mailer.clock import FixedClock
from mailer.ledger.models import Invoice
from mailer.outbound.links import issue_link
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.models import LinkEvent
from tests.conftest import WEASYPRINT_SKIP
from tests.portal_fixtures import FORM_SECRET, form_checkout, ledger, tenants, view_token

pytestmark = [
    pytest.mark.skipif(WEASYPRINT_SKIP is not None, reason=WEASYPRINT_SKIP or ""),
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]


@pytest.fixture
def services_config(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("ACME_HOOK", "hook-secret")
    monkeypatch.setenv("ACME_PAY", FORM_SECRET)
    return tenants(tmp_path, db_url, form_checkout())


@pytest.fixture
def services_options() -> dict[str, Any]:
    """PDFs on, rendered in-process."""
    from mailer.content.pdf_pool import PDFRenderer

    return {"pdfs": True, "pdf_renderer": PDFRenderer(workers=0)}


@pytest.fixture
def relay_env(services: Services, transport: MemoryTransport) -> tuple[Services, MemoryTransport]:
    assert services.ledger.import_document(ledger(), tenant="acme").errors == []
    return services, transport


def _text(data: bytes) -> str:
    from pypdf import PdfReader

    assert data.startswith(b"%PDF-")
    return " ".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


async def test_statements_sent_and_the_current_one_each_with_its_pdf(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    sent = await services.sending.send_statement("C-1", tenant="acme")
    assert len(sent) == 2
    async with httpx.AsyncClient(base_url=web_server) as client:
        page = (await client.get(f"/l/{token}/account")).text
        assert "Statements sent to you" in page
        sent_links = re.findall(r'href="(/l/[^"]+/account/statements/\d+/pdf)"', page)
        assert len(sent_links) == 2 and all(u.startswith(f"/l/{token}/") for u in sent_links)
        current = {
            currency: url
            for url, currency in re.findall(
                r'href="(/l/[^"]+/pdf)">Download statement \(PDF\) in ([A-Z]{3})<', page
            )
        }
        assert current == {
            "EUR": f"/l/{token}/account/statement/EUR/pdf",
            "USD": f"/l/{token}/account/statement/USD/pdf",
        }
        texts = []
        for url in sent_links:
            response = await client.get(url)
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/pdf"
            texts.append(_text(response.content))
        eur = await client.get(current["EUR"])
        usd = await client.get(current["USD"])
    assert any("€1,504.56" in t for t in texts) and any("$99.00" in t for t in texts)
    # Now: every open euro invoice (150.00 + 1,234.56 + 120.00), as the statement email.
    assert (
        eur.status_code == 200 and 'filename="statement-EUR-' in eur.headers["content-disposition"]
    )
    text = _text(eur.content)
    assert "Statement of account" in text and "€1,504.56" in text
    assert "INV-1050" in text and "INV-1051" in text and "INV-2001" not in text
    assert "$99.00" in _text(usd.content) and "INV-1052" in _text(usd.content)
    with Session(services.engine) as session:
        audit = session.exec(select(LinkEvent).where(LinkEvent.action == "statement")).all()
    assert len(audit) == 2 and {e.purpose for e in audit} == {"view"}


async def test_statements_now_are_limited_per_customer_per_hour(
    relay_env: tuple[Services, MemoryTransport], web_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dunmail.services import portal_documents

    monkeypatch.setattr(portal_documents, "STATEMENT_PDFS_PER_HOUR", 2)
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    url = f"/l/{token}/account/statement/EUR/pdf"
    async with httpx.AsyncClient(base_url=web_server) as client:
        codes = [(await client.get(url)).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert isinstance(services.clock, FixedClock)
        services.clock.advance(timedelta(hours=1, minutes=1))
        assert (await client.get(url)).status_code == 200


async def test_another_customers_link_reaches_no_statement_and_revocation_stops_them(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    sent = await services.sending.send_statement("C-1", tenant="acme")
    with Session(services.engine) as session:
        theirs = session.exec(select(Invoice).where(Invoice.number == "INV-2001")).one()
    c2 = issue_link(
        "view",
        services.tenants.id("acme"),
        f"invoice:{theirs.id}",
        theirs.version,
        key=services.links.signing,
        expires_at=services.clock.now() + timedelta(days=1),
    )
    async with httpx.AsyncClient(base_url=web_server) as client:
        for message in sent:
            mine = await client.get(f"/l/{token}/account/statements/{message.id}/pdf")
            assert mine.status_code == 200
            other = await client.get(f"/l/{c2}/account/statements/{message.id}/pdf")
            assert other.status_code == 404 and b"%PDF" not in other.content
        # C-2's statement now is C-2's own: its one invoice, nothing of C-1's.
        own = await client.get(f"/l/{c2}/account/statement/EUR/pdf")
        text = _text(own.content)
        assert "INV-2001" in text and "INV-1050" not in text and "1,504.56" not in text
        assert (await client.get(f"/l/{c2}/account/statement/USD/pdf")).status_code == 404
        revoke_links(services, tenant="acme", token=token, by="test")
        for url in (
            f"/l/{token}/account/statements/{sent[0].id}/pdf",
            f"/l/{token}/account/statement/EUR/pdf",
        ):
            gone = await client.get(url)
            assert gone.status_code == 404 and b"%PDF" not in gone.content
