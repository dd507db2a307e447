"""The customer's account page behind a signed View link, through real HTTP (uvicorn), on
SQLite and PostgreSQL: what it lists, that a token shows its own customer only, CSRF, the
signed hand-off, the ``payment.intent`` webhook, Stripe through a recording fake client, and
amounts and dates written exactly as the customer's email writes them."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select

from dunmail.app import Services
from dunmail.services.handoff import CheckoutSession, verify
from dunmail.web.link_service import revoke_links
from mailer.clock import FixedClock
from mailer.ledger.intent_models import PaymentIntent
from mailer.ledger.models import Invoice
from mailer.outbound.links import issue_link
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.models import WebhookDelivery
from tests.portal_fixtures import (
    FORM_SECRET,
    SECRET_NAME,
    STRIPE_SECRET,
    csrf_of,
    form_checkout,
    invoice_ids,
    ledger,
    row_cells,
    stripe_checkout,
    tenants,
    view_token,
)


@pytest.fixture
def customer_locale() -> tuple[str, str]:
    return ("en", "UTC")


@pytest.fixture
def checkout() -> dict[str, Any]:
    return form_checkout()


@pytest.fixture
def services_config(
    tmp_path: Path, db_url: str, checkout: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.setenv("ACME_HOOK", "hook-secret")
    monkeypatch.setenv("ACME_PAY", FORM_SECRET)
    monkeypatch.setenv("ACME_STRIPE", STRIPE_SECRET)
    return tenants(tmp_path, db_url, checkout)


@pytest.fixture
def relay_env(
    services: Services, transport: MemoryTransport, customer_locale: tuple[str, str]
) -> tuple[Services, MemoryTransport]:
    locale, zone = customer_locale
    assert services.ledger.import_document(ledger(locale, zone), tenant="acme").errors == []
    return services, transport


def _client(base: str, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, follow_redirects=False, headers=headers)


async def _account(client: httpx.AsyncClient, token: str) -> str:
    response = await client.get(f"/l/{token}/account")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "private, no-store"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    return response.text


async def test_the_document_page_leads_to_the_account_which_lists_open_credits_and_payments(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    async with _client(web_server) as client:
        document = await client.get(f"/l/{token}")
        assert f'href="/l/{token}/account"' in document.text
        page = await _account(client, token)
    # Grouped per currency, then overdue (days overdue), due soon, open; balances after payments.
    assert row_cells(page, "INV-1050")[4:7] == ["20 days overdue", "€200.00", "€150.00"]
    assert row_cells(page, "INV-1051")[4] == "10 days overdue"
    assert row_cells(page, "INV-1052")[4] == "Due in 3 days"
    assert row_cells(page, "INV-1042")[4] == "Due in 29 days"
    assert page.index("INV-1050") < page.index("INV-1051") < page.index("INV-1042")
    assert "Overdue (EUR)" in page and "Due soon (USD)" in page and "Open (EUR)" in page
    assert "Pay all overdue (€1,384.56)" in page  # 150.00 + 1,234.56, EUR only
    assert "CN-009" in page and "€15.00" in page  # the credit on account
    assert "P-1" in page and "€50.00" in page  # the recent payment
    assert SECRET_NAME not in page and "INV-2001" not in page  # another customer's
    assert 'id="bank-transfer"' in page  # the slot the bank-transfer box goes in
    assert '<meta name="viewport"' in page and 'lang="en"' in page
    assert re.search(r"/l/\d", page) is None  # no unsigned id in any URL


async def test_a_view_link_grants_only_its_own_customer_and_bad_tokens_are_refused(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    payload, mac = token.split(".")
    now = services.clock.now()
    with Session(services.engine) as session:
        theirs = session.exec(select(Invoice).where(Invoice.number == "INV-2001")).one()
        mine = session.exec(select(Invoice).where(Invoice.number == "INV-1042")).one()
    key = services.links.signing
    # beta's token naming acme's invoice, and a pay (not view) link, grant no account.
    beta = issue_link(
        "view",
        services.tenants.id("beta"),
        f"invoice:{mine.id}",
        mine.version,
        key=key,
        expires_at=now + timedelta(days=1),
    )
    pay = issue_link(
        "pay",
        services.tenants.id("acme"),
        f"invoice:{mine.id}",
        mine.version,
        key=key,
        expires_at=now + timedelta(days=1),
    )
    # A preview's view link of C-2's own invoice shows C-2's account, never C-1's.
    other = issue_link(
        "view",
        services.tenants.id("acme"),
        f"invoice:{theirs.id}",
        theirs.version,
        key=key,
        expires_at=now + timedelta(days=1),
    )
    async with _client(web_server) as client:
        for bad in (f"{payload[:-1]}A.{mac}", f"{payload}.{mac[:-2]}", beta, pay, "x.y"):
            refused = await client.get(f"/l/{bad}/account")
            assert refused.status_code == 404 and "INV-1042" not in refused.text
        theirs_page = await _account(client, other)
        assert "INV-2001" in theirs_page and "INV-1042" not in theirs_page
        assert isinstance(services.clock, FixedClock)
        services.clock.advance(timedelta(days=400))  # past the link's expiry
        expired = await client.get(f"/l/{token}/account")
        assert expired.status_code == 404 and "INV-1050" not in expired.text
        services.clock.advance(timedelta(days=-400))
        await _account(client, token)
        revoke_links(services, tenant="acme", token=token, by="test")
        revoked = await client.get(f"/l/{token}/account")
        assert revoked.status_code == 404 and "INV-1050" not in revoked.text


async def test_pay_two_invoices_signed_hand_off_intent_and_webhook(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    async with _client(web_server) as client:
        page = await _account(client, token)
        ids = invoice_ids(page)
        form = {
            "csrf": csrf_of(page),
            "currency": "EUR",
            "action": "selected",
            "invoice": [str(ids["INV-1050"]), str(ids["INV-1042"])],
        }
        done = await client.post(f"/l/{token}/account/pay", data=form)
    assert done.status_code == 200, done.text
    assert re.search(r'id="total">€270.00<', done.text)  # 150.00 + 120.00, from the ledger
    assert "form-action 'self' https://pay.acme.example" in done.headers["content-security-policy"]
    assert 'action="https://pay.acme.example/checkout"' in done.text
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', done.text))
    import html

    payload = html.unescape(fields["payload"])
    assert (
        verify(FORM_SECRET, payload, fields["signature"]) and fields["algorithm"] == "HMAC-SHA256"
    )
    data = json.loads(payload)
    assert (data["tenant"], data["customer"], data["currency"], data["total_minor"]) == (
        "acme",
        "C-1",
        "EUR",
        27000,
    )
    assert data["invoices"] == [
        {"number": "INV-1050", "amount_minor": 15000},
        {"number": "INV-1042", "amount_minor": 12000},
    ]
    with Session(services.engine) as session:
        (intent,) = session.exec(select(PaymentIntent)).all()
        (hook,) = session.exec(
            select(WebhookDelivery).where(WebhookDelivery.event == "payment.intent")
        ).all()
    assert intent.nonce == data["nonce"] and intent.total_minor == 27000
    assert hook.payload["data"]["allocations"] == data["invoices"]
    assert hook.payload["data"]["intent"] == data["nonce"]
    assert FORM_SECRET not in json.dumps(hook.payload) and token not in json.dumps(hook.payload)


async def test_pay_all_overdue_takes_one_currency_and_refuses_foreign_or_mixed_ids(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    with Session(services.engine) as session:
        theirs = session.exec(select(Invoice).where(Invoice.number == "INV-2001")).one()
    async with _client(web_server) as client:
        page = await _account(client, token)
        ids, csrf = invoice_ids(page), csrf_of(page)
        url = f"/l/{token}/account/pay"
        overdue = await client.post(
            url, data={"csrf": csrf, "currency": "EUR", "action": "overdue"}
        )
        assert re.search(r'id="total">€1,384.56<', overdue.text)
        foreign = await client.post(
            url,
            data={
                "csrf": csrf,
                "currency": "EUR",
                "invoice": [str(ids["INV-1050"]), str(theirs.id)],
            },
        )
        assert foreign.status_code == 400 and "not open on this account" in foreign.text
        mixed = await client.post(
            url,
            data={
                "csrf": csrf,
                "currency": "EUR",
                "invoice": [str(ids["INV-1050"]), str(ids["INV-1052"])],
            },
        )
        assert mixed.status_code == 400 and "paid separately" in mixed.text
        junk = await client.post(url, data={"csrf": csrf, "currency": "EUR", "invoice": "1 OR 1"})
        assert junk.status_code == 400
        nothing = await client.post(url, data={"csrf": csrf, "currency": "EUR"})
        assert nothing.status_code == 400 and "at least one invoice" in nothing.text
    with Session(services.engine) as session:
        intents = session.exec(select(PaymentIntent)).all()
    assert [i.total_minor for i in intents] == [138456]


async def test_pay_needs_the_csrf_token_its_cookie_and_the_same_site(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    url = f"/l/{token}/account/pay"
    async with _client(web_server) as client:
        page = await _account(client, token)
        good = {"csrf": csrf_of(page), "currency": "EUR", "action": "overdue"}
        assert (await client.post(url, data={**good, "csrf": "0" * 64})).status_code == 403
        cross = await client.post(url, data=good, headers={"Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 403
        evil = await client.post(url, data=good, headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403
    async with _client(web_server) as stranger:  # the right field, but no cookie
        assert (await stranger.post(url, data=good)).status_code == 403
    with Session(services.engine) as session:
        assert session.exec(select(PaymentIntent)).all() == []


class RecordingStripe:
    """The one faked part: Stripe's API. Records each request, answers like Stripe."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def create_session(
        self, params: Any, *, api: str, secret: str, idempotency_key: str
    ) -> CheckoutSession:
        self.requests.append(
            {"params": list(params), "api": api, "secret": secret, "key": idempotency_key}
        )
        return CheckoutSession(
            id="cs_test_123", url="https://checkout.stripe.com/c/pay/cs_test_123"
        )


