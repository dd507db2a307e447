"""Every kind with a PDF is delivered with it, rendered from the context the outbox builds.

The PDF templates were once written against hand-made sample data that had keys the real
contexts lack, so every receipt and credit note failed for good while every PDF test passed.
Here nothing is hand-made: a document is imported, the engine ticks with the defaults (PDFs on),
and each message that reaches the loopback SMTP server must carry its PDF showing its number.
The pure half checks the same on the real context builders, for any ledger row Hypothesis
makes, and that the sample data the other PDF tests use is built by those builders.
"""

from __future__ import annotations

import email
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from typing import Any, get_type_hints

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, col, select

from tests.conftest import WEASYPRINT_SKIP

if WEASYPRINT_SKIP:  # mailer.content.pdfstore, and every render here, needs WeasyPrint and Pango
    pytest.skip(WEASYPRINT_SKIP, allow_module_level=True)

from dunmail.app import Services
from mailer.clock import FixedClock
from mailer.content import (
    kinds,  # noqa: E402  (after the skip)
    shapes,  # noqa: E402  (after the skip)
)
from mailer.content.attachment import plan_pdf
from mailer.content.event_context import (
    credit_note_context,
    estimate_context,
    invoice_data,
    payment_context,
    refund_context,
)
from mailer.content.kinds import KINDS
from mailer.content.pdf_html import DOCUMENTS, render_html
from mailer.content.pdf_samples import sample_pdf_context
from mailer.content.pdfstore import build_pdf_context
from mailer.content.samples import sample_context
from mailer.content.statement import Transaction, statement
from mailer.ledger.models import CreditNote, Estimate, EstimateStatus, Invoice, Payment, Refund
from mailer.outbound.models import Message

PDF_KINDS = sorted(kind for kind, spec in KINDS.items() if spec.pdf is not None)
# The TypedDict of each PDF document's part of the context (mailer.content.shapes): the one shape.
SHAPES: dict[str, type] = {
    "invoice": shapes.InvoiceData,
    "credit_note": shapes.CreditNoteData,
    "estimate": shapes.EstimateData,
    "receipt": shapes.PaymentData,
    "refund": shapes.RefundData,
    "statement": shapes.StatementData,
}

DOCUMENT: dict[str, Any] = {
    "customers": [
        {
            "id": "C-1",
            "name": "Globex",
            "locale": "en",
            "time_zone": "UTC",
            "contacts": [{"email": "ap@globex.example", "name": "AP", "roles": ["ap"]}],
        }
    ],
    "invoices": [
        {
            "id": "i-1042",
            "number": "INV-1042",
            "customer": "C-1",
            "currency": "EUR",
            "issued_at": "2026-03-01",
            "due_at": "2026-03-31",
            "status": "open",
            "lines": [
                {"description": "Support", "quantity": "2", "unit_price": "60.00"},
                {
                    "description": "Hosting",
                    "quantity": "1",
                    "unit_price": "80.00",
                    "tax_rate": "20",
                },
            ],
        }
    ],
    "credit_notes": [
        {
            "id": "cn-1",
            "number": "CN-7",
            "customer": "C-1",
            "currency": "EUR",
            "issued_at": "2026-03-01",
            "invoice": "i-1042",
            "reason": "Goodwill for the late delivery",
            "lines": [{"description": "Goodwill", "quantity": "1", "unit_price": "10.00"}],
        }
    ],
    "payments": [
        {
            "id": "p-1",
            "customer": "C-1",
            "amount": "100.00",
            "currency": "EUR",
            "received_at": "2026-03-01T14:00:00Z",
            "method": "Visa •••• 4242",
            "receipt_number": "RCPT-5521",
            "invoices": [{"invoice": "i-1042", "amount": "50.00"}],
        }
    ],
    "refunds": [
        {
            "id": "rf-1",
            "payment": "p-1",
            "amount": "20.00",
            "currency": "EUR",
            "refunded_at": "2026-03-02",
            "reason": "Duplicate charge",
            "method": "Visa •••• 4242",
            "receipt_number": "RF-310",
        }
    ],
    "estimates": [
        {
            "id": "est-9",
            "number": "EST-204",
            "customer": "C-1",
            "currency": "EUR",
            "issued_at": "2026-03-01",
            "valid_until": "2026-04-01",
            "status": "sent",
            "lines": [
                {
                    "description": "Migration",
                    "quantity": "3",
                    "unit_price": "400.00",
                    "tax_rate": "20",
                }
            ],
        }
    ],
}
# kind -> what its PDF must show and be called
EXPECTED = {
    "new_invoice": ("INV-1042", "INV-1042.pdf"),
    "credit_note": ("CN-7", "CN-7.pdf"),
    "estimate": ("EST-204", "EST-204.pdf"),
    "payment_receipt": ("RCPT-5521", "RCPT-5521.pdf"),
    "refund": ("RF-310", "RF-310.pdf"),
    "statement": ("INV-1042", None),
}


