"""The signed hand-off (dunmail/services/handoff.py) from the provider's side: for any set of
invoices and amounts, the documented string verifies with the tenant's secret, names exactly
the chosen invoices and their sum, and any change to it breaks the signature."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from dunmail.services.handoff import (
    Allocation,
    Selection,
    form_fields,
    stripe_params,
    verify,
)

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
numbers = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=30)
allocations = st.lists(
    st.tuples(numbers, st.integers(min_value=1, max_value=10**13)),
    min_size=1,
    max_size=12,
    unique_by=lambda pair: pair[0],
)


def _selection(chosen: list[tuple[str, int]], currency: str = "EUR") -> Selection:
    return Selection(
        tenant="acme",
        customer="C-1",
        currency=currency,
        allocations=tuple(Allocation(i + 1, n, a) for i, (n, a) in enumerate(chosen)),
        nonce="ab" * 16,
        expires_at=NOW + timedelta(hours=1),
    )


@given(allocations, st.sampled_from(["EUR", "JPY", "USD", "RON"]), st.text(min_size=1))
def test_the_documented_string_verifies_and_says_what_was_chosen(
    chosen: list[tuple[str, int]], currency: str, secret: str
) -> None:
    fields = dict(form_fields(_selection(chosen, currency), secret))
    payload, signature = fields["payload"], fields["signature"]
    # What a provider does, from the README alone: HMAC-SHA256 over the payload's UTF-8 bytes.
    expected = hmac.new(secret.encode(), payload.encode("utf-8"), hashlib.sha256).hexdigest()
    assert signature == expected and fields["algorithm"] == "HMAC-SHA256"
    data = json.loads(payload)
    assert [(i["number"], i["amount_minor"]) for i in data["invoices"]] == chosen
    assert data["total_minor"] == sum(a for _, a in chosen)
    assert (data["currency"], data["customer"], data["tenant"]) == (currency, "C-1", "acme")
    assert data["expires"] == int((NOW + timedelta(hours=1)).timestamp())
    assert payload == json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


@given(allocations, st.integers(min_value=0), st.text(min_size=1))
def test_any_edit_of_the_payload_breaks_the_signature(
    chosen: list[tuple[str, int]], at: int, secret: str
) -> None:
    fields = dict(form_fields(_selection(chosen), secret))
    payload = fields["payload"]
    i = at % len(payload)
    forged = payload[:i] + ("0" if payload[i] != "0" else "1") + payload[i + 1 :]
    assert not verify(secret, forged, fields["signature"])
    assert not verify(secret + "x", payload, fields["signature"])


@given(allocations)
def test_stripe_gets_one_line_per_invoice_summing_to_the_total(
    chosen: list[tuple[str, int]],
) -> None:
    selection = _selection(chosen)
    params = stripe_params(
        selection, success_url="https://a.example/ok", cancel_url="https://a.example/no"
    )
    amounts = [int(v) for k, v in params if k.endswith("[unit_amount]")]
    names = [v for k, v in params if k.endswith("[metadata][invoice]")]
    assert sum(amounts) == selection.total_minor and names == [n for n, _ in chosen]
    assert dict(params)["client_reference_id"] == selection.nonce
