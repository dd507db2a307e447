"""PURE: which PDF an email carries, and the notice that replaces a PDF too large to attach.

Kept apart from ``mailer/content/pdf.py`` so the outbox decides about PDFs without importing
WeasyPrint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from mailer.content.kinds import KINDS
from mailer.outbound.compose import Rendered

# The context key holding each PDF document's data: the same table as
# mailer.content.pdf_html.DOCUMENTS,
# repeated so this module need not import the PDF renderer (a test checks that the two agree).
PDF_CONTEXT_KEYS = {
    "invoice": "invoice",
    "credit_note": "credit_note",
    "estimate": "estimate",
    "receipt": "payment",
    "refund": "refund",
    "statement": "statement",
}


@dataclass(frozen=True)
class PDFTarget:
    """The PDF an email carries: its template, the document version it shows, its file name."""

    pdf: str  # the template: "invoice"
    document: str  # "invoice:42"
    version: int
    filename: str  # "INV-1042.pdf"


def plan_pdf(
    kind: str,
    context: Mapping[str, Any],
    *,
    invoice_id: int | None = None,
    version: int | None = None,
) -> PDFTarget | None:
    """The PDF an email of ``kind`` attaches (``KINDS[kind].pdf``), or None.

    None too when the context lacks the document. An invoice is named by its row
    (``invoice:42``), as its emails are enqueued; any other document by the number (or a
    receipt's ``receipt_number``) in the context (``credit_note:CN-7``, ``refund:RF-310``).
    ``version`` is the message's ``document_version``, else the context's, else 0.
    """
    spec = KINDS.get(kind)
    if spec is None or spec.pdf is None:
        return None
    body = context.get(PDF_CONTEXT_KEYS.get(spec.pdf, spec.pdf))
    if not isinstance(body, Mapping):
        return None
    number = str(body.get("number") or body.get("receipt_number") or spec.pdf)
    if spec.pdf == "invoice" and invoice_id is not None:
        document = f"invoice:{invoice_id}"
    else:
        document = f"{spec.pdf}:{number}"
    found = version if version is not None else body.get("version")
    return PDFTarget(
        spec.pdf, document, found if isinstance(found, int) else 0, f"{file_stem(number)}.pdf"
    )


def file_stem(number: str) -> str:
    """A document number as a file name: no path separators, control or quoting characters."""
    stem = "".join(c if c.isprintable() and c not in '/\\:*?"<>|' else "-" for c in number)
    return stem.strip(". ")[:100] or "document"


def with_download_notice(rendered: Rendered, *, text: str, html: str) -> Rendered:
    """``rendered`` with a closing paragraph, in the text and the HTML part, saying where to
    download the PDF that was too large to attach.

    The paragraph is ``Renderer.snippet("download_notice", ...)``: added here rather than
    through each kind's templates, so every kind and every tenant override says it.
    """
    body = rendered.text.rstrip("\n") + "\n\n" + text.strip() + "\n"
    markup = None
    if rendered.html is not None:
        paragraph = html.strip() + "\n"
        head, found, tail = rendered.html.rpartition("</body>")
        markup = head + paragraph + found + tail if found else rendered.html + paragraph
    return replace(rendered, text=body, html=markup)
