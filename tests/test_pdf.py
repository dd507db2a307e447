"""PDFs: every document renders, in-process and in worker processes, safely on hostile input."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pypdf import PdfReader

from tests.conftest import WEASYPRINT_SKIP
from tests.test_cli import ROOT

if WEASYPRINT_SKIP:
    pytest.skip(WEASYPRINT_SKIP, allow_module_level=True)

from mailer.content import pdf  # noqa: E402  (after the skip: importing it needs Pango)
from mailer.content.formatting import format_day, format_money
from mailer.content.pdf import RenderedPDF, render_document, render_key
from mailer.content.pdf_fetch import MAX_ASSET_BYTES, safe_fetcher
from mailer.content.pdf_html import PDFError, render_html
from mailer.content.pdf_pool import PDFRenderer
from mailer.content.pdf_samples import sample_pdf_context
from mailer.errors import MailerError, TemplateError

DOCUMENTS = [
    ("invoice", {}),
    ("credit_note", {}),
    ("estimate", {}),
    ("receipt", {}),
    ("refund", {}),
    ("statement", {"mode": "open_item"}),
    ("statement", {"mode": "balance_forward"}),
]
IDS = [
    "invoice",
    "credit_note",
    "estimate",
    "receipt",
    "refund",
    "statement-open",
    "statement-forward",
]


def norm(text: str) -> str:
    """Whitespace collapsed, no-break spaces too: pypdf splits lines and cells its own way."""
    return " ".join(text.split())


def text_of(data: bytes) -> str:
    """All text of a PDF, normalised like :func:`norm`."""
    return norm(" ".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages))


def page_count(data: bytes) -> int:
    return len(PdfReader(io.BytesIO(data)).pages)


def day(value: str, fmt: str = "medium", locale: str = "en") -> str:
    from datetime import datetime

    return format_day(datetime.fromisoformat(value).date(), fmt, locale)


def expected_texts(document: str, context: dict[str, Any]) -> list[str]:
    """What a reader must find: the number, the formatted amounts, the dates."""
    money = format_money
    if document in ("invoice", "credit_note", "estimate"):
        doc = context[document]
        total = doc["amount_minor"] if document == "credit_note" else doc["total_minor"]
        found = [
            doc["number"],
            day(doc["issued_at"]),
            money(total, doc["currency"], "en"),
        ]
        found.append(money(doc["tax_minor"], doc["currency"], "en"))
        if document == "invoice":
            found.append(day(doc["due_at"]))
        if document == "estimate":
            found.append(day(doc["valid_until"]))
        return found
    if document == "receipt":
        payment = context["payment"]
        found = [
            payment["receipt_number"],
            money(payment["amount_minor"], payment["currency"], "en"),
        ]
        found.append(day(payment["received_at"]))
        for paid in payment["invoices"]:
            found += [paid["number"], day(paid["invoice"]["due_at"])]
        return found
    if document == "refund":
        refund = context["refund"]
        found = [refund["receipt_number"], money(refund["amount_minor"], refund["currency"], "en")]
        return found + [day(refund["refunded_at"]), day(refund["payment_received_at"])]
    statement = context["statement"]
    found = [day(statement["period_start"]), day(statement["period_end"])]
    found.append(money(statement["closing_balance_minor"], statement["currency"], "en"))
    return found + [item["reference"] for item in statement["items"]]


# --- every document --------------------------------------------------------------------------


@pytest.mark.parametrize(("document", "options"), DOCUMENTS, ids=IDS)
def test_every_document_renders_in_process(document: str, options: dict[str, Any]) -> None:
    context = sample_pdf_context(document, **options)
    rendered = render_document(document, context)
    assert rendered.data.startswith(b"%PDF-")
    text = text_of(rendered.data)
    for expected in expected_texts(document, context):
        assert expected in text
    assert "Acme Supplies Ltd" in text  # the branding: name, address, footer
    assert "Registered in England" in text
    assert "Page 1 of" in text


async def test_every_document_renders_through_the_pool_to_the_same_bytes() -> None:
    contexts = [(d, sample_pdf_context(d, **options)) for d, options in DOCUMENTS]
    renderer = PDFRenderer(workers=2)
    try:
        await renderer.start()
        pooled = await asyncio.gather(*(renderer.render(d, c) for d, c in contexts))
        # A worker dies while idle (the OOM killer): a fresh one takes its place unnoticed.
        first = await renderer.start()
        os.kill(first[0], signal.SIGKILL)
        await asyncio.sleep(0.2)
        again = await renderer.render("invoice", sample_pdf_context("invoice", lines=2))
        assert again.data.startswith(b"%PDF-") and first[0] not in renderer.worker_pids()
        # A worker dies during a render (a crash in C): that render fails with a clear error,
        # and the next one gets a fresh worker.
        busy = asyncio.ensure_future(
            renderer.render("invoice", sample_pdf_context("invoice", lines=400))
        )
        await asyncio.sleep(0.3)
        for pid in renderer.worker_pids():
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(PDFError, match="worker process died"):
            await busy
        after = await renderer.render("invoice", sample_pdf_context("invoice", lines=3))
        assert after.data.startswith(b"%PDF-")
    finally:
        await renderer.close()
    for (document, context), result in zip(contexts, pooled, strict=True):
        assert result.data.startswith(b"%PDF-")
        assert result.sha256 == render_document(document, context).sha256  # any process, same PDF
    with pytest.raises(PDFError, match="closed"):
        await renderer.render("invoice", contexts[0][1])


_ENGINE = """
import asyncio
from mailer.content.pdf_pool import PDFRenderer

