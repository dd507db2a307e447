"""A statement's open invoices as PDF attachments, within the message size budget; those beyond
it listed with signed View / PDF links (``[tenants.<slug>.emails.statement] attach_invoices``).

The statement's context carries the invoices it lists (``invoice_pdfs``: row id, version and
data, frozen when it was queued: scheduler/statement_invoices.py). Each PDF comes from the same
store as the invoice's own emails (document ``invoice:<id>`` at its version), so every email
about an invoice version carries the same bytes, and a retry the same message.

The budget is the endpoint's ``max_message_bytes`` (``Sender.max_message_bytes``): invoices are
attached in the statement's order while the whole message, signature included, stays within it.
From the first that does not fit, the rest are linked (a prefix: the statement's order is the
customer's, oldest first). Never a silent drop: each linked invoice gets the download notice
with its PDF and View links, in the email's language.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailer.content.attachment import file_stem
from mailer.content.pdf_html import PDFError
from mailer.outbound.links import LinkMinter

log = logging.getLogger(__name__)

INVOICE_PDFS = "invoice_pdfs"  # the context key: [{"id", "version", "invoice"}, ...]
# What the DKIM-Signature fields (one per key) and the notice's growth may add once measured.
SIGNATURE_RESERVE = 4096
_PART_OVERHEAD = 400  # an attachment part's boundary and header lines, with a long file name


@dataclass(frozen=True)
class InvoicePDF:
    """One listed invoice: where its PDF is, and its bytes (None: it could not be rendered,
    so it is linked whatever the budget)."""

    document: str  # "invoice:42"
    version: int
    filename: str  # "INV-1042.pdf"
    invoice: Mapping[str, Any]  # its InvoiceData: the PDF's content, the links' expiry
    data: bytes | None = None


def listed_invoices(context: Mapping[str, Any]) -> list[InvoicePDF]:
    """The invoices a statement's context asks to attach, without their bytes; entries of the
    wrong shape (a hand-edited row) are left out rather than failing the statement."""
    found: list[InvoicePDF] = []
    entries = context.get(INVOICE_PDFS)
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping):
            continue
        row, version, invoice = entry.get("id"), entry.get("version"), entry.get("invoice")
        if not isinstance(row, int) or not isinstance(version, int):
            continue
        if not isinstance(invoice, Mapping) or not invoice.get("number"):
            continue
        number = str(invoice["number"])
        found.append(InvoicePDF(f"invoice:{row}", version, f"{file_stem(number)}.pdf", invoice))
    return found


def pdf_context(context: Mapping[str, Any], invoice: InvoicePDF) -> dict[str, Any]:
    """The context an invoice's PDF is rendered from: the statement email's parties (tenant,
    customer, language, zone) with this invoice, as the invoice's own emails give it."""
    kept = {k: v for k, v in context.items() if k not in (INVOICE_PDFS, "statement", "links")}
    return {**kept, "invoice": dict(invoice.invoice)}


def attachment_size(data: bytes) -> int:
    """The octets an attached PDF adds: base64 in 76-character CRLF lines, plus its part's
    boundary and headers (mailer/outbound/mime.py writes it so)."""
    return (len(data) + 56) // 57 * 78 + _PART_OVERHEAD


def plan_invoice_attachments(
    base_bytes: int, invoices: Sequence[InvoicePDF], *, limit: int | None
) -> tuple[list[InvoicePDF], list[InvoicePDF]]:
    """PURE: (attached, linked). ``base_bytes`` is the message without the invoices; they are
    attached in order while it stays within ``limit`` (None: no limit), the rest linked."""
    used = base_bytes + SIGNATURE_RESERVE
    for n, invoice in enumerate(invoices):
        if invoice.data is None:
            return list(invoices[:n]), list(invoices[n:])
        used += attachment_size(invoice.data)
        if limit is not None and used > limit:
            return list(invoices[:n]), list(invoices[n:])
    return list(invoices), []


def link_entries(
    invoices: Sequence[InvoicePDF],
    *,
    minter: LinkMinter,
    tenant_id: int,
    message: str | None,
    created_at: datetime,
) -> list[dict[str, Any]]:
    """The notice's entries: each linked invoice's file name with its signed PDF and View links
    (deterministic for a message, like every link it carries, so a retry is the same bytes)."""
    entries = []
    for invoice in invoices:
        links = minter.links(
            ("download", "view"),
            tenant_id=tenant_id,
            message=message,
            document=invoice.document,
            version=invoice.version,
            context={"invoice": invoice.invoice},
            created_at=created_at,
        )
        entries.append(
            {"filename": invoice.filename, "pdf": links["download"], "view": links["view"]}
        )
    return entries


def rendering_failed(invoice: InvoicePDF, exc: PDFError, uid: str) -> InvoicePDF:
    """An invoice whose PDF could not be made (page limit, render budget): linked instead."""
    log.warning("message %s: %s not attached: %s", uid, invoice.filename, exc)
    return invoice
