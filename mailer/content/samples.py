"""PURE: a realistic, JSON-safe sample context for every kind of email.

For tests, previews (``dunmail template show``, the preview pages) and the check of a tenant's
override when it is saved (``mailer/content/overrides.py``): each is typed by the shapes in
``mailer/content/shapes.py`` and carries the links of the kind's buttons.
"""

from __future__ import annotations

import copy
from typing import Any

from mailer.content.kinds import KINDS, Kind
from mailer.content.shapes import InvoiceData, LineData, SubscriptionData, TenantData
from mailer.errors import TemplateError

_LINK = "https://pay.acme.example/l/"
_TENANT: TenantData = {
    "name": "Acme Supplies",
    "email": "ar@acme.example",
    "logo_url": "https://acme.example/logo.png",
    "brand_color": "#0b5cad",
    "address": ["Acme Supplies SRL", "Strada Exemplu 12", "010101 Bucharest, Romania"],
    "footer": "Acme Supplies SRL · Reg. J40/1234/2020",
    "css": None,
    "tax_id": "RO12345678",
}
_LINES: list[LineData] = [
    {
        "description": "Consulting, March 2026",
        "quantity": "40",
        "unit_price_minor": 20745,
        "tax_rate": "19",
        "net_minor": 829800,
        "tax_minor": 157662,
        "total_minor": 987462,
    },
    {
        "description": "Hosting, annual plan",
        "quantity": "1",
        "unit_price_minor": 207647,
        "tax_rate": "19",
        "net_minor": 207647,
        "tax_minor": 39453,
        "total_minor": 247100,
    },
]
_INVOICE: InvoiceData = {
    "number": "INV-1042",
    "version": 1,
    "currency": "EUR",
    "total_minor": 1234562,
    "tax_minor": 197115,
    "balance_minor": 1234562,
    "issued_at": "2026-03-02T09:00:00+00:00",
    "due_at": "2026-04-01T00:00:00+00:00",
    "lines": _LINES,
}
_SUBSCRIPTION: SubscriptionData = {
    "plan": "Business",
    "amount_minor": 4900,
    "currency": "EUR",
    "interval": "month",
    "started_at": "2026-03-02T09:00:00+00:00",
    "next_bill_at": "2026-04-02T09:00:00+00:00",
    "cancelled_at": None,
    "ends_at": None,
}


