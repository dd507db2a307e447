"""PURE: the hand-off of a customer's chosen invoices to the tenant's payment provider.

Two shapes (``mailer/checkout_config.py``):

**Signed form** (``provider = "form"``). The browser POSTs three fields to the provider's URL:
``payload``, ``signature`` and ``algorithm`` (``"HMAC-SHA256"``). The signed string is the exact
text of ``payload``, UTF-8 encoded: compact JSON with sorted keys,

    {"currency":"EUR","customer":"C-1","expires":1775001600,
     "invoices":[{"amount_minor":12000,"number":"INV-1"}],"nonce":"...","tenant":"acme",
     "total_minor":12000,"version":1}

(one line, no spaces), and ``signature = hex(HMAC-SHA256(secret, payload))`` in lower case,
with the tenant's secret from the env var its config names. The provider recomputes the HMAC
over the bytes it received (never over a re-serialisation), compares in constant time, refuses
a payload whose ``expires`` (Unix seconds) has passed or whose ``nonce`` it has seen, and
takes ``total_minor`` (the sum of the invoices' ``amount_minor``) in ``currency``.

**Stripe Checkout** (``provider = "stripe"``). :func:`stripe_params` builds the form-encoded
parameters of ``POST /v1/checkout/sessions``: one line item per invoice, the nonce as
``client_reference_id`` and in ``metadata``, and the allocation in each line's product metadata.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import httpx

ALGORITHM = "HMAC-SHA256"
PAYLOAD_VERSION = 1


@dataclass(frozen=True)
class Allocation:
    """One invoice of a hand-off and the amount to put against it (its open balance)."""

    invoice_id: int
    number: str
    amount_minor: int


@dataclass(frozen=True)
class Selection:
    """What the customer chose: one currency's invoices, and who, and until when."""

    tenant: str  # the tenant's slug
    customer: str  # the customer's id in the ERP (Customer.external_id)
    currency: str
    allocations: tuple[Allocation, ...]
    nonce: str
    expires_at: datetime

    @property
    def total_minor(self) -> int:
        return sum(a.amount_minor for a in self.allocations)


def form_payload(selection: Selection) -> str:
    """The signed string of the form hand-off (see the module docstring)."""
    data = {
        "version": PAYLOAD_VERSION,
        "tenant": selection.tenant,
        "customer": selection.customer,
        "currency": selection.currency,
        "invoices": [
            {"number": a.number, "amount_minor": a.amount_minor} for a in selection.allocations
        ],
        "total_minor": selection.total_minor,
        "nonce": selection.nonce,
        "expires": int(selection.expires_at.timestamp()),
    }
    return json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def sign(secret: str, payload: str) -> str:
    """``hex(HMAC-SHA256(secret, payload))``, both UTF-8."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def verify(secret: str, payload: str, signature: str) -> bool:
    """What a provider does with the form's fields: True when ``signature`` is genuine."""
    return hmac.compare_digest(sign(secret, payload), signature)


def form_fields(selection: Selection, secret: str) -> list[tuple[str, str]]:
    """The hidden fields of the form the browser POSTs to the provider."""
    payload = form_payload(selection)
    return [("payload", payload), ("signature", sign(secret, payload)), ("algorithm", ALGORITHM)]


def stripe_params(
    selection: Selection, *, success_url: str, cancel_url: str
) -> list[tuple[str, str]]:
    """The form-encoded parameters of a Stripe Checkout Session for ``selection``."""
    params: list[tuple[str, str]] = [
        ("mode", "payment"),
        ("success_url", success_url),
        ("cancel_url", cancel_url),
        ("client_reference_id", selection.nonce),
        ("expires_at", str(int(selection.expires_at.timestamp()))),
        ("metadata[dunmail_intent]", selection.nonce),
        ("metadata[tenant]", selection.tenant),
        ("metadata[customer]", selection.customer),
        ("payment_intent_data[metadata][dunmail_intent]", selection.nonce),
    ]
    for i, a in enumerate(selection.allocations):
        item = f"line_items[{i}]"
        params += [
            (f"{item}[quantity]", "1"),
            (f"{item}[price_data][currency]", selection.currency.lower()),
            (f"{item}[price_data][unit_amount]", str(a.amount_minor)),
            (f"{item}[price_data][product_data][name]", f"Invoice {a.number}"),
            (f"{item}[price_data][product_data][metadata][invoice]", a.number),
            (f"{item}[price_data][product_data][metadata][amount_minor]", str(a.amount_minor)),
        ]
    return params


@dataclass(frozen=True)
class CheckoutSession:
    """What the provider answered: the session's id and the page to send the customer to."""

    id: str
    url: str


class CheckoutClient(Protocol):
    """Creates a Checkout Session; the real one speaks HTTP to Stripe, a test's records."""

    def create_session(
        self, params: Sequence[tuple[str, str]], *, api: str, secret: str, idempotency_key: str
    ) -> CheckoutSession: ...


class StripeHttp:
    """``POST {api}/v1/checkout/sessions`` with httpx (no SDK: one documented endpoint)."""

    def create_session(
        self, params: Sequence[tuple[str, str]], *, api: str, secret: str, idempotency_key: str
    ) -> CheckoutSession:
        response = httpx.post(
            f"{api.rstrip('/')}/v1/checkout/sessions",
            data=dict(params),
            auth=(secret, ""),
            headers={"Idempotency-Key": idempotency_key},
            timeout=15.0,
        )
        response.raise_for_status()
        body = response.json()
        return CheckoutSession(id=str(body["id"]), url=str(body["url"]))
