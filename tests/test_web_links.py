"""Customers' links through real HTTP: the hosted page, Pay redirects, PDFs, expiry and fresh
links, revocation, tampering, cross-tenant tokens, key rotation, and clicks in the inbox.

Every test sends a real invoice email through the outbox into a MemoryTransport, takes the links
out of its text part, and follows them against a real uvicorn (``web_server``), on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import copy
import email
import logging
import re
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select

from dunmail.app import Services
from dunmail.logs import ScrubFilter
from dunmail.web.link_service import revoke_links
from mailer.clock import FixedClock
from mailer.inbox_models import ThreadStatus
from mailer.outbound.links import issue_link, verify_link
from mailer.outbound.memory import MemoryTransport, SentMail
from mailer.outbound.models import LinkEvent, Message, WebhookDelivery
from mailer.outbound.verp import derive_key
from tests.conftest import DEMO_DOC, WEASYPRINT_SKIP, emails, make_config
from tests.test_bounce_ingest import dsn
from tests.test_cli import dunmail, write_config

PAY_URL = "https://pay.acme.example/invoice/{number}?customer={customer}"
EVIL_NAME = "Globex <script>alert(1)</script>"
EVIL_LINE = "Support <img src=x onerror=alert(2)>"
UA = "Mozilla/5.0 <script>ua()</script>"


@pytest.fixture
def pdfs_wanted() -> bool:
    """Overridden by ``@pytest.mark.parametrize("pdfs_wanted", [True])`` for the PDF test."""
    return False


@pytest.fixture
def services_config(
    tmp_path: Path, db_url: str, pdfs_wanted: bool, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """This module's shared ``services``: acme with a payment page, a webhook and branding,
    and a second tenant ("beta")."""
    if pdfs_wanted and WEASYPRINT_SKIP:
        pytest.skip(WEASYPRINT_SKIP)
    acme = make_config(tmp_path, db_url).tenants["acme"].model_dump(mode="json")
    acme["payments"] = {"pay_url": PAY_URL}
    monkeypatch.setenv("ACME_HOOK", "test-webhook-secret")
    acme["webhooks"] = [{"url": "https://erp.acme.example/hook", "secret_env": "ACME_HOOK"}]
    acme["branding"] = {
        "brand_color": "#aa3300",
        "address": ["1 Dock Road", "Leeds"],
        "footer": "Company no. 0424242",
    }
    if pdfs_wanted:
        acme.pop("emails")
    beta = {"name": "Beta Ltd", "email": "ar@beta.example"}
    return {"pdfs": pdfs_wanted, "tenants": {"acme": acme, "beta": beta}}


@pytest.fixture
def relay_env(services: Services, transport: MemoryTransport) -> tuple[Services, MemoryTransport]:
    """conftest's ``relay_env`` (which ``web_server`` serves) on this module's settings, with
    a customer name and invoice line that carry markup."""
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"][0]["name"] = EVIL_NAME
    doc["invoices"][0]["lines"][0]["description"] = EVIL_LINE
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    return services, transport


async def _send(services: Services, transport: MemoryTransport) -> SentMail:
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    return transport.sent[-1]


def _links(sent: SentMail, services: Services) -> dict[str, str]:
    """purpose -> token, from the text part of the email as it was sent."""
    parsed = email.message_from_bytes(sent.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None
    tokens = re.findall(r"/l/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", body.get_content())
    found = {}
    for token in tokens:
        claims = verify_link(token, keys=services.links.keys, now=services.clock.now())
        found[claims.purpose] = token
    return found


def _events(services: Services) -> list[tuple[str, str, str]]:
    with Session(services.engine) as session:
        rows = session.exec(select(LinkEvent).order_by(col(LinkEvent.id))).all()
        return [(e.purpose, e.action, e.user_agent) for e in rows]


def _client(base: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, follow_redirects=False, headers={"User-Agent": UA})


def _flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


async def test_view_page_shows_the_emailed_invoice_branded_and_escaped(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    links = _links(await _send(services, transport), services)
    assert set(links) == {"view", "pay"}
    async with _client(web_server) as client:
        response = await client.get(f"/l/{links['view']}")
    assert response.status_code == 200
    html = response.text
    assert "Invoice INV-1042" in html and "€120.00" in html
    assert "#aa3300" in html and "1 Dock Road" in html and "Company no. 0424242" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html and "<img src=x" not in html
    assert "Download PDF" not in html  # this tenant attaches no PDFs
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "private, no-store"
    # The token appears only in its own page's sub-paths (the PDF, the customer's account).
    own = html.replace(f"/l/{links['view']}/pdf", "").replace(f"/l/{links['view']}/account", "")
    assert links["view"] not in own
    # The page's own Pay button is a signed pay link for the same email.
    pay = re.search(r'href="/l/([^"]+)">Pay now', html)
    assert pay is not None
    async with _client(web_server) as client:
        paid = await client.get(f"/l/{pay.group(1)}")
    assert paid.status_code == 303
    assert paid.headers["location"] == "https://pay.acme.example/invoice/INV-1042?customer=C-1"
    assert _events(services) == [("view", "opened", UA), ("pay", "redirected", UA)]
    with Session(services.engine) as session:
        hooks = session.exec(
            select(WebhookDelivery)
            .where(WebhookDelivery.event == "link.clicked")
            .order_by(col(WebhookDelivery.id))
        ).all()
    assert [(h.tenant_id, h.event) for h in hooks] == [
        (services.tenants.id("acme"), "link.clicked")
    ] * 2
    uid = verify_link(links["view"], keys=services.links.keys, now=services.clock.now()).message
    data = hooks[0].payload["data"]
    assert (data["message"], data["purpose"], data["action"]) == (uid, "view", "opened")
    assert links["view"] not in str(hooks[0].payload)


async def test_pay_redirects_only_to_the_configured_url_and_tampering_is_a_404(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    pay = _links(await _send(services, transport), services)["pay"]
    payload, mac = pay.split(".")
    async with _client(web_server) as client:
        response = await client.get(f"/l/{pay}", params={"next": "https://evil.example"})
        assert response.status_code == 303
        assert response.headers["location"] == (
            "https://pay.acme.example/invoice/INV-1042?customer=C-1"
        )
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        for forged in (f"{_flip(payload, 5)}.{mac}", f"{payload}.{_flip(mac, 3)}", "x.y", "nope"):
            refused = await client.get(f"/l/{forged}", params={"next": "https://evil.example"})
            assert refused.status_code == 404
            assert "location" not in refused.headers
            assert "This link is not valid" in refused.text
            assert "evil.example" not in refused.text
    assert [action for _, action, _ in _events(services)] == ["redirected"]


async def test_an_expired_link_offers_a_fresh_one_to_the_contacts_on_file_rate_limited(
    relay_env: tuple[Services, MemoryTransport], web_server: str, clock: FixedClock
) -> None:
    services, transport = relay_env
    view = _links(await _send(services, transport), services)["view"]
    expires = verify_link(view, keys=services.links.keys, now=clock.now()).expires_at
    clock.set(expires + timedelta(days=1))
    async with _client(web_server) as client:
        gone = await client.get(f"/l/{view}")
        assert gone.status_code == 410
        assert "This link has expired" in gone.text
        assert f'action="/l/{view}/refresh"' in gone.text
        sent = await client.post(f"/l/{view}/refresh", data={"email": "thief@evil.example"})
        assert sent.status_code == 200
        assert "contacts we have on file" in sent.text
        assert "globex.example" not in sent.text
        for _ in range(2):  # fresh_links_per_day = 3
            assert (await client.post(f"/l/{view}/refresh")).status_code == 200
        limited = await client.post(f"/l/{view}/refresh")
        assert limited.status_code == 429
    with Session(services.engine) as session:
        fresh = session.exec(
            select(Message).where(col(Message.occasion).startswith("fresh link"))
        ).all()
    assert sorted(m.occasion or "" for m in fresh) == [f"fresh link {n}" for n in (1, 2, 3)]
    assert all(m.manual and m.kind == "new_invoice" for m in fresh)
    # The copies go out like any email: to the contacts, with links that work again.
    await services.sending.deliver()
    assert {tuple(sorted(s.recipients)) for s in emails(transport)[1:]} == {
        ("ap@globex.example", "billing@globex.example")
    }
    new_view = _links(transport.sent[-1], services)["view"]
    async with _client(web_server) as client:
        assert (await client.get(f"/l/{new_view}")).status_code == 200
        # A day later the window has moved on: one more may be asked for.
        clock.advance(timedelta(days=1, seconds=1))
        assert (await client.post(f"/l/{view}/refresh")).status_code == 200
    actions = [a for _, a, _ in _events(services)]
    assert actions.count("refreshed") == 4 and actions[0] == "refused"


async def test_revoked_links_and_a_revoked_invoice_are_gone(
    relay_env: tuple[Services, MemoryTransport], web_server: str, tmp_path: Path, db_url: str
) -> None:
    services, transport = relay_env
    links = _links(await _send(services, transport), services)
    what = revoke_links(
        services, tenant="acme", token=f"http://x/l/{links['view']}", reason="forwarded", by="t"
    )
    assert what.startswith("the view link to invoice:")
    async with _client(web_server) as client:
        revoked = await client.get(f"/l/{links['view']}")
        assert revoked.status_code == 410 and "has been revoked" in revoked.text
        assert "/refresh" in revoked.text  # a revoked link may still ask for a fresh one
        assert (await client.get(f"/l/{links['pay']}")).status_code == 303
        cli = dunmail(
            write_config(tmp_path, db_url, 2525),
            *("link", "revoke", "--invoice", "INV-1042", "--reason", "sent in error"),
        )
        assert cli.returncode == 0, cli.stderr
        assert cli.stdout.strip() == "revoked every link to invoice INV-1042"
        for token in links.values():
            withdrawn = await client.get(f"/l/{token}")
            assert withdrawn.status_code == 410
            assert "withdrawn" in withdrawn.text and "/refresh" not in withdrawn.text
        assert (await client.post(f"/l/{links['view']}/refresh")).status_code == 410
    revoke_links(services, tenant="acme", invoice="INV-1042", by="t")  # twice is harmless


async def test_a_token_naming_another_tenants_email_is_a_404(
    relay_env: tuple[Services, MemoryTransport], web_server: str, clock: FixedClock
) -> None:
    services, transport = relay_env
    view = _links(await _send(services, transport), services)["view"]
    claims = verify_link(view, keys=services.links.keys, now=clock.now())
    forged = issue_link(
        "view",
        services.tenants.id("beta"),
        claims.document,
        claims.version,
        key=services.links.signing,
        expires_at=claims.expires_at,
        message=claims.message,
    )
    async with _client(web_server) as client:
        response = await client.get(f"/l/{forged}")
        assert response.status_code == 404
        assert "INV-1042" not in response.text and "Globex" not in response.text
        assert (await client.get(f"/l/{forged}/pdf")).status_code == 404
        assert (await client.post(f"/l/{forged}/refresh")).status_code == 404
    assert _events(services) == []


async def test_a_rotated_out_key_verifies_only_while_it_is_configured(
    relay_env: tuple[Services, MemoryTransport], web_server: str, clock: FixedClock
) -> None:
    services, transport = relay_env
    view = _links(await _send(services, transport), services)["view"]
    claims = verify_link(view, keys=services.links.keys, now=clock.now())
    old_key = derive_key(b"the secret before the rotation", "links")
    old = issue_link(
        "view",
        claims.tenant_id,
        claims.document,
        claims.version,
        key=old_key,
        expires_at=claims.expires_at,
        message=claims.message,
    )
    async with _client(web_server) as client:
        assert (await client.get(f"/l/{old}")).status_code == 404
        services.links.keys.append(old_key)
        assert (await client.get(f"/l/{old}")).status_code == 200


@pytest.mark.parametrize("pdfs_wanted", [True])
async def test_the_pdf_download_is_the_attached_version(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    sent = await _send(services, transport)
    parsed = email.message_from_bytes(sent.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    (attachment,) = list(parsed.iter_attachments())
    view = _links(sent, services)["view"]
    async with _client(web_server) as client:
        page = await client.get(f"/l/{view}")
        assert f'href="/l/{view}/pdf"' in page.text
        response = await client.get(f"/l/{view}/pdf")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["cache-control"] == "private, no-store"
    assert response.headers["content-disposition"].startswith('attachment; filename="INV-1042.pdf"')
    assert response.content.startswith(b"%PDF-")
    assert response.content == attachment.get_content()
    assert ("view", "downloaded", UA) in _events(services)


async def test_clicks_show_in_the_inbox_thread_as_text(
    relay_env: tuple[Services, MemoryTransport], web_server: str, clock: FixedClock
) -> None:
    services, transport = relay_env
    sent = await _send(services, transport)
    links = _links(sent, services)
    services.inbound.ingest([("file:bounce.eml", dsn(sent))])  # a bounce opens the thread
    (thread,) = services.inbox.threads(tenant="acme", status=None)
    clock.advance(timedelta(minutes=5))
    async with _client(web_server) as client:
        await client.get(f"/l/{links['view']}")
        await client.get(f"/l/{links['pay']}")
    timeline = services.inbox.thread(thread["id"], tenant="acme")["timeline"]
    clicks = [(e["summary"], e["detail"]) for e in timeline if e["type"] == "click"]
    assert clicks == [("INV-1042: viewed", UA), ("INV-1042: Pay clicked", UA)]


def test_the_access_log_never_shows_a_token() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/l/eyJwIjoi.c2lnbmF0dXJl/pdf?x=1", "1.1", 200),
        None,
    )
    assert ScrubFilter().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /l/[token]/pdf?x=1 HTTP/1.1" 200'


async def test_a_click_without_a_thread_files_a_resolved_one_that_a_bounce_reopens(
    relay_env: tuple[Services, MemoryTransport], web_server: str, clock: FixedClock
) -> None:
    services, transport = relay_env
    sent = await _send(services, transport)
    links = _links(sent, services)
    async with _client(web_server) as client:
        await client.get(f"/l/{links['view']}")
    # The view is on the document's timeline, but it is nobody's work: no open thread.
    assert services.inbox.threads(tenant="acme", status=ThreadStatus.OPEN) == []
    (thread,) = services.inbox.threads(tenant="acme", status=None)
    assert thread["status"] == "resolved"
    timeline = services.inbox.thread(thread["id"], tenant="acme")["timeline"]
    assert [e["summary"] for e in timeline if e["type"] == "click"] == ["INV-1042: viewed"]
    clock.advance(timedelta(minutes=5))
    services.inbound.ingest([("file:bounce.eml", dsn(sent))])
    (reopened,) = services.inbox.threads(tenant="acme", status=ThreadStatus.OPEN)
    assert reopened["id"] == thread["id"]