def _norm(text: str) -> str:
    return " ".join(text.split())


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    return _norm(" ".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages))


# -- end to end: import -> tick -> loopback SMTP, with the defaults ----------------------------


Delivered = dict[str, tuple[Message, EmailMessage | None]]
# One run per database backend, shared by this module's tests: the rows and parsed emails are
# plain data, and rendering every PDF twice per test would triple the module's time.
_RUNS: dict[str, Delivered] = {}


@pytest.fixture
def transport() -> None:
    """This module's shared services send over SMTP, to ``smtpd``."""
    return None


@pytest.fixture
def services_config(smtpd: Any) -> dict[str, Any]:
    """This module's shared ``services``: PDFs on (the defaults), the relay is ``smtpd``."""
    return {
        "pdfs": True,
        "relay": {"domain": "relay.example", "host": smtpd.host, "port": smtpd.port},
    }


@pytest.fixture
def services_options() -> dict[str, Any]:
    """This module's shared ``services`` render their PDFs in-process."""
    from mailer.content.pdf_pool import PDFRenderer

    return {"pdf_renderer": PDFRenderer(workers=0)}


@pytest.fixture
async def delivered(
    services: Services, db_url: str, clock: FixedClock, smtpd: Any
) -> AsyncIterator[Delivered]:
    """DOCUMENT imported with PDFs on (the defaults), one tick after the grace period and a
    statement by hand: each kind's message row and what the SMTP server received for it."""
    backend = db_url.split(":", 1)[0]
    if backend not in _RUNS:
        _RUNS[backend] = await _deliver(services, clock, smtpd)
    yield _RUNS[backend]


async def _deliver(services: Services, clock: FixedClock, smtpd: Any) -> Delivered:
    report = services.ledger.import_document(DOCUMENT, tenant="acme")
    assert report.errors == []
    clock.advance(timedelta(minutes=6))  # past the grace of invoices, notes and estimates
    await services.dunning.tick()
    await services.sending.send_statement("C-1", tenant="acme")
    with Session(services.engine) as session:
        messages = session.exec(select(Message).order_by(col(Message.id))).all()
    received: dict[str, EmailMessage] = {}
    for envelope in smtpd.envelopes:
        parsed = email.message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        uid = str(parsed["X-Dunmail-Message"] or "")
        received[uid] = parsed
    return {m.kind: (m, received.get(m.uid)) for m in messages}


async def test_every_kind_with_a_pdf_is_delivered_with_its_pdf(
    delivered: Delivered,
) -> None:
    assert sorted(delivered) == sorted(EXPECTED)
    problems: dict[str, str] = {}
    for kind, (number, filename) in EXPECTED.items():
        message, received = delivered[kind]
        if message.status.value != "sent" or received is None:
            problems[kind] = f"{message.status.value}: {message.last_error}"
            continue
        attachments = list(received.iter_attachments())
        if len(attachments) != 1:
            problems[kind] = f"{len(attachments)} attachments"
            continue
        [part] = attachments
        data = part.get_payload(decode=True)
        assert isinstance(data, bytes) and data.startswith(b"%PDF-")
        assert part.get_content_type() == "application/pdf"
        if filename is not None and part.get_filename() != filename:
            problems[kind] = f"attached as {part.get_filename()!r}, not {filename!r}"
        elif number not in _pdf_text(data):
            problems[kind] = f"{number} is not in the PDF's text"
    assert problems == {}


async def test_the_receipt_pdf_shows_each_paid_invoice_on_its_own_page(
    delivered: Delivered,
) -> None:
    from pypdf import PdfReader

    _, received = delivered["payment_receipt"]
    assert received is not None
    [part] = received.iter_attachments()
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)
    pages = [_norm(p.extract_text()) for p in PdfReader(io.BytesIO(data)).pages]
    assert len(pages) == 2
    assert "Payment receipt" in pages[0] and "RCPT-5521" in pages[0]
    assert "€100.00" in pages[0] and "€50.00" in pages[0]  # received, and applied to INV-1042
    assert "Left on account" in pages[0]
    assert "Invoice INV-1042" in pages[1]


async def test_the_refund_email_attaches_the_refund_receipt_it_names(
    delivered: Delivered,
) -> None:
    _, received = delivered["refund"]
    assert received is not None
    [part] = received.iter_attachments()
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)
    text = _pdf_text(data)
    assert "Refund receipt" in text and "RF-310" in text and "€20.00" in text
    body = received.get_body(preferencelist=("plain",))
    assert body is not None and "RF-310" in body.get_content()


# -- pure: the real context builders, for any ledger row ------------------------------------


