"""Demo data for the embedded defaults: a few customers and invoices, some already overdue."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, select

from dunmail.app import Services
from dunmail.web.users import create_user
from mailer.content.kinds import Kind
from mailer.db import session_scope
from mailer.ledger.models import Invoice, InvoiceStatus

log = logging.getLogger(__name__)


def demo_document(now: datetime) -> dict[str, Any]:
    """An import document dated relative to ``now``, so the demo always has due work."""

    def day(offset: int) -> str:
        return (now + timedelta(days=offset)).date().isoformat()

    customers = [
        ("C-100", "Globex Corporation", "en", "ap@globex.example", "billing@globex.example"),
        ("C-200", "Initech GmbH", "de", "rechnungen@initech.example", None),
        ("C-300", "Umbrella SARL", "fr", "compta@umbrella.example", "cfo@umbrella.example"),
    ]
    invoices = [
        ("INV-1040", "C-100", "EUR", -40, -10, [("Consulting, March", "12", "150.00")]),
        (
            "INV-1041",
            "C-200",
            "EUR",
            -20,
            10,
            [("Widgets", "250", "3.40"), ("Shipping", "1", "45.00")],
        ),
        ("INV-1042", "C-300", "EUR", -2, 28, [("Annual support plan", "1", "4800.00")]),
        ("INV-1043", "C-100", "USD", 0, 30, [("Licence seats", "15", "29.90")]),
    ]
    return {
        "customers": [
            {
                "id": cid,
                "name": name,
                "locale": locale,
                "time_zone": "Europe/London",
                "contacts": [{"email": ap, "name": "Accounts payable", "roles": ["ap"]}]
                + ([{"email": other, "name": "Billing", "roles": ["billing"]}] if other else []),
            }
            for cid, name, locale, ap, other in customers
        ],
        "invoices": [
            {
                "id": number.lower(),
                "number": number,
                "customer": cid,
                "currency": currency,
                "issued_at": day(issued),
                "due_at": day(due),
                "status": "open",
                "lines": [{"description": d, "quantity": q, "unit_price": p} for d, q, p in lines],
            }
            for number, cid, currency, issued, due, lines in invoices
        ],
    }


# The demo's AR clerk: only ever created with env = "dev", which refuses real secrets.
DEMO_USER = "clerk@acme.example"
DEMO_PASSWORD = "demo-password-1"


def seed_demo(services: Services, *, tenant: str) -> int:
    """Import the demo data into an empty ledger and queue its emails; returns messages queued."""
    now = services.clock.now()
    with Session(services.engine) as session:
        if session.exec(select(Invoice).limit(1)).first() is not None:
            return 0
    report = services.ledger.import_document(demo_document(now), tenant=tenant)
    log.info("demo data: %s", report.summary())
    if services.config.env == "dev":
        with session_scope(services.engine) as session:
            create_user(
                session,
                tenant_id=services.tenants.id(tenant),
                email=DEMO_USER,
                name="Demo clerk",
                password=DEMO_PASSWORD,
                now=now,
            )
        log.info(
            "demo: the AR inbox at %s/login takes %s / %s (a dev-only account)",
            services.config.web.public_url,
            DEMO_USER,
            DEMO_PASSWORD,
        )
    queued = 0
    with Session(services.engine) as session:
        invoices = session.exec(select(Invoice).order_by(Invoice.number)).all()
    for invoice in invoices:
        if invoice.status is not InvoiceStatus.OPEN:
            continue
        kinds = [Kind.NEW_INVOICE] + ([Kind.LATE_PAYMENT_REMINDER] if invoice.due_at < now else [])
        for kind in kinds:
            # As if a clerk sent them now, so the demo shows its mail at any hour (a reminder
            # the engine sends by itself waits for the send window); a kind the tenant has
            # switched off is left out, as the engine would.
            if not services.config.tenants[tenant].sends(kind):
                continue
            services.sending.enqueue_invoice_email(
                invoice.number, kind=kind, tenant=tenant, manual=True
            )
            queued += 1
    return queued
