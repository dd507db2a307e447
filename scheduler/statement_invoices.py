"""SERVICE: the open invoices a statement lists, frozen into its email so it can attach each
one's PDF (``[tenants.<slug>.emails.statement] attach_invoices``).

Read in the transaction that queues the statement, like the rest of its context: the email then
carries exactly the invoice versions it listed, whatever changes later, and the PDFs come from
the same store (document ``invoice:<id>``, its version) as the invoices' own emails.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlmodel import Session, col, select

from mailer.content.event_context import invoice_data
from mailer.ledger.models import Invoice, InvoiceStatus
from mailer.outbound.assemble_invoices import INVOICE_PDFS

__all__ = ["INVOICE_PDFS", "open_invoice_pdfs"]


def open_invoice_pdfs(
    session: Session, *, tenant_id: int, customer_id: int, statement: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Each open invoice of the customer that ``statement`` lists, in the statement's order:
    its row id, version and data (what its PDF shows). Paid or void ones are left out."""
    items = statement.get("items")
    if not isinstance(items, list):
        return []
    numbers = [
        str(i["reference"]) for i in items if isinstance(i, Mapping) and i.get("type") == "invoice"
    ]
    if not numbers:
        return []
    rows = session.exec(
        select(Invoice).where(
            col(Invoice.tenant_id) == tenant_id,
            col(Invoice.customer_id) == customer_id,
            col(Invoice.number).in_(numbers),
            col(Invoice.status) == InvoiceStatus.OPEN,
        )
    ).all()
    by_number = {row.number: row for row in rows}
    found = [by_number[n] for n in dict.fromkeys(numbers) if n in by_number]
    return [
        {"id": row.id, "version": row.version, "invoice": dict(invoice_data(row))} for row in found
    ]