def test_every_kind_with_a_pdf_has_a_template_for_its_context() -> None:
    """A kind's PDF reads the key its context holds: a refund's PDF is a refund receipt."""
    for kind in PDF_KINDS:
        pdf = KINDS[kind].pdf
        assert pdf in DOCUMENTS, kind
        shape = kinds.KINDS[kind].variables
        assert DOCUMENTS[pdf] in shape, f"{kind}: its context has no {DOCUMENTS[pdf]!r}"


@pytest.mark.parametrize("kind", PDF_KINDS)
def test_every_kinds_email_sample_renders_as_its_pdf(kind: str) -> None:
    """The email sample (typed by mailer.content.shapes) is a context the outbox could build."""
    pdf = KINDS[kind].pdf
    assert pdf is not None
    context = sample_context(kind, locale="en")
    pdf_context, _ = build_pdf_context(pdf, context)
    html = render_html(pdf, pdf_context)
    body = context[DOCUMENTS[pdf]]
    number = body.get("number") or body.get("receipt_number")
    target = plan_pdf(kind, context)
    assert target is not None and target.pdf == pdf
    if number is not None:  # a statement has none
        assert number in html
        assert target.filename == f"{number}.pdf"


@pytest.mark.parametrize("document", sorted(SHAPES))
def test_pdf_samples_have_exactly_the_typed_keys(document: str) -> None:
    """The PDF tests' sample data is what the real builders return: no key a context lacks."""
    context = sample_pdf_context(document)
    body = context[DOCUMENTS[document]]
    shape = SHAPES[document]
    assert shape.__required_keys__ <= set(body) <= set(get_type_hints(shape))  # type: ignore[attr-defined]


def test_receipts_and_credit_notes_queued_before_the_fix_render_when_retried() -> None:
    """Their snapshots lack what the PDFs now show (a credit note's version, the paid
    invoices' details): a message that failed on them renders once it is retried."""
    receipt = sample_context("payment_receipt", locale="en")
    for paid in receipt["payment"]["invoices"]:
        del paid["invoice"]
    html = render_html("receipt", build_pdf_context("receipt", receipt)[0])
    assert "RCPT-5521" in html and "INV-1042" in html
    note = sample_context("credit_note", locale="en")
    del note["credit_note"]["version"]
    assert "CN-88" in render_html("credit_note", build_pdf_context("credit_note", note)[0])


_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=20
)
_MAYBE = st.none() | _TEXT
_AMOUNT = st.integers(min_value=1, max_value=10**9)
_AT = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)


@st.composite
def _lines(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(min_value=0, max_value=3))
    lines = []
    for _ in range(count):
        net = draw(st.integers(min_value=-(10**6), max_value=10**8))
        tax = draw(st.integers(min_value=0, max_value=10**7))
        lines.append(
            {
                "description": draw(_TEXT),
                "quantity": draw(st.sampled_from(["1", "2.5", "0.125", "-1"])),
                "unit_price_minor": draw(st.integers(min_value=-(10**6), max_value=10**8)),
                "tax_rate": draw(st.sampled_from([None, "0", "19", "7.5"])),
                "net_minor": net,
                "tax_minor": tax,
                "total_minor": net + tax,
            }
        )
    return lines


@st.composite
def _invoice(draw: st.DrawFn) -> Invoice:
    lines = draw(_lines())
    issued = draw(_AT)
    total = sum(line["total_minor"] for line in lines)
    return Invoice(
        tenant_id=1,
        customer_id=1,
        content_hash="sample",
        external_id="i-1",
        number=draw(_TEXT),
        currency=draw(st.sampled_from(["EUR", "JPY", "KWD", "USD"])),
        issued_at=issued,
        due_at=issued + timedelta(days=draw(st.integers(0, 90))),
        total_minor=total,
        tax_minor=sum(line["tax_minor"] for line in lines),
        balance_minor=draw(st.integers(min_value=0, max_value=max(total, 0))),
        lines=lines,
        version=draw(st.integers(min_value=1, max_value=9)),
    )


def _party(locale: str) -> dict[str, Any]:
    return {
        "locale": locale,
        "tenant": {"name": "Acme", "email": "ar@acme.example"},
        "customer": {"name": "Globex", "id": "C-1"},
        "links": {},
    }


def _renders(pdf: str, context: dict[str, Any], number: str) -> None:
    pdf_context, _ = build_pdf_context(pdf, context)
    html = render_html(pdf, pdf_context)
    escaped = number.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    escaped = escaped.replace('"', "&#34;").replace("'", "&#39;")
    assert escaped in html


_LOCALES = st.sampled_from(["en", "de", "ar", "ja"])
_PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY
@given(invoice=_invoice(), locale=_LOCALES)
def test_any_invoice_context_renders_its_pdf(invoice: Invoice, locale: str) -> None:
    _renders("invoice", {**_party(locale), "invoice": invoice_data(invoice)}, invoice.number)


