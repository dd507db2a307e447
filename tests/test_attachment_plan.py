"""Which PDF an email carries and the notice that replaces one too large to attach.

Pure parts of ``mailer/content/attachment.py``: no WeasyPrint needed, so these run everywhere.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from mailer.content.attachment import file_stem, plan_pdf, with_download_notice
from mailer.content.render import Renderer
from mailer.outbound.compose import Rendered


def _notice(locale: str) -> Rendered:
    rendered = Rendered(subject="s", text="Hello\n", html="<html><body><p>Hello</p></body></html>")
    text, markup = Renderer().snippet(
        "download_notice",
        {"locale": locale, "fallback_locale": "en"},
        url="https://x.example/d/a.b?c&d",
        filename="I<1>.pdf",
    )
    return with_download_notice(rendered, text=text, html=markup)


def test_download_notice_goes_into_both_parts_escaped() -> None:
    linked = _notice("en")
    assert linked.text.startswith("Hello\n\n")
    assert "too large to attach" in linked.text
    assert "https://x.example/d/a.b?c&d" in linked.text
    assert linked.html is not None
    assert linked.html.endswith("</p>\n</body></html>")
    assert 'href="https://x.example/d/a.b?c&amp;d"' in linked.html
    assert "I&lt;1&gt;.pdf" in linked.html and "I<1>" not in linked.html


@pytest.mark.parametrize(
    ("locale", "phrase"),
    [("es", "demasiado grande"), ("fr", "trop volumineux"), ("ro", "prea mare")],
)
def test_download_notice_speaks_the_customers_language(locale: str, phrase: str) -> None:
    linked = _notice(locale)
    assert phrase in linked.text
    assert linked.html is not None and phrase in linked.html
    assert "too large" not in linked.text


def test_plan_pdf_names_the_document_version_and_file() -> None:
    context = {"invoice": {"number": "INV/2026/7", "version": 4}, "days_overdue": 3}
    target = plan_pdf("late_payment_reminder", context, invoice_id=42, version=4)
    assert target is not None
    assert (target.pdf, target.document, target.version) == ("invoice", "invoice:42", 4)
    assert target.filename == "INV-2026-7.pdf"
    assert plan_pdf("new_invoice", context) == replace(target, document="invoice:INV/2026/7")
    # a receipt is named by its receipt number, as the real payment context carries it
    receipt = plan_pdf("payment_receipt", {"payment": {"receipt_number": "PAY-1"}})
    assert receipt is not None and receipt.document == "receipt:PAY-1" and receipt.version == 0
    assert receipt.filename == "PAY-1.pdf"
    assert plan_pdf("autopay_failed", context) is None  # the kind has no PDF
    assert plan_pdf("new_invoice", {"days_overdue": 3}) is None  # no document in the context
    assert plan_pdf("no_such_kind", context) is None


def test_file_stem_keeps_numbers_readable_and_safe() -> None:
    assert file_stem("INV-1042") == "INV-1042"
    assert file_stem('..\\a/b:"c"\r\n') == "-a-b--c---"
    assert file_stem("...") == "document"
