"""Typed settings of the account page's "pay one or several" hand-off
(``[tenants.<slug>.payments.checkout]``).

Two shapes, both documented in the README ("Customer account page"):

* ``provider = "form"``: the customer's browser POSTs a form to ``url`` carrying the selection as
  a JSON ``payload`` and its ``signature``, ``hex(HMAC-SHA256(secret, payload))``, with the secret
  read from the env var ``secret_env``; the provider verifies it and takes the money.
* ``provider = "stripe"``: a Stripe Checkout Session is created (``POST /v1/checkout/sessions``)
  with the secret key in ``secret_env``; the customer is sent to its URL and back to
  ``success_url`` or ``cancel_url``.

Secrets appear only as env var names: the value is read when a hand-off is made, never logged.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mailer.config import is_loopback


class CheckoutConfig(BaseModel):
    """Where the account page hands a customer's chosen invoices to the payment provider."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: Literal["form", "stripe"]
    secret_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    url: str | None = None  # form: the provider's page the signed form is POSTed to
    success_url: str | None = None  # stripe: where Stripe sends the customer after paying
    cancel_url: str | None = None  # stripe: where Stripe sends the customer who gave up
    lifetime_minutes: Annotated[int, Field(ge=5, le=1440)] = 60  # how long a hand-off is good
    stripe_api: str = "https://api.stripe.com"  # the API's base URL (a test points it elsewhere)

    @field_validator("url", "success_url", "cancel_url", "stripe_api")
    @classmethod
    def _web_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        loopback = parts.hostname is not None and is_loopback(parts.hostname)
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError(f"must be an https URL, not {value!r}")
        if not parts.hostname or "@" in parts.netloc:
            raise ValueError(f"must name a host and no credentials: {value!r}")
        return value

    @model_validator(mode="after")
    def _complete(self) -> CheckoutConfig:
        if self.provider == "form" and self.url is None:
            raise ValueError("checkout.url: a form hand-off needs the provider's URL")
        if self.provider == "stripe" and (self.success_url is None or self.cancel_url is None):
            raise ValueError("checkout: Stripe needs success_url and cancel_url")
        return self