async def main() -> None:
    pids = await PDFRenderer(workers=2).start()
    print(*pids, flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


def test_workers_of_a_killed_engine_exit_by_themselves() -> None:
    engine = subprocess.Popen(
        [sys.executable, "-c", _ENGINE],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert engine.stdout is not None
        workers = [int(pid) for pid in engine.stdout.readline().split()]
        assert workers and all(_alive(pid) for pid in workers)
    finally:
        engine.kill()  # SIGKILL: no atexit, no pool shutdown
        engine.wait()
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "render workers outlived their engine"


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_receipt_has_a_page_per_paid_invoice() -> None:
    rendered = render_document("receipt", sample_pdf_context("receipt", paid=3))
    assert rendered.pages == page_count(rendered.data) == 1 + 3
    pages = PdfReader(io.BytesIO(rendered.data)).pages
    assert "Payment receipt" in pages[0].extract_text()
    for page, number in zip(
        pages[1:], ["INV-2026-0040", "INV-2026-0041", "INV-2026-0042"], strict=True
    ):
        assert f"Invoice {number}" in page.extract_text()


def test_statement_modes_differ_and_unknown_mode_is_refused() -> None:
    forward = text_of(
        render_document("statement", sample_pdf_context("statement", mode="balance_forward")).data
    )
    assert "Opening balance" in forward and "Closing balance" in forward
    open_item = text_of(render_document("statement", sample_pdf_context("statement")).data)
    assert "Total open" in open_item and "Opening balance" not in open_item
    context = sample_pdf_context("statement")
    context["statement"]["style"] = "weekly"
    with pytest.raises(PDFError, match="statement.style"):
        render_document("statement", context)


def test_the_email_statement_context_renders_as_its_pdf() -> None:
    """The statement email and its PDF read one context shape
    (mailer.content.shapes.StatementData)."""
    from mailer.content.samples import sample_context

    context = sample_context("statement", locale="en")
    text = text_of(render_document("statement", context).data)
    first = context["statement"]["items"][0]
    assert first["reference"] in text


def test_a_500_line_invoice_renders_on_several_pages() -> None:
    context = sample_pdf_context("invoice", lines=500)
    rendered = render_document("invoice", context)
    assert rendered.pages > 5
    text = text_of(rendered.data)
    assert "work package 500" in text
    assert format_money(context["invoice"]["total_minor"], "EUR", "en") in text
    assert f"Page {rendered.pages} of {rendered.pages}" in text


# --- hostile and unusual input ------------------------------------------------------------------


def test_script_in_a_name_is_shown_literally() -> None:
    name = '<script>alert("x")</script> & Co'
    context = sample_pdf_context("invoice", customer_name=name)
    html = render_html("invoice", context)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert name in text_of(render_document("invoice", context).data)


@pytest.mark.parametrize(
    "name",
    [
        "شركة الخليج للتجارة",
        "חברת הדוגמה בע״מ",
        "Café 😀🚀 Ltd",
        "Ελληνική Εταιρεία",
        "ООО «Ромашка»",
    ],
    ids=["arabic", "hebrew", "emoji", "greek", "cyrillic"],
)
def test_other_scripts_render(name: str) -> None:
    context = sample_pdf_context("invoice", customer_name=name, lines=2)
    rendered = render_document("invoice", context)
    assert rendered.data.startswith(b"%PDF-") and rendered.pages == 1
    assert "INV-2026-0042" in text_of(rendered.data)


@pytest.mark.parametrize(
    ("currency", "locale"), [("JPY", "en"), ("KWD", "en"), ("EUR", "de"), ("KWD", "fr")]
)
def test_currencies_with_zero_or_three_decimals(currency: str, locale: str) -> None:
    context = sample_pdf_context("invoice", currency=currency, locale=locale, lines=3)
    invoice = context["invoice"]
    text = text_of(render_document("invoice", context).data)
    for amount in (invoice["total_minor"], invoice["tax_minor"], invoice["lines"][0]["net_minor"]):
        assert norm(format_money(amount, currency, locale)) in text
    assert norm(day(invoice["due_at"], locale=locale)) in text


def test_a_right_to_left_locale_renders() -> None:
    # Text extraction reorders right-to-left runs, so only the rendering itself is checked.
    rendered = render_document(
        "invoice", sample_pdf_context("invoice", currency="KWD", locale="ar")
    )
    assert rendered.pages == 1 and rendered.missing_glyphs == ()


def test_characters_no_font_draws_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    # U+0378 is unassigned, so no font anywhere has it; it is drawn as a box, and reported.
    context = sample_pdf_context("invoice", customer_name="Odd \u0378 Name", lines=1)
    with caplog.at_level(logging.WARNING, logger="mailer.content.pdf"):
        rendered = render_document("invoice", context)
    assert rendered.missing_glyphs == ("U+0378",)
    assert "U+0378" in caplog.text
    assert render_document("invoice", sample_pdf_context("invoice", lines=1)).missing_glyphs == ()


def test_missing_logo_renders_without_it_and_a_given_logo_is_drawn() -> None:
    context = sample_pdf_context("invoice", lines=1)
    context["tenant"]["logo_url"] = "asset:logo.png"
    without = render_document("invoice", context)  # named but not handed in
    assert b"/Image" not in without.data
    png = io.BytesIO()
    Image.new("RGB", (120, 40), (11, 110, 79)).save(png, format="PNG")
    drawn = render_document("invoice", context, assets={"asset:logo.png": png.getvalue()})
    assert b"/Image" in drawn.data


def test_a_broken_logo_or_tenant_css_still_renders() -> None:
    context = sample_pdf_context("invoice", lines=1)
    context["tenant"]["logo_url"] = "asset:logo.png"
    broken_css = "}}} .letterhead { color: ;;; @media { h1 { font-size: -5pt } body { display: no"
    rendered = render_document(
        "invoice", context, assets={"asset:logo.png": b"\x89PNG not really"}, tenant_css=broken_css
    )
    assert "INV-2026-0042" in text_of(rendered.data)


def test_tenant_css_applies_but_is_capped() -> None:
    context = sample_pdf_context("invoice", lines=1)
    styled = render_document("invoice", context, tenant_css="h1 { font-size: 30pt }")
    assert styled.sha256 != render_document("invoice", context).sha256
    with pytest.raises(PDFError, match="tenant CSS"):
        render_document("invoice", context, tenant_css="a{}" * 30_000)


def test_brand_colour_cannot_inject_css() -> None:
    context = sample_pdf_context("invoice", lines=1)
    context["tenant"]["brand_color"] = "red; } @import url(http://127.0.0.1:9/x.css); html {"
    html = render_html("invoice", context)
    assert "@import" not in html and "--brand: #1f6feb;" in html
    context["tenant"]["brand_color"] = "#AbC"
    assert "--brand: #AbC;" in render_html("invoice", context)


class _Recorder(BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/css")
        self.end_headers()
        self.wfile.write(b"body { color: red }")

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[str]]]:
    """A real loopback HTTP server that records every request (none may arrive)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.requests
    finally:
        server.shutdown()
        server.server_close()


def test_weasyprint_fetches_nothing_it_was_not_given(
    http_server: tuple[str, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    base, requests = http_server
    context = sample_pdf_context("invoice", lines=1)
    context["tenant"]["logo_url"] = f"{base}/logo.png"
    tenant_css = (
        f"@import url({base}/import.css);\n"
        f".letterhead {{ background-image: url({base}/bg.png) }}\n"
        ".tenant-name::after { content: url(file:///etc/passwd) }\n"
        "h1 { background-image: url(https://example.com/x.png) }\n"
        ".note { background-image: url(data:image/png;base64,iVBORw0KGgo=) }\n"
        f"@font-face {{ font-family: Evil; src: url({base}/font.ttf) }}\n"
        "html { font-family: Evil }\n"
    )
    with caplog.at_level(logging.WARNING, logger="mailer.content.pdf_fetch"):
        rendered = render_document("invoice", context, tenant_css=tenant_css)
    assert requests == []  # the loopback server saw nothing
    refused = " ".join(r.getMessage() for r in caplog.records if "refused" in r.getMessage())
    for url in (
        f"{base}/import.css",
        f"{base}/bg.png",
        "file:///etc/passwd",
        "https://example.com",
    ):
        assert url in refused
    assert "data:image/png" in refused
    assert "root:" not in text_of(rendered.data)
    assert b"/Image" not in rendered.data


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.css",
        "https://example.com/logo.png",
        "file:///etc/passwd",
        "data:text/css,body{}",
        "ftp://example.com/x",
        "asset:other.png",
        "asset:logo.png?x",
        "logo.png",
    ],
)
def test_fetcher_refuses_everything_but_its_assets(url: str) -> None:
    fetcher = safe_fetcher({"asset:logo.png": b"png bytes"})
    with pytest.raises(PermissionError):
        fetcher.fetch(url)
    assert fetcher.refused and fetcher.served == []
    response = fetcher.fetch("asset:logo.png")
    assert response.read() == b"png bytes" and response.content_type == "image/png"
    assert fetcher.handlers == []  # not even urllib's open() could reach out


def test_fetcher_refuses_bad_asset_names_and_huge_assets() -> None:
    with pytest.raises(PDFError, match="asset:logo.png"):
        safe_fetcher({"/etc/passwd": b""})
    with pytest.raises(PDFError, match="limit"):
        safe_fetcher({"asset:huge.png": b"\0" * (MAX_ASSET_BYTES + 1)})
    assert safe_fetcher({"asset:x": (b"a", "image/svg+xml")}).fetch("asset:x").content_type == (
        "image/svg+xml"
    )


# --- errors -------------------------------------------------------------------------------------


def test_template_problems_are_template_errors_with_name_and_line(tmp_path: Path) -> None:
    context = sample_pdf_context("invoice")
    del context["invoice"]["due_at"]
    with pytest.raises(TemplateError, match=r"_parts\.html:\d+: .*due_at"):
        render_html("invoice", context)
    with pytest.raises(TemplateError, match="no PDF template"):
        render_html("../email/_layout", context)
    with pytest.raises(TemplateError, match="no 'payment'"):
        render_html("receipt", context)
    (tmp_path / "invoice.html").write_text("line one\n{% if %}\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"invoice\.html:2"):
        render_html("invoice", sample_pdf_context("invoice"), root=tmp_path)


def test_a_weasyprint_failure_is_a_pdf_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Exploding:  # no input is known to crash WeasyPrint 70, so stand in for one
        def __init__(self, **kwargs: Any) -> None:
            raise AssertionError("layout went wrong")

    monkeypatch.setattr(pdf, "HTML", Exploding)
    with pytest.raises(
        PDFError, match="WeasyPrint could not render invoice: AssertionError"
    ) as exc:
        render_document("invoice", sample_pdf_context("invoice", lines=1))
    assert isinstance(exc.value, MailerError)


# --- identity: hash, determinism, reuse ---------------------------------------------------------


def test_same_input_same_bytes_and_hash() -> None:
    context = sample_pdf_context("invoice", lines=3)
    first, second = render_document("invoice", context), render_document("invoice", context)
    assert first == second
    assert len(first.sha256) == 64
    context["invoice"]["version"] = 2
    assert render_document("invoice", context).sha256 != first.sha256


def test_render_key_covers_context_assets_and_css() -> None:
    context = sample_pdf_context("invoice", lines=1)
    key = render_key("invoice", context)
    assert key == render_key("invoice", sample_pdf_context("invoice", lines=1))
    assert key != render_key("credit_note", context)
    assert key != render_key("invoice", context, assets={"asset:logo.png": b"a"})
    assert render_key("invoice", context, assets={"asset:logo.png": b"a"}) != render_key(
        "invoice", context, assets={"asset:logo.png": b"b"}
    )
    assert key != render_key("invoice", context, tenant_css="h1{}")


async def test_an_unchanged_version_renders_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = pdf.render_document

    def counting(document: str, context: dict[str, Any], **kwargs: Any) -> RenderedPDF:
        calls.append(document)
        return real(document, context, **kwargs)

    monkeypatch.setattr("mailer.content.pdf_pool.render_document", counting)
    renderer = PDFRenderer(workers=0)
    context = sample_pdf_context("invoice", lines=1)
    try:
        together = await asyncio.gather(*(renderer.render("invoice", context) for _ in range(3)))
        again = await renderer.render("invoice", sample_pdf_context("invoice", lines=1))
        context["invoice"]["version"] = 2
        changed = await renderer.render("invoice", context)
    finally:
        await renderer.close()
    assert calls == ["invoice", "invoice"]
    assert together[0] is together[1] is together[2] is again
    assert changed.sha256 != again.sha256