@pytest.fixture
async def stripe_server(
    relay_env: tuple[Services, MemoryTransport],
) -> AsyncIterator[tuple[str, RecordingStripe]]:
    import uvicorn

    from dunmail.web.app import create_app

    services, _ = relay_env
    app = create_app(services)
    fake = RecordingStripe()
    app.state.checkout_client = fake
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}", fake
    server.should_exit = True
    await task


@pytest.mark.parametrize("checkout", [stripe_checkout()])
async def test_stripe_checkout_gets_a_line_per_invoice_and_the_allocation(
    relay_env: tuple[Services, MemoryTransport], stripe_server: tuple[str, RecordingStripe]
) -> None:
    services, transport = relay_env
    base, fake = stripe_server
    token, _ = await view_token(services, transport)
    async with _client(base) as client:
        page = await _account(client, token)
        ids = invoice_ids(page)
        form = {
            "csrf": csrf_of(page),
            "currency": "EUR",
            "invoice": [str(ids["INV-1051"]), str(ids["INV-1050"])],
        }
        done = await client.post(f"/l/{token}/account/pay", data=form)
    assert done.status_code == 303
    assert done.headers["location"] == "https://checkout.stripe.com/c/pay/cs_test_123"
    (request,) = fake.requests
    params = dict(request["params"])
    assert request["secret"] == STRIPE_SECRET and request["api"] == "https://api.stripe.com"
    assert params["client_reference_id"] == request["key"] == params["metadata[dunmail_intent]"]
    assert [params[f"line_items[{i}][price_data][unit_amount]"] for i in (0, 1)] == [
        "123456",
        "15000",
    ]
    assert params["line_items[0][price_data][currency]"] == "eur"
    assert params["line_items[1][price_data][product_data][metadata][invoice]"] == "INV-1050"
    with Session(services.engine) as session:
        (intent,) = session.exec(select(PaymentIntent)).all()
    assert (intent.provider, intent.provider_ref, intent.total_minor) == (
        "stripe",
        "cs_test_123",
        138456,
    )


