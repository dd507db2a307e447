"""What the account-page tests share: a ledger with two customers of acme, invoices in two
currencies (some overdue), a payment, a credit on account, and a tenant whose checkout is a
signed form (or Stripe) and whose webhooks go to the ERP."""

from __future__ import annotations

import copy
import email
import html
import re
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from dunmail.app import Services
from mailer.outbound.links import verify_link
from mailer.outbound.memory import MemoryTransport
from tests.conftest import DEMO_DOC, make_config

FORM_SECRET = "portal-form-secret-for-tests"
STRIPE_SECRET = "sk_test_portal"
SECRET_NAME = "Initech SECRET"


def _invoice(
    ident: str, number: str, customer: str, currency: str, due: str, price: str
) -> dict[str, Any]:
    return {
        "id": ident,
        "number": number,
        "customer": customer,
        "currency": currency,
        "issued_at": "2026-01-15",
        "due_at": due,
        "status": "open",
        "lines": [{"description": "Support", "quantity": "1", "unit_price": price}],
    }


def ledger(locale: str = "en", zone: str = "UTC") -> dict[str, Any]:
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"][0].update(locale=locale, time_zone=zone)
    doc["customers"].append(
        {
            "id": "C-2",
            "name": SECRET_NAME,
            "locale": "en",
            "contacts": [{"email": "ap@initech.example", "name": "AP", "roles": ["ap"]}],
        }
    )
    doc["invoices"] += [
        _invoice("i-1050", "INV-1050", "C-1", "EUR", "2026-02-10", "200.00"),
        _invoice("i-1051", "INV-1051", "C-1", "EUR", "2026-02-20", "1234.56"),
        _invoice("i-1052", "INV-1052", "C-1", "USD", "2026-03-05", "99.00"),
        _invoice("i-2001", "INV-2001", "C-2", "EUR", "2026-02-01", "500.00"),
    ]
    doc["payments"] = [
        {
            "id": "P-1",
            "customer": "C-1",
            "amount": "50.00",
            "currency": "EUR",
            "received_at": "2026-02-25T10:00:00Z",
            "invoices": [{"invoice": "i-1050", "amount": "50.00"}],
        }
    ]
    doc["credit_notes"] = [
        {
            "id": "CN-9",
            "number": "CN-009",
            "customer": "C-1",
            "currency": "EUR",
            "issued_at": "2026-02-26",
            "lines": [{"description": "Goodwill", "quantity": "1", "unit_price": "15"}],
        }
    ]
    return doc


def tenants(tmp_path: Path, db_url: str, checkout: dict[str, Any]) -> dict[str, Any]:
    acme = make_config(tmp_path, db_url).tenants["acme"].model_dump(mode="json")
    acme["payments"] = {"checkout": checkout}
    acme["webhooks"] = [{"url": "https://erp.acme.example/hook", "secret_env": "ACME_HOOK"}]
    beta = {"name": "Beta Ltd", "email": "ar@beta.example"}
    return {"tenants": {"acme": acme, "beta": beta}}


def form_checkout(url: str = "https://pay.acme.example/checkout") -> dict[str, Any]:
    return {"provider": "form", "url": url, "secret_env": "ACME_PAY"}


def stripe_checkout() -> dict[str, Any]:
    return {
        "provider": "stripe",
        "secret_env": "ACME_STRIPE",
        "success_url": "https://acme.example/paid",
        "cancel_url": "https://acme.example/cancelled",
    }


async def view_token(services: Services, transport: MemoryTransport) -> tuple[str, str]:
    """The View link's token of a real INV-1042 email, and that email's plain text."""
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    parsed = email.message_from_bytes(transport.sent[-1].data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    for token in re.findall(r"/l/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", text):
        if verify_link(token, keys=services.links.keys, now=services.clock.now()).purpose == "view":
            return token, text
    raise AssertionError("the email has no View link")


def row_cells(page: str, number: str) -> list[str]:
    """The text of each cell of the page's row for invoice ``number``."""
    for row in re.findall(r"<tr class=\"[a-z_]+\">(.*?)</tr>", page, re.S):
        cells = [
            html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
            for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        if number in cells:
            return cells
    raise AssertionError(f"no row for {number}")


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert found is not None
    return found.group(1)


def invoice_ids(page: str) -> dict[str, int]:
    """Invoice number -> the id its checkbox posts."""
    found = {}
    for row in re.findall(r"<tr class=\"[a-z_]+\">(.*?)</tr>", page, re.S):
        box = re.search(r'name="invoice" value="(\d+)"', row)
        number = re.search(r'data-label="Invoice">([^<]+)<', row)
        if box and number:
            found[html.unescape(number.group(1))] = int(box.group(1))
    return found
