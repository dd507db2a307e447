"""The JSON API's ledger lists and reads (customers, invoices, payments, credit notes, messages):
keyset pages with an opaque cursor, a maximum limit, filters, and one tenant's key never seeing
another's rows. The app in process through httpx, on SQLite and PostgreSQL (``db_url``)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dunmail.app import Services
from dunmail.web.api_service import LISTS, CursorError, decode_cursor, encode_cursor
from dunmail.web.app import create_app
from dunmail.web.deps import MAX_ROW_ID
from dunmail.web.keyring import create_key
from mailer.db import session_scope
from mailer.outbound.memory import MemoryTransport

CUSTOMERS = 7  # C-1 (DEMO_DOC) and C-10 .. C-15: pages of 3 are 3, 3, 1


def _document(tag: str) -> dict[str, Any]:
    """Six customers with an invoice each (every other one paid), a payment and a credit note
    for the first; ``tag`` marks names so a row shows whose it is."""
    customers = [
        {
            "id": f"C-1{n}",
            "name": f"{tag} customer {n}",
            "time_zone": "UTC",
            "contacts": [{"email": f"ap{n}@{tag}.example", "roles": ["ap"]}],
        }
        for n in range(6)
    ]
    invoices = [
        {
            "id": f"i-{n}",
            "number": f"INV-{2000 + n}",
            "customer": f"C-1{n}",
            "currency": "EUR",
            "issued_at": "2026-03-01",
            "due_at": "2026-03-31",
            "status": "paid" if n % 2 else "open",
            "lines": [{"description": f"{tag} work", "quantity": "1", "unit_price": "10.00"}],
        }
        for n in range(6)
    ]
    payment = {
        "id": "p-1",
        "customer": "C-10",
        "amount": "4.00",
        "currency": "EUR",
        "received_at": "2026-03-05T10:00:00Z",
        "invoices": [{"invoice": "i-0", "amount": "4.00"}],
    }
    credit = {
        "id": "cn-1",
        "number": "CN-1",
        "customer": "C-10",
        "currency": "EUR",
        "issued_at": "2026-03-06",
        "lines": [{"description": f"{tag} refund", "quantity": "1", "unit_price": "1.00"}],
        "reason": tag,
    }
    return {
        "customers": customers,
        "invoices": invoices,
        "payments": [payment],
        "credit_notes": [credit],
    }


def _key(services: Services, slug: str) -> str:
    with session_scope(services.engine) as session:
        _, key = create_key(
            session, tenant_id=services.tenants.id(slug), name="erp", now=services.clock.now()
        )
    return key


@pytest.fixture
async def clients(
    two_tenant_env: tuple[Services, MemoryTransport],
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """acme's and beta's API clients; both tenants hold records with the same ERP ids."""
    services, _ = two_tenant_env
    for slug in ("acme", "beta"):
        report = services.ledger.import_document(_document(slug), tenant=slug)
        assert report.errors == [], report.errors
    app = create_app(services)
    transport = httpx.ASGITransport(app=app)
    base = "http://dunmail.test/api/v1"
    async with (
        httpx.AsyncClient(
            transport=transport,
            base_url=base,
            headers={"Authorization": f"Bearer {_key(services, 'acme')}"},
        ) as acme,
        httpx.AsyncClient(
            transport=transport,
            base_url=base,
            headers={"Authorization": f"Bearer {_key(services, 'beta')}"},
        ) as beta,
    ):
        yield acme, beta


async def _walk(client: httpx.AsyncClient, path: str, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of a list, following ``next_cursor`` until it is null."""
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        asked = {**params, **({"cursor": cursor} if cursor else {})}
        answer = await client.get(path, params=asked)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "the cursor never ended"