@pytest.mark.parametrize(
    ("customer_locale", "heading", "late"),
    [
        (("en", "UTC"), "Your account", "20 days overdue"),
        (("de_DE", "Europe/Berlin"), "Ihr Kundenkonto", "20 Tage überfällig"),
        (("fr_FR", "Europe/Paris"), "Votre compte", "20 jours de retard"),
        (("ro_RO", "Europe/Bucharest"), "Contul dumneavoastră", "20 de zile de întârziere"),
    ],
)
async def test_amounts_and_dates_read_as_in_the_customers_email(
    relay_env: tuple[Services, MemoryTransport], web_server: str, heading: str, late: str
) -> None:
    services, transport = relay_env
    token, text = await view_token(services, transport)
    async with _client(web_server) as client:
        page = await _account(client, token)
    cells = row_cells(page, "INV-1042")
    email_text = re.sub(r"\s+", " ", text)
    due, total = cells[3], cells[5]
    assert re.sub(r"\s+", " ", total) in email_text, (total, email_text)
    assert re.sub(r"\s+", " ", due) in email_text, (due, email_text)
    assert f"<h1>{heading}</h1>" in page
    assert row_cells(page, "INV-1050")[4] == late


async def test_each_invoice_with_a_stored_pdf_links_it_under_the_view_link(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    from mailer.content.models import StoredPDF

    services, transport = relay_env
    token, _ = await view_token(services, transport)
    with Session(services.engine) as session:
        invoice = session.exec(select(Invoice).where(Invoice.number == "INV-1050")).one()
        invoice_id = invoice.id
        session.add(
            StoredPDF(
                tenant_id=invoice.tenant_id,
                document=f"invoice:{invoice.id}",
                version=invoice.version,
                render_key="r" * 64,
                sha256="s" * 64,
                pages=1,
                data=b"%PDF-1.7 portal test",
                created_at=services.clock.now(),
            )
        )
        session.commit()
    async with _client(web_server) as client:
        page = await _account(client, token)
        link = re.search(r'href="(/l/[^"]+/pdf)">Download INV-1050<', page)
        # Under the View link's own token, so revoking it stops the PDF too
        # (tests/test_portal_bank.py::test_revoking_the_view_link_stops_the_pdf_links_it_showed).
        assert link is not None and link.group(1) == f"/l/{token}/account/invoices/{invoice_id}/pdf"
        assert "Download INV-1051" not in page  # no PDF stored for it: no dead link
        pdf = await client.get(link.group(1))
    assert pdf.status_code == 200 and pdf.content == b"%PDF-1.7 portal test"


async def test_hand_offs_are_limited_per_customer_per_hour(
    relay_env: tuple[Services, MemoryTransport], web_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dunmail.services import portal

    monkeypatch.setattr(portal, "INTENTS_PER_HOUR", 2)
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    async with _client(web_server) as client:
        page = await _account(client, token)
        form = {"csrf": csrf_of(page), "currency": "EUR", "action": "overdue"}
        codes = [
            (await client.post(f"/l/{token}/account/pay", data=form)).status_code for _ in range(3)
        ]
        assert codes == [200, 200, 429]
        assert isinstance(services.clock, FixedClock)
        services.clock.advance(timedelta(hours=1, minutes=1))
        again = await client.post(f"/l/{token}/account/pay", data=form)
    assert again.status_code == 200