def _documents() -> dict[str, dict[str, Any]]:
    """Each kind's own part of the sample context (built fresh: callers may mutate theirs)."""
    paid: InvoiceData = {**_INVOICE, "balance_minor": 0}
    overdue: InvoiceData = {**_INVOICE, "balance_minor": 734562}
    return {
        Kind.NEW_INVOICE: {"invoice": _INVOICE, "days_overdue": 0},
        Kind.INVOICE_REMINDER: {"invoice": _INVOICE, "days_overdue": 0},
        Kind.LATE_PAYMENT_REMINDER: {"invoice": overdue, "days_overdue": 12},
        Kind.OVERDUE_SUMMARY: {
            "overdue": {
                "currency": "EUR",
                "balance_minor": 1293662,
                "items": [
                    {
                        "number": "INV-1017",
                        "issued_at": "2026-02-02T09:00:00+00:00",
                        "due_at": "2026-03-04T00:00:00+00:00",
                        "days_overdue": 40,
                        "total_minor": 247100,
                        "balance_minor": 247100,
                    },
                    {
                        "number": "INV-1029",
                        "issued_at": "2026-02-16T09:00:00+00:00",
                        "due_at": "2026-03-18T00:00:00+00:00",
                        "days_overdue": 26,
                        "total_minor": 512000,
                        "balance_minor": 312000,
                    },
                    {
                        "number": "INV-1042",  # the late_payment_reminder's invoice
                        "issued_at": "2026-03-02T09:00:00+00:00",
                        "due_at": "2026-04-01T00:00:00+00:00",
                        "days_overdue": 12,
                        "total_minor": 1234562,
                        "balance_minor": 734562,
                    },
                ],
            },
            "days_overdue": 40,
        },
        Kind.THANK_YOU: {"invoice": paid, "paid_at": "2026-03-28T14:12:00+00:00"},
        Kind.QUERY_ANSWER: {
            "invoice": overdue,
            "query": {
                "reason": "wrong_amount",
                "question": "Line 2 was billed twice: we ordered 10 licences, not 20.",
                "answer": "You are right: we will send a credit note for the 10 extra licences.",
                "answered_at": "2026-04-14T10:30:00+00:00",
            },
        },
        Kind.PAYMENT_PLAN: {
            "payment_plan": {
                "number": "PP-7",
                "currency": "EUR",
                "total_minor": 734562,
                "approve_by": "2026-04-20T00:00:00+00:00",
                "installments": [
                    {"due_at": "2026-05-01T00:00:00+00:00", "amount_minor": 244854},
                    {"due_at": "2026-06-01T00:00:00+00:00", "amount_minor": 244854},
                    {"due_at": "2026-07-01T00:00:00+00:00", "amount_minor": 244854},
                ],
                "invoices": [{"number": "INV-1042", "amount_minor": 734562}],
            }
        },
        Kind.CREDIT_NOTE: {
            "credit_note": {
                "number": "CN-88",
                "version": 1,
                "currency": "EUR",
                "amount_minor": 247100,
                "tax_minor": 39453,
                "issued_at": "2026-03-20T10:00:00+00:00",
                "invoice_number": "INV-1042",
                "reason": "Hosting cancelled before renewal",
                "lines": [_LINES[1]],
            }
        },
        Kind.PAYMENT_RECEIPT: {
            "payment": {
                "receipt_number": "RCPT-5521",
                "amount_minor": 500000,
                "currency": "EUR",
                "received_at": "2026-03-25T08:30:00+00:00",
                "method": "Visa •••• 4242",
                "invoices": [
                    {
                        "number": "INV-1042",
                        "amount_minor": 500000,
                        "invoice": {**_INVOICE, "balance_minor": 734562},
                    }
                ],
                "unapplied_minor": 0,
            }
        },
        Kind.REFUND: {
            "refund": {
                "receipt_number": "RF-310",
                "amount_minor": 247100,
                "currency": "EUR",
                "refunded_at": "2026-03-26T11:00:00+00:00",
                "method": "Visa •••• 4242",
                "reason": None,
                "payment_received_at": "2026-03-25T08:30:00+00:00",
            }
        },
        Kind.AUTOPAY_FAILED: {
            "autopay": {
                "decline_reason": "insufficient_funds",
                "next_retry_at": "2026-04-04T09:00:00+00:00",
                "amount_minor": 1234562,
                "currency": "EUR",
                "attempted_at": "2026-04-01T09:00:00+00:00",
                "invoice_number": "INV-1042",
                "method": "Visa •••• 4242",
            }
        },
        Kind.STATEMENT: {
            "statement": {
                "style": "open_item",
                "period_start": "2026-03-01T00:00:00+00:00",
                "period_end": "2026-03-31T00:00:00+00:00",
                "currency": "EUR",
                "opening_balance_minor": 0,
                "closing_balance_minor": 1481662,
                "overdue_minor": 247100,
                "items": [
                    {
                        "date": "2026-02-02T09:00:00+00:00",
                        "type": "invoice",
                        "reference": "INV-1017",
                        "due_at": "2026-03-04T00:00:00+00:00",
                        "amount_minor": 247100,
                        "balance_minor": 247100,
                    },
                    {
                        "date": "2026-03-02T09:00:00+00:00",
                        "type": "invoice",
                        "reference": "INV-1042",
                        "due_at": "2026-04-01T00:00:00+00:00",
                        "amount_minor": 1234562,
                        "balance_minor": 1234562,
                    },
                ],
            }
        },
        Kind.ESTIMATE: {
            "estimate": {
                "number": "EST-204",
                "version": 2,
                "currency": "EUR",
                "total_minor": 1234562,
                "tax_minor": 197115,
                "issued_at": "2026-03-02T09:00:00+00:00",
                "valid_until": "2026-04-01T00:00:00+00:00",
                "lines": _LINES,
            }
        },
        Kind.SUBSCRIPTION_CONFIRMATION: {"subscription": _SUBSCRIPTION},
        Kind.SUBSCRIPTION_BILLED_SOON: {"subscription": _SUBSCRIPTION, "days_until_bill": 7},
        Kind.CONTACT_CONFIRMATION: {
            "contact": {
                "email": "billing@globex.example",
                "confirm_url": f"{_LINK}confirm-7f3a9c",
                "expires_at": "2026-03-04T09:00:00+00:00",
                "replaces": "ap@globex.example",
            }
        },
        Kind.CONTACTS_CHANGED: {
            "change": {
                "kind": "contact_changed",
                "at": "2026-03-02T09:41:00+00:00",
                "old": "ap@globex.example",
                "new": "billing@globex.example",
            }
        },
        Kind.SUBSCRIPTION_CANCELLED: {
            "subscription": {
                **_SUBSCRIPTION,
                "next_bill_at": None,
                "cancelled_at": "2026-03-15T16:20:00+00:00",
                "ends_at": "2026-04-02T09:00:00+00:00",
            }
        },
    }


def sample_context(kind: str, *, locale: str) -> dict[str, Any]:
    """A realistic, JSON-safe context for ``kind``: for tests, previews and override checks."""
    spec = KINDS.get(kind)
    if spec is None:
        raise TemplateError(f"unknown email kind {kind!r}; known kinds: {', '.join(KINDS)}")
    links: dict[str, str | None] = {b: f"{_LINK}{b}-7f3a9c" for b in spec.buttons}
    context: dict[str, Any] = {
        "locale": locale,
        "tenant": _TENANT,
        "customer": {
            "name": "Globex Corporation",
            "id": "C-1001",
            "billing_address": ["Globex Corporation", "1 Globex Plaza", "Cypress Creek, OR 97401"],
            "tax_id": "US12-3456789",
        },
        "links": links,
        # The sample tenant's zone (its address is in Bucharest); every sample time falls on
        # the same day there as in UTC, so previews print the dates written above.
        "time_zone": "Europe/Bucharest",
        **_documents()[kind],
    }
    return copy.deepcopy(context)