@_PROPERTY
@given(
    lines=_lines(),
    version=st.integers(min_value=1, max_value=9),
    invoice_number=_MAYBE,
    reason=_MAYBE,
    number=_TEXT,
    at=_AT,
    locale=_LOCALES,
)
def test_any_credit_note_context_renders_its_pdf(
    lines: list[dict[str, Any]],
    version: int,
    invoice_number: str | None,
    reason: str | None,
    number: str,
    at: datetime,
    locale: str,
) -> None:
    note = CreditNote(
        tenant_id=1,
        customer_id=1,
        external_id="cn-1",
        number=number,
        currency="EUR",
        amount_minor=sum(line["total_minor"] for line in lines),
        issued_at=at,
        lines=lines,
        reason=reason,
        version=version,
    )
    context = {**_party(locale), **credit_note_context(note, invoice_number)}
    _renders("credit_note", context, number)


@_PROPERTY
@given(
    amount=_AMOUNT,
    invoices=st.lists(_invoice(), max_size=3),
    receipt_number=_MAYBE,
    method=_MAYBE,
    at=_AT,
    locale=_LOCALES,
)
def test_any_payment_context_renders_its_receipt(
    amount: int,
    invoices: list[Invoice],
    receipt_number: str | None,
    method: str | None,
    at: datetime,
    locale: str,
) -> None:
    payment = Payment(
        tenant_id=1,
        customer_id=1,
        external_id="p-1",
        amount_minor=amount,
        currency="EUR",
        received_at=at,
        method=method,
        receipt_number=receipt_number,
    )
    paid = [(invoice, min(amount, max(invoice.total_minor, 1))) for invoice in invoices]
    context = {**_party(locale), **payment_context(payment, paid)}
    _renders("receipt", context, receipt_number or "p-1")


@_PROPERTY
@given(
    amount=_AMOUNT,
    receipt_number=_MAYBE,
    method=_MAYBE,
    reason=_MAYBE,
    at=_AT,
    locale=_LOCALES,
)
def test_any_refund_context_renders_its_receipt(
    amount: int,
    receipt_number: str | None,
    method: str | None,
    reason: str | None,
    at: datetime,
    locale: str,
) -> None:
    payment = Payment(
        tenant_id=1,
        customer_id=1,
        external_id="p-1",
        amount_minor=amount,
        currency="EUR",
        received_at=at - timedelta(days=1),
    )
    refund = Refund(
        tenant_id=1,
        customer_id=1,
        payment_id=1,
        external_id="rf-1",
        amount_minor=amount,
        currency="EUR",
        refunded_at=at,
        method=method,
        reason=reason,
        receipt_number=receipt_number,
    )
    context = {**_party(locale), **refund_context(refund, payment)}
    _renders("refund", context, receipt_number or "rf-1")


@_PROPERTY
@given(lines=_lines(), number=_TEXT, at=_AT, version=st.integers(1, 9), locale=_LOCALES)
def test_any_estimate_context_renders_its_pdf(
    lines: list[dict[str, Any]], number: str, at: datetime, version: int, locale: str
) -> None:
    estimate = Estimate(
        tenant_id=1,
        customer_id=1,
        content_hash="sample",
        external_id="est-1",
        number=number,
        currency="EUR",
        issued_at=at,
        valid_until=at + timedelta(days=30),
        status=EstimateStatus.SENT,
        total_minor=sum(line["total_minor"] for line in lines),
        tax_minor=sum(line["tax_minor"] for line in lines),
        lines=lines,
        version=version,
    )
    _renders("estimate", {**_party(locale), **estimate_context(estimate)}, number)


@_PROPERTY
@given(
    moves=st.lists(
        st.tuples(
            _AT,
            st.sampled_from(["invoice", "payment", "credit_note", "refund"]),
            _TEXT,
            st.integers(min_value=1, max_value=10**7),
        ),
        min_size=1,
        max_size=6,
    ),
    style=st.sampled_from(["open_item", "balance_forward"]),
    locale=_LOCALES,
)
def test_any_statement_context_renders_its_pdf(
    moves: list[tuple[datetime, Any, str, int]], style: Any, locale: str
) -> None:
    transactions = [
        Transaction(
            at,
            kind,
            reference,
            "EUR",
            amount if kind == "invoice" else -amount,
            due_at=at + timedelta(days=30) if kind == "invoice" else None,
            open_minor=amount if kind == "invoice" else 0,
        )
        for at, kind, reference, amount in moves
    ]
    start = min(at for at, *_ in moves)
    content = statement(
        style, transactions, currency="EUR", start=start, end=start + timedelta(days=3660)
    )
    if content is None:
        return
    first = content["statement"]["items"][0]["reference"] if content["statement"]["items"] else ""
    _renders("statement", {**_party(locale), **content}, first)
