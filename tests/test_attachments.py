"""PDF attachments end to end: rendered once per document version, stored, attached, linked.

Real SMTP on loopback (aiosmtpd), real databases (SQLite and PostgreSQL), real WeasyPrint.
"""

from __future__ import annotations

import asyncio
import copy
import email
import hashlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from tests.conftest import WEASYPRINT_SKIP

if WEASYPRINT_SKIP:
    pytest.skip(WEASYPRINT_SKIP, allow_module_level=True)

from dunmail.app import Services, build_services  # noqa: E402  (after the skip)
from mailer.clock import FixedClock
from mailer.content.attachment import PDF_CONTEXT_KEYS
from mailer.content.models import StoredPDF
from mailer.content.pdf import RenderedPDF
from mailer.content.pdf_html import DOCUMENTS
from mailer.content.pdf_pool import PDFRenderer
from mailer.content.pdfstore import PDFStore, build_pdf_context
from mailer.ledger.models import Invoice
from mailer.outbound.links import verify_link
from mailer.outbound.models import Message, MessageStatus
from mailer.outbound.verp import derive_key
from tests.conftest import DEMO_DOC, make_config
from tests.smtpd import RecordingServer

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class CountingRenderer:
    """A real in-process PDFRenderer that counts the renders that reach it (store misses)."""

    def __init__(self, workers: int = 0) -> None:
        self.inner = PDFRenderer(workers=workers)
        self.calls: list[str] = []

    async def render(
        self,
        document: str,
        context: Mapping[str, Any],
        *,
        assets: Mapping[str, bytes | tuple[bytes, str]] | None = None,
        tenant_css: str | None = None,
    ) -> RenderedPDF:
        self.calls.append(document)
        return await self.inner.render(document, context, assets=assets, tenant_css=tenant_css)

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
def renderer(request: pytest.FixtureRequest) -> CountingRenderer | None:
    """The shared services' PDF renderer: in-process, or (a test parametrizes it indirectly)
    with that many worker processes, or None for none at all."""
    workers = getattr(request, "param", 0)
    return None if workers is None else CountingRenderer(workers=workers)


@pytest.fixture
def asked() -> list[tuple[int, str]]:
    """What ``attach_pdf`` was asked, in order."""
    return []


@pytest.fixture
def attach_pdf(
    request: pytest.FixtureRequest, asked: list[tuple[int, str]]
) -> Callable[[int, str], bool] | None:
    """Which PDFs are attached: as the tenant config says, or (a test parametrizes it
    indirectly with a kind) only that kind's, each question recorded in ``asked``."""
    only: str | None = getattr(request, "param", None)
    if only is None:
        return None

    def attach(tenant_id: int, kind: str) -> bool:
        asked.append((tenant_id, kind))
        return kind == only

    return attach


@pytest.fixture
def transport() -> None:
    """This module's shared services send over SMTP, to ``smtpd``."""
    return None


@pytest.fixture
def services_config(
    request: pytest.FixtureRequest, tmp_path: Path, db_url: str, smtpd: RecordingServer
) -> dict[str, Any]:
    """This module's shared ``services``: PDFs attached, the relay is ``smtpd``. A test's
    ``services_config`` marker adds to that: its ``relay`` to the relay's table, its ``acme``
    to acme's, ``pdfs`` replaces."""
    marker = request.node.get_closest_marker("services_config")
    extra = dict(marker.kwargs) if marker else {}
    relay = {"domain": "relay.example", "host": smtpd.host, "port": smtpd.port}
    settings: dict[str, Any] = {"pdfs": True, "relay": {**relay, **extra.pop("relay", {})}}
    if "acme" in extra:
        acme = make_config(tmp_path, db_url).tenants["acme"]
        table = acme.model_dump(mode="json", exclude_defaults=True)
        settings["tenants"] = {"acme": {**table, **extra.pop("acme")}}
    return {**settings, **extra}


