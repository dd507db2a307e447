"""``[tenants.<slug>.payments.checkout]``: a hand-off that could not work, or would leak, stops
the config from loading with a message naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mailer.tenant_config import PaymentsConfig


@pytest.mark.parametrize(
    ("checkout", "says"),
    [
        ({"provider": "form", "secret_env": "S"}, "needs the provider's URL"),
        ({"provider": "form", "secret_env": "S", "url": "http://pay.example/x"}, "https URL"),
        ({"provider": "form", "secret_env": "S", "url": "https://u:p@pay.example/"}, "credentials"),
        (
            {"provider": "stripe", "secret_env": "S", "success_url": "https://a.example/"},
            "cancel_url",
        ),
        (
            {"provider": "form", "secret_env": "not a name", "url": "https://p.example/"},
            "secret_env",
        ),
        ({"provider": "paypal", "secret_env": "S"}, "provider"),
        (
            {"provider": "form", "secret_env": "S", "url": "https://p.example/", "secret": "x"},
            "secret",
        ),
    ],
)
def test_a_broken_checkout_is_refused(checkout: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        PaymentsConfig.model_validate({"checkout": checkout})


def test_a_loopback_form_and_a_stripe_checkout_load() -> None:
    form = {"provider": "form", "secret_env": "S", "url": "http://127.0.0.1:9/checkout"}
    assert PaymentsConfig.model_validate({"checkout": form}).checkout is not None
    stripe = {
        "provider": "stripe",
        "secret_env": "STRIPE_KEY",
        "success_url": "https://a.example/ok",
        "cancel_url": "https://a.example/no",
    }
    loaded = PaymentsConfig.model_validate({"checkout": stripe}).checkout
    assert loaded is not None and loaded.stripe_api == "https://api.stripe.com"
