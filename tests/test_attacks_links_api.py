"""The attack catalogue, links api family: Tampered, expired, revoked and cross-tenant links; API
calls with another tenant's key.

Part of the catalogue split by attack family (``tests/test_attacks_*.py``); every attack goes
through the real paths, on SQLite and PostgreSQL where a database is involved.
"""

from __future__ import annotations

import email
import re
from datetime import timedelta
from email import policy
from email.message import EmailMessage

import httpx
import pytest
from sqlmodel import Session, select

from dunmail.app import Services
from dunmail.web.keyring import create_key
from dunmail.web.link_service import revoke_links
from mailer.clock import FixedClock
from mailer.db import session_scope
from mailer.ledger.models import Customer, Hold
from mailer.outbound.links import issue_link, verify_link
from mailer.outbound.memory import MemoryTransport, SentMail
from tests.test_bounce_ingest import _sent, dsn
from tests.test_web_ui import fast_argon2

__all__ = ["fast_argon2"]  # a fixture used here, imported from test_web_ui


@pytest.fixture
def relay_env(
    two_tenant_env: tuple[Services, MemoryTransport],
) -> tuple[Services, MemoryTransport]:
    """conftest's ``relay_env`` plus a second tenant, "beta" (what ``web_server`` serves)."""
    return two_tenant_env


# -- 6. links ----------------------------------------------------------------------------------


def _view_token(sent: SentMail, services: Services) -> str:
    parsed = email.message_from_bytes(sent.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None
    for token in re.findall(r"/l/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", body.get_content()):
        if verify_link(token, keys=services.links.keys, now=services.clock.now()).purpose == "view":
            return str(token)
    raise AssertionError("no view link in the email")


def _flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


def _refused(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert "location" not in response.headers
    assert "INV-1042" not in response.text and "Globex" not in response.text


async def test_tampered_expired_revoked_and_cross_tenant_links_lead_nowhere(
    relay_env: tuple[Services, MemoryTransport], web_server: str, clock: FixedClock
) -> None:
    services, transport = relay_env
    view = _view_token(await _sent(services, transport), services)
    payload, mac = view.split(".")
    claims = verify_link(view, keys=services.links.keys, now=clock.now())
    cross = issue_link(
        "view",
        services.tenants.id("beta"),
        claims.document,
        claims.version,
        key=services.links.signing,
        expires_at=claims.expires_at,
        message=claims.message,
    )
    evil = {"next": "https://evil.example/", "url": "https://evil.example/"}
    async with httpx.AsyncClient(base_url=web_server, follow_redirects=False) as client:
        assert (await client.get(f"/l/{view}")).status_code == 200
        tampered = [
            f"{_flip(payload, 3)}.{mac}",
            f"{payload}.{_flip(mac, 3)}",
            f"{payload}.",
            f"{payload}.{mac}{mac}",
            payload,
            "x.y",
        ]
        for token in [*tampered, cross]:
            for suffix in ("", "/pdf"):
                _refused(await client.get(f"/l/{token}{suffix}", params=evil), 404)
            _refused(await client.post(f"/l/{token}/refresh"), 404)

        clock.set(claims.expires_at + timedelta(seconds=1))
        expired = await client.get(f"/l/{view}", params=evil)
        assert expired.status_code == 410 and "location" not in expired.headers
        assert "evil.example" not in expired.text
        clock.set(claims.expires_at - timedelta(days=1))

        revoke_links(services, tenant="acme", invoice="INV-1042", by="t")
        revoked = await client.get(f"/l/{view}", params=evil)
        assert revoked.status_code == 410 and "location" not in revoked.headers
        assert (await client.get(f"/l/{view}/pdf")).status_code == 410


# -- 7. another tenant's API key ---------------------------------------------------------------


def _api_key(services: Services, slug: str) -> str:
    with session_scope(services.engine) as session:
        _, key = create_key(
            session, tenant_id=services.tenants.id(slug), name="erp", now=services.clock.now()
        )
    return key


async def test_another_tenants_key_reads_and_touches_nothing(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    acme = {"Authorization": f"Bearer {_api_key(services, 'acme')}"}
    beta = {"Authorization": f"Bearer {_api_key(services, 'beta')}"}
    base = f"{web_server}/api/v1"
    async with (
        httpx.AsyncClient(base_url=base, headers=acme) as a,
        httpx.AsyncClient(base_url=base, headers=beta) as b,
    ):
        message = (await a.post("/invoices/INV-1042/send", json={"kind": "new_invoice"})).json()
        services.inbound.ingest([("file:b.eml", dsn(transport.sent[-1]))])
        (thread,) = (await a.get("/threads")).json()
        hold = (await a.post("/holds", json={"invoice": "INV-1042", "reason": "dispute"})).json()
        sent_before = len(transport.sent)

        assert (await b.get(f"/messages/{message['uid']}")).status_code == 404
        assert (await b.get(f"/threads/{thread['id']}")).status_code == 404
        assert (await b.get("/invoices/INV-1042")).status_code == 404
        assert (await b.get("/messages")).json()["items"] == []
        assert (await b.get("/threads")).json() == []
        assert (await b.get("/holds")).json() == []
        assert (await b.get("/suppressions")).json() == []
        writes = [
            b.post("/holds", json={"invoice": "INV-1042", "reason": "dispute"}),
            b.post("/holds", json={"customer": "C-1", "reason": "manual"}),
            b.delete(f"/holds/{hold['id']}"),
            b.post("/invoices/INV-1042/send", json={"kind": "invoice_reminder"}),
            b.post("/invoices/INV-1042/mark-sent"),
        ]
        for write in writes:
            response = await write
            assert response.status_code == 404, response.text
        # A record under the same external id is beta's own; acme's stays as it was.
        customer = {"id": "C-1", "name": "Hijacked", "time_zone": "UTC", "contacts": []}
        assert (await b.post("/customers", json=customer)).status_code == 200

        assert len(transport.sent) == sent_before
        assert [h["id"] for h in (await a.get("/holds")).json()] == [hold["id"]]
        assert (await a.get("/invoices/INV-1042")).json()["sent_at"] is not None
    with Session(services.engine) as session:
        (row,) = session.exec(select(Hold)).all()
        assert row.lifted_at is None and row.tenant_id == services.tenants.id("acme")
        names = {(c.tenant_id, c.name) for c in session.exec(select(Customer)).all()}
    assert names == {
        (services.tenants.id("acme"), "Globex"),
        (services.tenants.id("beta"), "Hijacked"),
    }
    assert services.inbox.threads(tenant="beta", status=None) == []
