"""Fairness (issue 14, finding 7): one tenant's huge document holds up nobody else's mail.

A 10,000-line invoice is refused at import with its position; a render past its time budget
has its worker killed, and the email goes (once) without the PDF, with its View link and the
reason on the message; and while one tenant's slow PDF renders, another tenant's due mail
leaves in the same pass, over real SMTP on loopback.
"""

from __future__ import annotations

import asyncio
import email
import time
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

import pytest
from sqlmodel import Session, select

from dunmail.app import Services
from mailer.clock import FixedClock
from mailer.content.models import StoredPDF
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.models import Message, MessageStatus
from tests.conftest import DEMO_DOC, WEASYPRINT_SKIP
from tests.smtpd import RecordingServer

if TYPE_CHECKING:
    from mailer.content.pdf_pool import PDFRenderer

needs_weasyprint = pytest.mark.skipif(bool(WEASYPRINT_SKIP), reason=WEASYPRINT_SKIP or "")

# About 1 s of WeasyPrint on this machine's class (10 pages; 150 lines took 0.5 s once the fonts
# were warm, too close to the 0.3 s and 0.5 s budgets below): slow, but quick to test.
SLOW_LINES = 300
# Far over a 0.5 s budget (about 3 s, 30 pages): the render is killed at the budget anyway.
OVER_BUDGET_LINES = 900


def _invoice(number: str, customer: str, lines: int) -> dict[str, Any]:
    return {
        "id": number.lower(),
        "number": number,
        "customer": customer,
        "currency": "EUR",
        "issued_at": "2026-03-01",
        "due_at": "2026-03-31",
        "status": "open",
        "lines": [
            {"description": f"Item {i}", "quantity": "1", "unit_price": "1.00"}
            for i in range(lines)
        ],
    }


def _document(*invoices: dict[str, Any]) -> dict[str, Any]:
    return {"customers": DEMO_DOC["customers"], "invoices": list(invoices)}


def _beta() -> dict[str, Any]:
    return {"name": "Beta Ltd", "email": "ar@beta.example"}


@pytest.fixture
def pdf_renderer(request: pytest.FixtureRequest) -> PDFRenderer | None:
    """None (the services' own default), or, where a test parametrizes this fixture
    indirectly with PDFRenderer's keyword arguments, that worker pool: then this module's
    shared services attach PDFs and send over SMTP to ``smtpd``."""
    if not hasattr(request, "param"):
        return None
    from mailer.content.pdf_pool import PDFRenderer

    return PDFRenderer(**request.param)


@pytest.fixture
def transport(pdf_renderer: PDFRenderer | None) -> MemoryTransport | None:
    """Memory, or SMTP to ``smtpd`` when the test renders through ``pdf_renderer``."""
    return MemoryTransport() if pdf_renderer is None else None


@pytest.fixture
def services_config(
    request: pytest.FixtureRequest, pdf_renderer: PDFRenderer | None
) -> dict[str, Any]:
    """The test's ``services_config`` marker; with ``pdf_renderer``, PDFs on and the relay at
    ``smtpd`` too."""
    marker = request.node.get_closest_marker("services_config")
    settings = dict(marker.kwargs) if marker else {}
    if pdf_renderer is None:
        return settings
    smtpd: RecordingServer = request.getfixturevalue("smtpd")
    relay = {"domain": "relay.example", "host": smtpd.host, "port": smtpd.port}
    return {"pdfs": True, "relay": relay, **settings}


@pytest.fixture
def services_options(pdf_renderer: PDFRenderer | None) -> dict[str, Any]:
    """This module's shared ``services`` render through ``pdf_renderer``, if any."""
    return {} if pdf_renderer is None else {"pdf_renderer": pdf_renderer}


