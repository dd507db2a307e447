"""PURE: the render context of an email, snapshotted from ledger rows when it is enqueued.

The snapshot is stored on the outbox row, so a retry renders exactly what was first rendered and
the email always describes the document version it was enqueued for.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mailer.models import Customer, Invoice, Tenant
from mailer.render import normalise_locale


def invoice_context(
    *, tenant: Tenant, customer: Customer, invoice: Invoice, now: datetime
) -> dict[str, Any]:
    """Everything the invoice templates may show, as JSON-safe data."""
    overdue = (now.date() - invoice.due_at.date()).days
    return {
        "locale": normalise_locale(customer.locale, tenant.locale),
        "tenant": {"name": tenant.name, "email": tenant.email},
        "customer": {"name": customer.name, "id": customer.external_id},
        "invoice": {
            "number": invoice.number,
            "version": invoice.version,
            "currency": invoice.currency,
            "total_minor": invoice.total_minor,
            "tax_minor": invoice.tax_minor,
            "balance_minor": invoice.balance_minor,
            "issued_at": invoice.issued_at.isoformat(),
            "due_at": invoice.due_at.isoformat(),
            "lines": invoice.lines,
        },
        "days_overdue": max(0, overdue),
        "links": {"view": None, "pay": None},
    }