async def test_customers_come_in_keyset_pages_without_gaps_or_repeats(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    acme, _ = clients
    pages = await _walk(acme, "/customers", limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    ids = [c["id"] for page in pages for c in page]
    assert sorted(ids) == sorted(["C-1", *(f"C-1{n}" for n in range(6))])
    assert len(set(ids)) == CUSTOMERS
    assert all(c["name"].startswith("acme") for c in pages[0][1:])
    # A page boundary holds while rows are added: nothing is skipped or shown twice.
    first = (await acme.get("/customers", params={"limit": 3})).json()
    await acme.post("/customers", json={"id": "C-0", "name": "acme late", "time_zone": "UTC"})
    rest = await _walk(acme, "/customers", limit=3, cursor=first["next_cursor"])
    after = [c["id"] for page in rest for c in page]
    assert after == ids[3:] + ["C-0"]


async def test_the_limit_has_a_maximum_and_a_bad_cursor_is_a_422(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    acme, _ = clients
    assert (await acme.get("/customers", params={"limit": 501})).status_code == 422
    assert (await acme.get("/customers", params={"limit": 0})).status_code == 422
    whole = (await acme.get("/customers", params={"limit": 500})).json()
    assert len(whole["items"]) == CUSTOMERS and whole["next_cursor"] is None
    for cursor in ("not-a-cursor", "!!", "x" * 300):
        bad = await acme.get("/customers", params={"cursor": cursor})
        assert bad.status_code == 422, (cursor, bad.text)
        assert bad.json()["detail"][0]["loc"][-1] == "cursor"
    # A cursor of one list is refused by another.
    invoices = (await acme.get("/invoices", params={"limit": 1})).json()
    crossed = await acme.get("/customers", params={"cursor": invoices["next_cursor"]})
    assert crossed.status_code == 422


async def test_invoices_filter_by_status_and_customer(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    acme, _ = clients
    paid = [i for page in await _walk(acme, "/invoices", status="paid", limit=2) for i in page]
    assert sorted(i["number"] for i in paid) == ["INV-2001", "INV-2003", "INV-2005"]
    assert {i["status"] for i in paid} == {"paid"}
    one = (await acme.get("/invoices", params={"customer": "C-12"})).json()["items"]
    assert [(i["number"], i["customer"]) for i in one] == [("INV-2002", "C-12")]
    assert (await acme.get("/invoices", params={"status": "lost"})).status_code == 422
    nobody = (await acme.get("/invoices", params={"customer": "C-404"})).json()
    assert nobody == {"items": [], "next_cursor": None, "limit": 50}


async def test_records_by_id_and_number(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    acme, _ = clients
    customer = (await acme.get("/customers/C-1")).json()
    assert customer["name"] == "Globex"
    assert [c["email"] for c in customer["contacts"]] == [
        "ap@globex.example",
        "billing@globex.example",
    ]
    payment = (await acme.get("/payments/p-1")).json()
    assert payment["amount_minor"] == 400 and payment["customer"] == "C-10"
    assert payment["allocations"] == [{"invoice": "INV-2000", "amount_minor": 400}]
    (listed,) = (await acme.get("/payments")).json()["items"]
    assert listed["id"] == "p-1"
    note = (await acme.get("/credit-notes/CN-1")).json()
    assert note["reason"] == "acme" and note["amount_minor"] == 100
    assert [n["number"] for n in (await acme.get("/credit-notes")).json()["items"]] == ["CN-1"]
    for missing in ("/customers/C-404", "/payments/p-404", "/credit-notes/CN-404"):
        answer = await acme.get(missing)
        assert answer.status_code == 404 and "404" in answer.json()["detail"]


async def test_a_tenant_never_sees_another_tenants_rows(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """Both tenants hold C-10, p-1 and CN-1: each key reads its own, and only its own."""
    acme, beta = clients
    for client, tag in ((acme, "acme"), (beta, "beta")):
        assert (await client.get("/customers/C-10")).json()["name"] == f"{tag} customer 0"
        assert (await client.get("/credit-notes/CN-1")).json()["reason"] == tag
        for path in ("/customers", "/invoices", "/payments", "/credit-notes"):
            rows = [r for page in await _walk(client, path, limit=2) for r in page]
            assert rows, path
            text = repr(rows)
            other = "beta" if tag == "acme" else "acme"
            assert other not in text, (path, tag)
    beta_ids = [c["id"] for c in (await beta.get("/customers")).json()["items"]]
    assert "C-1" not in beta_ids  # acme's DEMO_DOC customer
    assert (await beta.get("/customers/C-1")).status_code == 404
    assert (await beta.get("/invoices/INV-1042")).status_code == 404
    # A cursor from acme's walk reads only beta's rows after that point, never acme's.
    acme_page = (await acme.get("/customers", params={"limit": 1})).json()
    through = (await beta.get("/customers", params={"cursor": acme_page["next_cursor"]})).json()
    assert all(c["name"].startswith("beta") for c in through["items"])


async def test_messages_follow_a_cursor_too(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    two_tenant_env: tuple[Services, MemoryTransport],
) -> None:
    acme, beta = clients
    for number in ("INV-2000", "INV-2002", "INV-2004"):
        sent = await acme.post(f"/invoices/{number}/send", json={"kind": "new_invoice"})
        assert sent.status_code == 200, sent.text
    pages = await _walk(acme, "/messages", limit=2)
    assert [len(p) for p in pages] == [2, 1]
    invoices = [m["invoice"] for page in pages for m in page]
    assert invoices == ["INV-2004", "INV-2002", "INV-2000"]  # newest first
    assert (await beta.get("/messages")).json()["items"] == []
    bad = await acme.get("/messages", params={"cursor": "bm90LWEtY3Vyc29y"})
    assert bad.status_code == 422


@given(last=st.integers(min_value=0, max_value=MAX_ROW_ID), kind=st.sampled_from(sorted(LISTS)))
def test_a_cursor_stands_for_its_row_and_list(last: int, kind: str) -> None:
    cursor = encode_cursor(kind, last)
    assert cursor is not None and re.fullmatch(r"[A-Za-z0-9_-]+", cursor)
    assert decode_cursor(kind, cursor) == last
    for other in set(LISTS) - {kind}:
        with pytest.raises(CursorError):
            decode_cursor(other, cursor)


@given(text=st.text(max_size=60))
def test_any_other_text_is_a_cursor_error_not_a_crash(text: str) -> None:
    try:
        last = decode_cursor("customers", text)
    except CursorError:
        return
    assert last is not None and 0 <= last <= MAX_ROW_ID  # only a cursor we could have given


async def test_openapi_documents_the_pages(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    acme, _ = clients
    spec = (await acme.get("http://dunmail.test/openapi.json")).json()
    for path in ("/customers", "/invoices", "/payments", "/credit-notes", "/messages"):
        params = {p["name"]: p for p in spec["paths"][f"/api/v1{path}"]["get"]["parameters"]}
        assert params["limit"]["schema"]["maximum"] == 500, path
        assert "cursor" in params, path
    for path in ("/customers/{customer_id}", "/payments/{payment_id}", "/credit-notes/{number}"):
        assert "get" in spec["paths"][f"/api/v1{path}"], path