def _parsed(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _once_each(envelopes: list[Any]) -> int:
    """How many recipients got the email, checking that none got it twice."""
    recipients = [r for e in envelopes for r in e.rcpt_tos]
    assert len(recipients) == len(set(recipients)), recipients
    return len(recipients)


def _message(services: Services, number: str) -> Message:
    with Session(services.engine) as session:
        found = [
            m
            for m in session.exec(select(Message)).all()
            if m.context.get("invoice", {}).get("number") == number
        ]
    [message] = found
    return message


def test_a_10000_line_invoice_is_refused_at_import_with_its_position(services: Services) -> None:
    report = services.ledger.import_document(
        _document(
            _invoice("INV-1", "C-1", 3),
            _invoice("INV-HUGE", "C-1", 10_000),
            _invoice("INV-2", "C-1", 1000),  # the limit itself is accepted
        ),
        tenant="acme",
    )
    [error] = report.errors
    assert error.where == "invoices[1].lines"
    assert "10,000 lines" in error.reason and "1,000" in error.reason
    assert "[pdf] max_lines" in error.reason
    assert report.invoices.created == 2  # the rest of the batch is applied


@pytest.mark.services_config(pdf={"max_lines": 5})
def test_the_line_limit_is_configurable(services: Services) -> None:
    report = services.ledger.import_document(
        _document(_invoice("INV-1", "C-1", 6), _invoice("INV-2", "C-1", 5)), tenant="acme"
    )
    assert [(e.where, e.reason.split(";")[0]) for e in report.errors] == [
        ("invoices[0].lines", "6 lines")
    ]
    assert report.invoices.created == 1


@needs_weasyprint
@pytest.mark.parametrize("pdf_renderer", [{"workers": 1, "render_seconds": 0.5}], indirect=True)
async def test_a_render_over_its_budget_is_killed_and_the_email_still_goes_once(
    services: Services, pdf_renderer: PDFRenderer, db_url: str, smtpd: RecordingServer
) -> None:
    if db_url.startswith("postgresql"):
        pytest.skip("the worker pool is the same for both databases; once is enough")
    renderer = pdf_renderer
    try:
        [before] = await renderer.start()
        report = services.ledger.import_document(
            _document(_invoice("INV-SLOW", "C-1", OVER_BUDGET_LINES)), tenant="acme"
        )
        assert report.errors == []
        started = time.perf_counter()
        message = await services.sending.send_invoice("INV-SLOW", kind="new_invoice", tenant="acme")
        took = time.perf_counter() - started
        # The pool recovered: a fresh worker renders the next document.
        small = services.ledger.import_document(
            _document(_invoice("INV-OK", "C-1", 1)), tenant="acme"
        )
        assert small.errors == []
        ok = await services.sending.send_invoice("INV-OK", kind="new_invoice", tenant="acme")
        after = renderer.worker_pids()
    finally:
        await services.close()
    assert took < 0.5 + 3.0  # killed at its budget, not after the whole render
    assert before not in after  # that worker was killed and replaced
    assert message.status is MessageStatus.SENT and message.attempts == 1
    assert message.last_error is not None
    assert "PDF not attached" in message.last_error and "longer than 0.5 s" in message.last_error
    assert message.pdf_sha256 is None
    slow = [e for e in smtpd.envelopes if b"INV-SLOW" in e.content]
    assert _once_each(slow) == 2
    parsed = _parsed(slow[0].content)
    assert list(parsed.iter_attachments()) == []
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None and "/l/" in body.get_content()  # its View link
    assert ok.status is MessageStatus.SENT and ok.pdf_sha256 is not None and ok.last_error is None


@needs_weasyprint
@pytest.mark.parametrize("pdf_renderer", [{"workers": 2}], indirect=True)
@pytest.mark.services_config(tenants={"beta": _beta()}, pdf={"pass_wait_seconds": 0.3})
async def test_a_slow_render_for_one_tenant_does_not_hold_another_tenants_mail(
    services: Services, db_url: str, clock: FixedClock, smtpd: RecordingServer
) -> None:
    if db_url.startswith("postgresql"):
        pytest.skip("the worker pool is the same for both databases; once is enough")
    try:
        await services.pdfs.start()  # what dunmail run does before its first pass
        slow = _document(_invoice("INV-SLOW", "C-1", SLOW_LINES))
        assert services.ledger.import_document(slow, tenant="acme").errors == []
        quick = _document(_invoice("BETA-1", "C-1", 2))
        assert services.ledger.import_document(quick, tenant="beta").errors == []
        for number, slug in (("INV-SLOW", "acme"), ("BETA-1", "beta")):
            services.sending.enqueue_invoice_email(
                number, kind="new_invoice", tenant=slug, manual=False
            )

        started = time.perf_counter()
        first = await services.sending.deliver()
        pass_took = time.perf_counter() - started
        beta_sent = [e for e in smtpd.envelopes if b"BETA-1" in e.content]
        acme_early = [e for e in smtpd.envelopes if b"INV-SLOW" in e.content]

        # acme's PDF finishes rendering off the pass; a later pass sends its email with it.
        for _ in range(300):
            with Session(services.engine) as session:
                if session.exec(select(StoredPDF).where(StoredPDF.pages > 1)).first():
                    break
            await asyncio.sleep(0.1)
        clock.advance(timedelta(seconds=5))
        await services.sending.deliver()
        acme = _message(services, "INV-SLOW")
    finally:
        await services.close()
    assert pass_took < 2.0, "the pass waited for acme's render"
    assert first.sent == 1 and first.throttled == 1
    assert _once_each(beta_sent) == 2 and acme_early == []  # beta's went in the same pass
    assert acme.status is MessageStatus.SENT and acme.attempts == 1 and acme.last_error is None
    sent = [e for e in smtpd.envelopes if b"INV-SLOW" in e.content]
    assert _once_each(sent) == 2
    [(attachment)] = list(_parsed(sent[0].content).iter_attachments())
    assert attachment.get_filename() == "INV-SLOW.pdf"