@pytest.fixture
def services_options(
    renderer: CountingRenderer | None, attach_pdf: Callable[[int, str], bool] | None
) -> dict[str, Any]:
    """This module's shared ``services`` render through ``renderer`` and ask ``attach_pdf``."""
    options: dict[str, Any] = {}
    if renderer is not None:
        options["pdf_renderer"] = renderer
    if attach_pdf is not None:
        options["attach_pdf"] = attach_pdf
    return options


@pytest.fixture
def services(services: Services) -> Services:
    """conftest's ``services`` on this module's settings, with DEMO_DOC imported."""
    report = services.ledger.import_document(DEMO_DOC, tenant="acme")
    assert report.errors == []
    return services


def _received(smtpd: RecordingServer, index: int = -1) -> EmailMessage:
    """Email ``index`` the server received: each recipient's transaction carries the same
    bytes (one envelope per recipient), so the copies count once."""
    emails = list(dict.fromkeys(e.content for e in smtpd.envelopes))
    parsed = email.message_from_bytes(emails[index], policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _pdfs(msg: EmailMessage) -> list[tuple[str, bytes]]:
    out = []
    for part in msg.iter_attachments():
        assert isinstance(part, EmailMessage)
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        out.append((part.get_filename() or "", payload))
    return out


def _stored(services: Services) -> list[StoredPDF]:
    with Session(services.engine) as session:
        return list(session.exec(select(StoredPDF).order_by(col(StoredPDF.id))).all())


def _message(services: Services, message_id: int | None) -> Message:
    with Session(services.engine) as session:
        row = session.get(Message, message_id)
    assert row is not None
    return row


def _text_and_html(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(preferencelist=("plain",))
    markup = msg.get_body(preferencelist=("html",))
    assert text is not None and markup is not None
    return text.get_content(), markup.get_content()


# -- end to end ---------------------------------------------------------------------------------


async def test_new_invoice_arrives_with_the_pdf_whose_hash_the_message_records(
    services: Services, smtpd: RecordingServer
) -> None:
    message = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    assert message.status is MessageStatus.SENT
    [(filename, data)] = _pdfs(_received(smtpd))
    assert filename == "INV-1042.pdf"
    assert data.startswith(b"%PDF-")
    assert message.pdf_sha256 == hashlib.sha256(data).hexdigest()
    [stored] = _stored(services)
    assert stored.data == data and stored.sha256 == message.pdf_sha256
    assert stored.document == f"invoice:{message.invoice_id}"
    assert stored.version == message.document_version == 1
    assert stored.pages >= 1


async def test_emails_about_one_invoice_version_share_one_render(
    services: Services, smtpd: RecordingServer, renderer: CountingRenderer
) -> None:
    first = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    second = await services.sending.send_invoice("INV-1042", kind="invoice_reminder", tenant=None)
    assert first.id != second.id
    assert renderer.calls == ["invoice"]
    assert len(_stored(services)) == 1
    assert first.pdf_sha256 == second.pdf_sha256
    assert _pdfs(_received(smtpd, 0))[0][1] == _pdfs(_received(smtpd, 1))[0][1]


async def test_a_new_invoice_version_renders_a_new_pdf(
    services: Services, smtpd: RecordingServer, renderer: CountingRenderer, clock: FixedClock
) -> None:
    first = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    edited = copy.deepcopy(DEMO_DOC)
    edited["invoices"][0]["lines"].append(
        {"description": "Extra support", "quantity": "2", "unit_price": "60.00"}
    )
    clock.advance(timedelta(minutes=5))
    assert services.ledger.import_document(edited, tenant="acme").errors == []
    with Session(services.engine) as session:
        invoice = session.exec(select(Invoice)).one()
    assert invoice.version == 2
    second = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    assert second.id != first.id and second.document_version == 2
    assert renderer.calls == ["invoice", "invoice"]
    stored = _stored(services)
    assert [(s.document, s.version) for s in stored] == [
        (f"invoice:{invoice.id}", 1),
        (f"invoice:{invoice.id}", 2),
    ]
    assert second.pdf_sha256 == stored[1].sha256 != first.pdf_sha256
    assert _pdfs(_received(smtpd))[0][1] == stored[1].data


async def test_concurrent_first_renders_store_one_pdf(
    services: Services, renderer: CountingRenderer
) -> None:
    # Two workers miss the store at once; both render, one insert wins the unique constraint
    # and the other reads the winner's row: every email carries the same bytes.
    assert services.pdfs.store is not None
    with Session(services.engine) as session:
        message_context = {
            "locale": "en",
            "tenant": {"name": "Acme", "email": "ar@acme.example"},
            "customer": {"name": "Globex", "id": "C-1"},
            "invoice": {**session.exec(select(Invoice)).one().model_dump(mode="json")},
        }
    message_context["invoice"]["lines"] = []
    fetch = {
        "tenant_id": services.tenants.id("acme"),
        "document": "invoice:1",
        "version": 1,
        "pdf": "invoice",
        "context": message_context,
    }
    # A second engine process has its own store object (one process shares one render).
    other = PDFStore(services.engine, renderer=renderer, clock=services.clock)
    first, second = await asyncio.gather(
        services.pdfs.store.fetch_pdf(**fetch), other.fetch_pdf(**fetch)
    )
    assert renderer.calls == ["invoice", "invoice"]  # both missed the store
    assert first.id == second.id and first.sha256 == second.sha256
    assert len(_stored(services)) == 1


@pytest.mark.smtpd_options(data="451 4.3.0 Try again later")
async def test_a_retry_sends_the_bytes_the_first_attempt_recorded(
    services: Services, smtpd: RecordingServer, renderer: CountingRenderer, clock: FixedClock
) -> None:
    message = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    assert message.status is MessageStatus.DEFERRED
    assert message.pdf_sha256 is not None
    # A deploy changes the templates: the stored PDF's render key no longer matches.
    with Session(services.engine) as session:
        stored = session.exec(select(StoredPDF)).one()
        stored.render_key = "0" * 64
        session.add(stored)
        session.commit()
    smtpd.script(data=None)
    clock.advance(timedelta(hours=1))
    assert (await services.sending.deliver()).sent == 1
    assert renderer.calls == ["invoice"]  # not rendered again
    [(_, data)] = _pdfs(_received(smtpd))
    assert hashlib.sha256(data).hexdigest() == message.pdf_sha256
    assert _message(services, message.id).pdf_sha256 == message.pdf_sha256


@pytest.mark.parametrize("attach_pdf", ["new_invoice"], indirect=True)
async def test_attach_pdf_switches_pdfs_off_per_tenant_and_kind(
    services: Services, smtpd: RecordingServer, asked: list[tuple[int, str]]
) -> None:
    reminder = await services.sending.send_invoice("INV-1042", kind="invoice_reminder", tenant=None)
    new = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    tenant_id = services.tenants.id("acme")
    assert _pdfs(_received(smtpd, 0)) == [] and reminder.pdf_sha256 is None
    assert len(_pdfs(_received(smtpd, 1))) == 1 and new.pdf_sha256 is not None
    assert asked == [(tenant_id, "invoice_reminder"), (tenant_id, "new_invoice")]


@pytest.mark.services_config(acme={"emails": {"invoice_reminder": {"attach_pdf": False}}})
async def test_attach_pdf_comes_from_the_tenant_config(
    services: Services, smtpd: RecordingServer
) -> None:
    assert services.pdfs.store is not None  # PDFs are on: acme attaches new_invoice's
    reminder = await services.sending.send_invoice("INV-1042", kind="invoice_reminder", tenant=None)
    new = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    assert _pdfs(_received(smtpd, 0)) == [] and reminder.pdf_sha256 is None
    assert len(_pdfs(_received(smtpd, 1))) == 1 and new.pdf_sha256 is not None


# Large enough for the email itself (~10 KB), far too small for it with the PDF.
@pytest.mark.services_config(relay={"max_message_bytes": 20_000})
async def test_a_pdf_over_the_size_limit_is_linked_not_attached(
    services: Services, smtpd: RecordingServer, clock: FixedClock
) -> None:
    message = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    assert message.status is MessageStatus.SENT  # never a failed send
    assert len(smtpd.envelopes[0].content) <= 20_000
    received = _received(smtpd)
    assert _pdfs(received) == []
    text, markup = _text_and_html(received)
    assert "INV-1042.pdf" in text and "too large to attach" in text
    url = text.split("Download it here: ")[1].split()[0]
    prefix = f"{services.config.web.public_url}/l/"  # the web app serves /l/<token>
    assert url.startswith(prefix)
    assert f'href="{url}"' in markup
    key = derive_key(services.config.secret_key(), "links")
    claims = verify_link(url.removeprefix(prefix), key=key, now=clock.now())
    assert claims.purpose == "download"
    assert claims.document == f"invoice:{message.invoice_id}" and claims.version == 1
    assert claims.tenant_id == message.tenant_id
    # The message still records the PDF it links to: the hosted download serves these bytes.
    [stored] = _stored(services)
    assert message.pdf_sha256 == stored.sha256


@pytest.mark.parametrize("renderer", [1], indirect=True)  # one worker process
async def test_renders_through_the_process_pool(
    services: Services, db_url: str, smtpd: RecordingServer
) -> None:
    if db_url.startswith("postgresql"):
        pytest.skip("the pool is the same for both databases; once is enough")
    try:
        message = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    finally:
        await services.close()
    [(_, data)] = _pdfs(_received(smtpd))
    assert data.startswith(b"%PDF-")
    assert message.pdf_sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.services_config(pdfs=False)
@pytest.mark.parametrize("renderer", [None], indirect=True)  # build_services' default
async def test_without_pdfs_nothing_is_attached(services: Services, smtpd: RecordingServer) -> None:
    assert services.pdfs.store is None
    message = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)
    assert _pdfs(_received(smtpd)) == []
    assert message.pdf_sha256 is None


# -- pure parts ---------------------------------------------------------------------------------


def test_outbox_context_keys_match_the_pdf_documents() -> None:
    assert PDF_CONTEXT_KEYS == DOCUMENTS


def test_pdf_context_keeps_only_what_the_pdf_shows() -> None:
    base = {
        "locale": "de",
        "tenant": {"name": "Acme", "email": "ar@acme.example", "css": ".x { color: red }"},
        "customer": {"name": "Globex", "id": "C-1"},
        "invoice": {"number": "INV-1"},
    }
    new = build_pdf_context("invoice", {**base, "days_overdue": 0, "links": {"view": None}})
    late = build_pdf_context("invoice", {**base, "days_overdue": 9, "links": {"view": "x"}})
    assert new == late
    context, css = new
    assert css == ".x { color: red }"
    assert "css" not in context["tenant"] and context["tenant"]["address"] == []
    assert set(context) == {"locale", "tenant", "customer", "invoice"}


async def test_pdfs_switch_on_by_themselves_when_a_tenant_attaches_one(
    tmp_path: Path, db_url: str, clock: FixedClock
) -> None:
    # Its own builds: two Services side by side, one config with PDFs and one without.
    with_pdfs = build_services(make_config(tmp_path, db_url, pdfs=True), clock)
    without = build_services(make_config(tmp_path, db_url), clock)
    try:
        assert with_pdfs.pdfs.store is not None and with_pdfs.pdfs.renderer is not None
        assert without.pdfs.store is None and without.pdfs.renderer is None
    finally:
        await with_pdfs.close()
        await without.close()
