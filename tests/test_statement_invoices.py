"""A statement attaches each open invoice's PDF (issue 18): within the message size budget, the
rest listed with signed PDF / View links that verify; off by default. Real WeasyPrint (in
process), the real outbox, SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import email
import io
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WEASYPRINT_SKIP

if WEASYPRINT_SKIP:
    pytest.skip(WEASYPRINT_SKIP, allow_module_level=True)

from pypdf import PdfReader  # noqa: E402  (after the skip)

from dunmail.app import Services, build_services  # noqa: E402
from mailer.clock import FixedClock  # noqa: E402
from mailer.content.pdf_pool import PDFRenderer  # noqa: E402
from mailer.outbound.links import verify_link  # noqa: E402
from mailer.outbound.memory import MemoryTransport  # noqa: E402
from mailer.outbound.models import MessageStatus  # noqa: E402
from tests.conftest import DEMO_DOC, NO_PDFS, make_config  # noqa: E402

NUMBERS = ["INV-1042", "INV-1043", "INV-1044"]


def _doc() -> dict[str, Any]:
    """DEMO_DOC's customer with three open invoices and a paid one (never attached)."""
    doc = copy.deepcopy(DEMO_DOC)
    first = doc["invoices"][0]
    for n, number in enumerate(NUMBERS[1:], start=1):
        doc["invoices"].append({**copy.deepcopy(first), "id": f"i-{number}", "number": number})
        doc["invoices"][-1]["lines"][0]["unit_price"] = f"{100 + n}.00"
    doc["invoices"].append(
        {**copy.deepcopy(first), "id": "i-paid", "number": "INV-0999", "status": "paid"}
    )
    return doc


async def _services(
    tmp_path: Path, db_url: str, clock: FixedClock, *, attach: bool, budget: int | None = None
) -> AsyncIterator[tuple[Services, MemoryTransport]]:
    transport = MemoryTransport()
    emails = {**NO_PDFS, "statement": {"attach_pdf": False, "attach_invoices": attach}}
    relay: dict[str, Any] = {"domain": "relay.example"}
    if budget is not None:
        relay["max_message_bytes"] = budget
    tenant = {
        "name": "Acme Supplies",
        "email": "ar@acme.example",
        "dkim": [
            {"domain": "acme.example", "selector": "s1", "key_file": str(tmp_path / "s1.pem")}
        ],
        "emails": emails,
    }
    config = make_config(tmp_path, db_url, relay=relay, tenants={"acme": tenant})
    services = build_services(config, clock, transport, pdf_renderer=PDFRenderer(workers=0))
    assert services.ledger.import_document(_doc(), tenant="acme").errors == []
    yield services, transport
    await services.close()


async def _statement(services: Services, transport: MemoryTransport) -> EmailMessage:
    [message] = await services.sending.send_statement("C-1", tenant="acme")
    assert message.status is MessageStatus.SENT, message.last_error
    parsed = email.message_from_bytes(transport.sent[-1].data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _pdfs(parsed: EmailMessage) -> dict[str, str]:
    """File name -> the text pypdf reads out of each attached PDF."""
    found = {}
    for part in parsed.iter_attachments():
        data = part.get_payload(decode=True)
        assert isinstance(data, bytes) and data.startswith(b"%PDF-")
        reader = PdfReader(io.BytesIO(data))
        found[str(part.get_filename())] = "".join(page.extract_text() for page in reader.pages)
    return found


async def test_a_statement_attaches_each_open_invoices_pdf(
    tmp_path: Path, db_url: str, clock: FixedClock
) -> None:
    async for services, transport in _services(tmp_path, db_url, clock, attach=True):
        pdfs = _pdfs(await _statement(services, transport))
        assert sorted(pdfs) == [f"{n}.pdf" for n in NUMBERS]
        for number in NUMBERS:
            assert number in pdfs[f"{number}.pdf"]
            others = set(NUMBERS) - {number}
            assert not any(o in pdfs[f"{number}.pdf"] for o in others)


async def test_over_the_budget_the_rest_are_linked_and_the_links_verify(
    tmp_path: Path, db_url: str, clock: FixedClock
) -> None:
    # Measure the message and a PDF first, then give a budget with room for one PDF only.
    async for services, transport in _services(tmp_path, db_url, clock, attach=True):
        parsed = await _statement(services, transport)
        full = transport.sent[-1].data
        sizes = [len(p.get_payload(decode=False)) for p in parsed.iter_attachments()]
    assert min(sizes) > 12_000  # a PDF is bigger than the slack below
    budget = len(full) - sizes[1] - sizes[2] + 8192  # the reserve, the notice of two links
    clock.advance(timedelta(minutes=5))  # the same database: a statement of a later moment
    async for services, transport in _services(
        tmp_path / "small", db_url, clock, attach=True, budget=budget
    ):
        parsed = await _statement(services, transport)
        assert len(transport.sent[-1].data) <= budget
        assert list(_pdfs(parsed)) == ["INV-1042.pdf"]
        text = parsed.get_body(("plain",))
        assert text is not None
        body = text.get_content()
        for number in NUMBERS[1:]:
            assert f"The PDF ({number}.pdf) is too large to attach" in body
        tokens = re.findall(r"https?://\S+/l/(\S+)", body)
        claims = [verify_link(t, keys=services.links.keys, now=clock.now()) for t in tokens]
        # The statement's own View link, then a PDF and a View link per linked invoice.
        assert [c.document.partition(":")[0] for c in claims].count("statement") == 1
        mine = [c for c in claims if c.document.startswith("invoice:")]
        assert sorted(c.purpose for c in mine) == ["download", "download", "view", "view"]
        assert len({c.document for c in mine}) == 2
        html = parsed.get_body(("html",))
        assert html is not None and html.get_content().count("download-notice") == 2


async def test_off_by_default_a_statement_attaches_no_invoice(
    tmp_path: Path, db_url: str, clock: FixedClock
) -> None:
    async for services, transport in _services(tmp_path, db_url, clock, attach=False):
        parsed = await _statement(services, transport)
        assert _pdfs(parsed) == {}
        assert "too large to attach" not in transport.sent[-1].data.decode("ascii")
