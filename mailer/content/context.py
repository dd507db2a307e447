"""PURE: the render context of an email, snapshotted from ledger rows when it is enqueued.

The snapshot is stored on the outbox row, so a retry renders exactly what was first rendered and
the email always describes the document version it was enqueued for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from mailer.bank_config import BankConfig
from mailer.content.bank_transfer import bank_transfer
from mailer.content.event_context import invoice_data
from mailer.content.formatting import normalise_locale
from mailer.ledger.localtime import customer_zone, days_between
from mailer.ledger.models import Customer, Invoice, Tenant
from mailer.ledger.references import customer_reference, invoice_reference

# The branding keys of ``mailer.content.shapes.TenantData`` a caller may pass (``BrandingConfig``).
BRANDING_KEYS = ("logo_url", "brand_color", "address", "footer", "css", "tax_id")


def party_context(
    *, tenant: Tenant, customer: Customer, branding: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What every email shows of sender and recipient: language, tenant with its branding,
    customer, and the (not yet signed) links. The kind's own part is added beside it.

    ``time_zone`` (the customer's, else the tenant's) is where the customer reads its dates:
    every date filter, PDF and hosted page prints an instant as the day it is there.

    ``branding`` is the tenant's ``BrandingConfig.as_context()``: it lives in the config, not
    in the ledger, so the caller passes it in. The tenant's locale is the fallback language.
    """
    tenant_data: dict[str, Any] = {"name": tenant.name, "email": tenant.email}
    for key in BRANDING_KEYS:
        value = (branding or {}).get(key)
        if value is not None:
            tenant_data[key] = list(value) if key == "address" else value
    context: dict[str, Any] = {
        # The language the customer chose on their account page, else the ERP's.
        "locale": normalise_locale(customer.chosen_locale or customer.locale, tenant.locale),
        "fallback_locale": normalise_locale(tenant.locale),
        "time_zone": customer_zone(customer.time_zone, tenant.time_zone),
        "tenant": tenant_data,
        "customer": customer_data(customer),
        "links": {"view": None, "pay": None},
    }
    if customer.pdf_link_only:  # the customer's choice: the PDF as a download link only
        context["pdf_link_only"] = True
    return context


def customer_data(customer: Customer) -> dict[str, Any]:
    """``shapes.CustomerData``: the billing address and tax id only where the ERP gave them, so
    a snapshot stays as small as before for customers without (templates read them with
    ``.get``, as snapshots queued before they existed lack them too)."""
    data: dict[str, Any] = {"name": customer.name, "id": customer.external_id}
    if customer.billing_address:
        data["billing_address"] = list(customer.billing_address)
    if customer.tax_id:
        data["tax_id"] = customer.tax_id
    return data


def invoice_context(
    *,
    tenant: Tenant,
    customer: Customer,
    invoice: Invoice,
    now: datetime,
    branding: Mapping[str, Any] | None = None,
    bank: BankConfig | None = None,
) -> dict[str, Any]:
    """Everything the invoice templates may show, as JSON-safe data.

    ``bank`` is the tenant's ``[bank]``: with it, an invoice with a balance carries
    ``bank_transfer`` (its account, balance and the invoice's RF reference).

    ``days_overdue`` counts calendar days in the customer's zone: due 31 March, it is one day
    overdue all through 1 April there, whatever the date in UTC.
    """
    zone = customer_zone(customer.time_zone, tenant.time_zone)
    overdue = days_between(invoice.due_at, now, zone)
    context: dict[str, Any] = {
        **party_context(tenant=tenant, customer=customer, branding=branding),
        "invoice": invoice_data(invoice),  # the one InvoiceData builder: receipts use it too
        "days_overdue": max(0, overdue),
    }
    if bank is not None and invoice.balance_minor > 0:
        context["bank_transfer"] = bank_transfer(
            bank,
            tenant_name=tenant.name,
            reference=invoice_reference(tenant.id or 0, invoice.id or 0),
            amount_minor=invoice.balance_minor,
            currency=invoice.currency,
        )
    return context


def statement_transfer(
    *, tenant: Tenant, customer: Customer, statement: Mapping[str, Any], bank: BankConfig | None
) -> dict[str, Any] | None:
    """A statement's ``bank_transfer``: its closing balance under the customer's reference
    (a batch payment of its open invoices, oldest first), or None when nothing is due or the
    tenant has no ``[bank]``."""
    balance = statement.get("closing_balance_minor")
    if bank is None or not isinstance(balance, int) or balance <= 0:
        return None
    return dict(
        bank_transfer(
            bank,
            tenant_name=tenant.name,
            reference=customer_reference(tenant.id or 0, customer.id or 0),
            amount_minor=balance,
            currency=str(statement["currency"]),
        )
    )


def overdue_summary_context(
    *,
    tenant: Tenant,
    customer: Customer,
    invoices: Sequence[Invoice],
    now: datetime,
    branding: Mapping[str, Any] | None = None,
    bank: BankConfig | None = None,
) -> dict[str, Any]:
    """An ``overdue_summary``: one customer's overdue ``invoices``, all in one currency, with
    their total balance. Each invoice's ``days_overdue`` counts calendar days where the customer
    is, as the reminder for that invoice counts them; the email's is the oldest's. With the
    tenant's ``bank``, ``bank_transfer`` asks for the total under the *customer's* reference:
    the bank import pays its open invoices oldest first."""
    zone = customer_zone(customer.time_zone, tenant.time_zone)
    overdue_days = [max(0, days_between(i.due_at, now, zone)) for i in invoices]
    items = [
        {
            "number": i.number,
            "issued_at": i.issued_at.isoformat(),
            "due_at": i.due_at.isoformat(),
            "days_overdue": days,
            "total_minor": i.total_minor,
            "balance_minor": i.balance_minor,
        }
        for i, days in zip(invoices, overdue_days, strict=True)
    ]
    balance = sum(i.balance_minor for i in invoices)
    context: dict[str, Any] = {
        **party_context(tenant=tenant, customer=customer, branding=branding),
        "overdue": {"currency": invoices[0].currency, "balance_minor": balance, "items": items},
        "days_overdue": max(overdue_days),
    }
    if bank is not None and balance > 0:
        context["bank_transfer"] = bank_transfer(
            bank,
            tenant_name=tenant.name,
            reference=customer_reference(tenant.id or 0, customer.id or 0),
            amount_minor=balance,
            currency=invoices[0].currency,
        )
    return context
