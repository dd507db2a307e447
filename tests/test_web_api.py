"""The JSON API through HTTP: a real uvicorn (``web_server``) and httpx, on SQLite and PostgreSQL.

Two tenants share the database (``relay_env`` is overridden here): acme has DEMO_DOC imported,
beta must never see acme's messages or threads.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dunmail.app import Services
from dunmail.web.keyring import create_key, revoke_key
from mailer.clock import FixedClock
from mailer.db import session_scope
from mailer.outbound.memory import MemoryTransport
from tests.conftest import sent_to
from tests.test_bounce_ingest import dsn
from tests.test_cli import write_config
from tests.test_inbox import _three_threads


@pytest.fixture
def relay_env(
    two_tenant_env: tuple[Services, MemoryTransport],
) -> tuple[Services, MemoryTransport]:
    """conftest's ``relay_env`` plus a second tenant, beta (``web_server`` serves this one)."""
    return two_tenant_env


def _key(services: Services, slug: str) -> str:
    with session_scope(services.engine) as session:
        _, key = create_key(
            session, tenant_id=services.tenants.id(slug), name="erp", now=services.clock.now()
        )
    return key


@pytest.fixture
async def api(
    web_server: str, relay_env: tuple[Services, MemoryTransport]
) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in with a fresh acme key."""
    services, _ = relay_env
    headers = {"Authorization": f"Bearer {_key(services, 'acme')}"}
    async with httpx.AsyncClient(base_url=f"{web_server}/api/v1", headers=headers) as client:
        yield client


CUSTOMER: dict[str, Any] = {
    "id": "C-2",
    "name": "Initech",
    "time_zone": "UTC",
    "contacts": [{"email": "ap@initech.example", "name": "AP", "roles": ["ap"]}],
}


def _invoice(**changes: Any) -> dict[str, Any]:
    invoice: dict[str, Any] = {
        "id": "i-2001",
        "number": "INV-2001",
        "customer": "C-2",
        "currency": "EUR",
        "issued_at": "2026-03-01",
        "due_at": "2026-03-31",
        "lines": [{"description": "Licences", "quantity": "2", "unit_price": "50.00"}],
    }
    return {**invoice, **changes}


async def test_requests_without_a_valid_key_are_refused(
    web_server: str, relay_env: tuple[Services, MemoryTransport], caplog: pytest.LogCaptureFixture
) -> None:
    services, _ = relay_env
    caplog.set_level(logging.DEBUG)
    key = _key(services, "acme")
    async with httpx.AsyncClient(base_url=f"{web_server}/api/v1") as client:
        missing = await client.get("/messages")
        wrong = await client.get("/messages", headers={"Authorization": f"Bearer {key[:-2]}xx"})
        junk = await client.post("/customers", json=CUSTOMER, headers={"Authorization": "Bearer x"})
        good = await client.get("/messages", headers={"Authorization": f"Bearer {key}"})
        with session_scope(services.engine) as session:
            revoke_key(session, prefix=key.split("_", 2)[1], now=services.clock.now())
        revoked = await client.get("/messages", headers={"Authorization": f"Bearer {key}"})

    for response in (missing, wrong, junk, revoked):
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
        assert "api key" in response.json()["detail"].lower()
    assert good.status_code == 200
    assert services.ledger.import_document({}, tenant="acme").errors == []  # nothing was imported
    assert key not in caplog.text and key.split("_", 2)[2] not in caplog.text


async def test_upsert_customer_and_invoice_then_send_and_read_the_message(
    api: httpx.AsyncClient, relay_env: tuple[Services, MemoryTransport]
) -> None:
    _, transport = relay_env
    customer = await api.post("/customers", json=CUSTOMER)
    assert customer.status_code == 200, customer.text
    assert customer.json()["outcome"] == "created"
    created = await api.post("/invoices", json=_invoice())
    assert created.status_code == 200, created.text
    assert created.json()["invoice"]["version"] == 1
    assert created.json()["invoice"]["total_minor"] == 10000

    sent = await api.post("/invoices/INV-2001/send", json={"kind": "new_invoice"})
    assert sent.status_code == 200, sent.text
    message = sent.json()
    assert message["status"] == "sent"
    assert [(r["address"], r["status"]) for r in message["recipients"]] == [
        ("ap@initech.example", "accepted")
    ]
    assert list(transport.sent[-1].recipients) == ["ap@initech.example"]

    listed = (await api.get("/messages", params={"limit": 1})).json()
    assert listed["total"] == 1 and listed["items"][0]["uid"] == message["uid"]
    one = (await api.get(f"/messages/{message['uid']}")).json()
    assert one["invoice"] == "INV-2001" and one["customer"] == "C-2"
    assert [a["outcome"] for a in one["attempt_log"]] == ["accepted"]
    assert (await api.get("/messages/ffffffffffffffffffff")).status_code == 404

    marked = await api.post("/invoices/INV-1042/mark-sent")
    assert marked.status_code == 200 and marked.json() == {"invoice": "INV-1042", "cancelled": 0}
    assert (await api.post("/invoices/NOPE/mark-sent")).status_code == 404


async def test_validation_errors_name_the_field(api: httpx.AsyncClient) -> None:
    floating = _invoice(lines=[{"description": "x", "quantity": "1", "unit_price": 12.5}])
    response = await api.post("/invoices", json=floating)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "lines", 0, "unit_price"]
    assert "float" in error["msg"].lower() or "cents" in error["msg"].lower()

    unknown_field = await api.post("/customers", json={**CUSTOMER, "vat": "x"})
    assert unknown_field.status_code == 422
    assert unknown_field.json()["detail"][0]["loc"] == ["body", "vat"]

    # Checks that need the ledger (the currency's precision, references) come from the import.
    precise = _invoice(
        customer="C-1",
        lines=[
            {"description": "a", "quantity": "1", "unit_price": "1.00"},
            {"description": "b", "quantity": "1", "unit_price": "1.001"},
        ],
    )
    refused = await api.post("/invoices", json=precise)
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"] == [
        {"loc": "invoices[0].lines[1].unit_price", "msg": refused.json()["errors"][0]["msg"]}
    ]
    assert "EUR" in refused.json()["errors"][0]["msg"]
    orphan = await api.post("/invoices", json=_invoice(customer="C-404"))
    assert orphan.status_code == 422
    assert [e["loc"] for e in orphan.json()["errors"]] == ["invoices[0].customer"]
    assert (await api.get("/invoices/INV-2001")).status_code == 404


async def test_idempotency_key_replays_the_answer_and_refuses_another_body(
    api: httpx.AsyncClient,
) -> None:
    await api.post("/customers", json=CUSTOMER)
    first = await api.post("/invoices", json=_invoice(), headers={"Idempotency-Key": "k-1"})
    again = await api.post("/invoices", json=_invoice(), headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 200
    # The stored answer, not a second import (which would say "unchanged").
    assert again.json() == first.json() and again.json()["outcome"] == "created"
    assert again.headers["idempotent-replayed"] == "true"
    plain = await api.post("/invoices", json=_invoice())
    assert plain.json()["outcome"] == "unchanged"
    assert (await api.get("/invoices/INV-2001")).json()["version"] == 1

    other = await api.post(
        "/invoices", json=_invoice(due_at="2026-04-30"), headers={"Idempotency-Key": "k-1"}
    )
    assert other.status_code == 422
    assert "different request" in other.json()["detail"]
    assert (await api.get("/invoices/INV-2001")).json()["version"] == 1

    # Actions too: the same hold request twice places one hold.
    hold = {"invoice": "INV-1042", "reason": "dispute", "note": "wrong PO"}
    placed = await api.post("/holds", json=hold, headers={"Idempotency-Key": "h-1"})
    replayed = await api.post("/holds", json=hold, headers={"Idempotency-Key": "h-1"})
    assert placed.status_code == 200, placed.text
    assert replayed.json() == placed.json()
    assert [h["id"] for h in (await api.get("/holds")).json()] == [placed.json()["id"]]
    lifted = await api.delete(f"/holds/{placed.json()['id']}")
    assert lifted.status_code == 200 and lifted.json()["lifted_at"] is not None
    assert (await api.get("/holds")).json() == []


async def test_another_tenant_cannot_read_the_message_or_thread(
    api: httpx.AsyncClient, web_server: str, relay_env: tuple[Services, MemoryTransport]
) -> None:
    services, transport = relay_env
    sent = (await api.post("/invoices/INV-1042/send", json={"kind": "new_invoice"})).json()
    services.inbound.ingest([("file:b.eml", dsn(sent_to(transport)))])
    (thread,) = (await api.get("/threads")).json()
    assert (await api.get(f"/threads/{thread['id']}")).status_code == 200
    suppressed = (await api.get("/suppressions")).json()
    assert [s["address"] for s in suppressed] == ["ap@globex.example"]

    headers = {"Authorization": f"Bearer {_key(services, 'beta')}"}
    async with httpx.AsyncClient(base_url=f"{web_server}/api/v1", headers=headers) as beta:
        assert (await beta.get(f"/messages/{sent['uid']}")).status_code == 404
        assert (await beta.get(f"/threads/{thread['id']}")).status_code == 404
        assert (await beta.get("/messages")).json()["items"] == []
        assert (await beta.get("/threads")).json() == []
        assert (await beta.get("/suppressions")).json() == []
        assert (await beta.post("/invoices/INV-1042/send", json={})).status_code == 404
        # The same Idempotency-Key is the other tenant's own.
        hold = {"customer": "C-1", "reason": "manual"}
        assert (
            await beta.post("/holds", json=hold, headers={"Idempotency-Key": "h-1"})
        ).status_code == 404


async def test_openapi_documents_the_routes(web_server: str) -> None:
    async with httpx.AsyncClient(base_url=web_server) as client:
        spec = (await client.get("/openapi.json")).json()
        assert (await client.get("/docs")).status_code == 200
    paths = spec["paths"]
    for path in (
        "/api/v1/customers",
        "/api/v1/invoices",
        "/api/v1/payments",
        "/api/v1/credit-notes",
        "/api/v1/invoices/{number}/mark-sent",
        "/api/v1/invoices/{number}/send",
        "/api/v1/holds",
        "/api/v1/holds/{hold_id}",
        "/api/v1/messages",
        "/api/v1/messages/{uid}",
        "/api/v1/threads",
        "/api/v1/threads/{thread_id}",
        "/api/v1/suppressions",
    ):
        assert path in paths, path
    post = paths["/api/v1/invoices"]["post"]
    assert "Idempotency-Key" in [p["name"] for p in post["parameters"]]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert "unit_price" in str(spec["components"]["schemas"]["LineRecord"])


def test_cli_creates_lists_and_revokes_keys(tmp_path: Path) -> None:
    """``dunmail apikey``: the key is printed once (stdout alone); lists show only its prefix."""
    from typer.testing import CliRunner

    from dunmail.cli import app

    config = str(write_config(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}", 2525))
    runner = CliRunner()

    def dunmail(*args: str) -> Any:
        return runner.invoke(app, [*args, "--config", config])

    created = dunmail("apikey", "create", "erp-sync", "--tenant", "acme")
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"dm_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", key)
    prefix = key.split("_", 2)[1]
    listed = dunmail("apikey", "list", "--json")
    (row,) = json.loads(listed.stdout)
    assert (row["prefix"], row["tenant"], row["name"], row["revoked_at"]) == (
        prefix,
        "acme",
        "erp-sync",
        None,
    )
    assert key.split("_", 2)[2] not in listed.stdout
    assert dunmail("apikey", "revoke", prefix).exit_code == 0
    (row,) = json.loads(dunmail("apikey", "list", "--json").stdout)
    assert row["revoked_at"] is not None
    assert dunmail("apikey", "revoke", "00000000").exit_code == 2


async def test_threads_page_by_cursor_and_filter(
    api: httpx.AsyncClient, relay_env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = relay_env
    await _three_threads(services, transport, clock)
    first = (await api.get("/threads", params={"limit": 2})).json()
    assert [t["document"] for t in first] == ["INV-3", "INV-2"]
    rest = (await api.get("/threads", params={"limit": 2, "before": first[-1]["cursor"]})).json()
    assert [t["document"] for t in rest] == ["INV-1"]
    replied = (await api.get("/threads", params={"only": "replied"})).json()
    assert [t["document"] for t in replied] == ["INV-2"]
    bad = await api.get("/threads", params={"before": "not-a-cursor"})
    assert bad.status_code == 400 and "not a thread cursor" in bad.json()["detail"]
    assert (await api.get("/threads", params={"only": "all"})).status_code == 422
    assert (await api.get("/threads", params={"limit": 501})).status_code == 422
