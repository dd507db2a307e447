"""The clerk's pages in plain words, through the running app (conftest's uvicorn ``web_server``):
customer and document search, the customer page, the outbox's outcomes, the suppression list's
since/why/by, the assignee, resending any email of a thread, and the tenant's language.

Two tenants: "acme" (English) and "beta" (French), whose clerks must see nothing of each other.
On SQLite and PostgreSQL, as every database test.
"""

from __future__ import annotations

import copy
import html
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dunmail.app import Services
from mailer.clock import FixedClock
from mailer.outbound.memory import MemoryTransport
from tests.conftest import DEMO_DOC, _demo_services
from tests.test_web_ui import SCRIPT, add_user, bounced, csrf_of, fast_argon2, login

__all__ = ["fast_argon2"]  # a fixture, imported from test_web_ui


def beta_doc(name: str = "Beta Secret Co") -> dict[str, Any]:
    """DEMO_DOC for beta: its own customer B-7 and invoice BETA-9."""
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"][0].update(id="B-7", name=name)
    doc["customers"][0]["contacts"] = [{"email": "ap@beta-client.example", "roles": ["ap"]}]
    doc["invoices"][0].update(id="b-9", number="BETA-9", customer="B-7")
    return doc


@pytest.fixture
async def relay_env(
    tmp_path: Path, db_url: str, clock: FixedClock
) -> AsyncIterator[tuple[Services, MemoryTransport]]:
    """acme (English, DEMO_DOC) and beta (French, one customer of its own)."""
    beta = {
        "name": "Beta SARL",
        "email": "ar@beta.example",
        "locale": "fr",
        "dkim": [
            {"domain": "beta.example", "selector": "b1", "key_file": str(tmp_path / "b1.pem")}
        ],
    }
    async for services, transport in _demo_services(tmp_path, db_url, clock, beta=beta):
        assert services.ledger.import_document(beta_doc(), tenant="beta").errors == []
        yield services, transport


@pytest.fixture
async def client(web_server: str, fast_argon2: None) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web_server, timeout=10) as client:
        yield client


async def _signed_in(client: httpx.AsyncClient, services: Services, who: str, tenant: str) -> None:
    add_user(services, who, tenant)
    assert (await login(client, who)).status_code == 303


def _customer_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'href="/inbox/customers/(\d+)"', page)]


async def test_search_a_customer_by_name_number_or_email_and_open_its_page(
    relay_env: tuple[Services, MemoryTransport], client: httpx.AsyncClient
) -> None:
    services, transport = relay_env
    await bounced(services, transport, "smtp; 550 5.1.1 <ap@globex.example>: user unknown")
    await _signed_in(client, services, "ana@acme.example", "acme")

    found = {}
    for q in ("globex", "GLOBEX", "C-1", "billing@globex", "ap@globex.example"):
        page = await client.get("/inbox/customers", params={"q": q})
        assert page.status_code == 200
        found[q] = _customer_ids(page.text)
    assert len(set(map(tuple, found.values()))) == 1 and len(found["globex"]) == 1
    assert _customer_ids((await client.get("/inbox/customers?q=nothing-like-it")).text) == []
    # LIKE's wildcards are the clerk's characters, not patterns.
    assert _customer_ids((await client.get("/inbox/customers?q=%25")).text) == []
    assert _customer_ids((await client.get("/inbox/customers?q=_")).text) == []

    documents = (await client.get("/inbox/documents", params={"q": "inv-10"})).text
    assert "INV-1042" in documents and "€" in documents and ">unpaid<" in documents
    assert "INV-1042" not in (await client.get("/inbox/documents?q=CN-")).text

    shown = (await client.get(f"/inbox/customers/{found['globex'][0]}")).text
    assert 'id="customer-name">Globex' in shown
    assert "INV-1042" in shown  # its documents
    assert "New invoice" in shown and "new_invoice" not in shown  # its emails, in words
    contacts = shown.split('id="contacts"')[1].split("</table>")[0]
    # ap@ bounced hard: the page says it is blocked, since when, why and from which email.
    assert "Blocked since 2026-03-02" in contacts
    assert "address does not exist (5.1.1)" in contacts
    assert "what came back about New invoice INV-1042" in contacts
    assert "Unblock this address" in contacts
    assert re.search(r'href="/inbox/threads/\d+">thread', shown)  # its threads


async def test_another_tenants_customer_is_not_found_by_id_or_search(
    relay_env: tuple[Services, MemoryTransport], client: httpx.AsyncClient
) -> None:
    services, _ = relay_env
    await _signed_in(client, services, "ana@acme.example", "acme")
    beta_ids = services.customers.search("B-7", tenant="beta")
    assert [c["name"] for c in beta_ids] == ["Beta Secret Co"]
    for q in ("Beta Secret", "B-7", "beta-client.example"):
        page = (await client.get("/inbox/customers", params={"q": q})).text
        assert _customer_ids(page) == [] and "Beta Secret Co" not in page
    assert "BETA-9" not in (await client.get("/inbox/documents?q=BETA")).text
    theirs = await client.get(f"/inbox/customers/{beta_ids[0]['id']}")
    assert theirs.status_code == 404 and "Beta Secret Co" not in theirs.text
    assert (await client.get("/inbox/customers/999999")).status_code == 404


async def test_a_customer_named_script_is_shown_as_text(
    relay_env: tuple[Services, MemoryTransport], client: httpx.AsyncClient
) -> None:
    services, _ = relay_env
    doc = beta_doc(name=SCRIPT)
    doc["customers"][0]["contacts"][0]["name"] = SCRIPT
    doc["invoices"][0]["number"] = "<b>9</b>"
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    await _signed_in(client, services, "ana@acme.example", "acme")
    search = (await client.get("/inbox/customers", params={"q": "<script>"})).text
    (customer_id,) = _customer_ids(search)
    for page in (
        search,
        (await client.get(f"/inbox/customers/{customer_id}")).text,
        (await client.get("/inbox/documents", params={"q": "<b>"})).text,
    ):
        assert SCRIPT not in page and "<b>9</b>" not in page
        assert html.escape(SCRIPT) in page or "&lt;script&gt;" in page


async def test_the_outbox_says_accepted_then_bounced_never_bounced_250(
    relay_env: tuple[Services, MemoryTransport], client: httpx.AsyncClient
) -> None:
    services, transport = relay_env
    await bounced(services, transport, "smtp; 550 5.1.1 <ap@globex.example>: user unknown")
    await _signed_in(client, services, "ana@acme.example", "acme")
    outbox = (await client.get("/inbox/outbox")).text
    assert "ap@globex.example: <span" in outbox
    assert "accepted (250), then bounced: address does not exist (5.1.1)" in outbox
    assert "billing@globex.example: <span" in outbox
    assert "accepted by the receiving server (250)" in outbox  # billing@ got it
    assert not re.search(r"bounced\s*250", outbox)
    assert "new_invoice" not in outbox and "New invoice" in outbox

    # The suppression list says since when, why and from what; the form says it is blocked.
    blocked = (await client.get("/inbox/suppressions")).text
    row = blocked.split('id="suppressions"')[1]
    assert "blocked since 2026-03-02" in row and "address does not exist (5.1.1)" in row
    assert "what came back about New invoice INV-1042" in row
    assert "ap@globex.example is blocked." in row and "Unblock ap@globex.example" in row

    # The thread's timeline speaks the same words, the engine's text tucked into details.
    (thread,) = services.inbox.threads(tenant="acme", status=None)
    page = (await client.get(f"/inbox/threads/{thread['id']}")).text
    timeline = page.split('id="timeline"')[1].split("</ol>")[0]
    assert "New invoice to ap@globex.example: bounced: address does not exist (5.1.1)" in timeline
    assert (
        "New invoice sent to " in timeline and "accepted by the receiving server (250)" in timeline
    )


async def test_a_bounced_recipient_reads_so_in_the_cli_too(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    services, transport = relay_env
    await bounced(services, transport, "smtp; 550 5.1.1 <ap@globex.example>: user unknown")
    rows = services.customers.outbox(tenant="acme")
    (ap,) = [r for m in rows for r in m["recipients"] if r["address"] == "ap@globex.example"]
    assert (ap["status"], ap["code"], ap["reason"], ap["enhanced"]) == (
        "bounced",
        250,
        "userunknown",
        "5.1.1",
    )


async def test_assign_to_a_user_of_the_tenant_only(
    relay_env: tuple[Services, MemoryTransport], client: httpx.AsyncClient
) -> None:
    services, transport = relay_env
    thread_id = await bounced(services, transport, "smtp; 550 5.1.1 user unknown")
    add_user(services, "bo@acme.example")
    add_user(services, "gone@acme.example")
    services.accounts.disable_user("gone@acme.example")
    add_user(services, "eve@beta.example", "beta")
    await _signed_in(client, services, "ana@acme.example", "acme")
    url = f"/inbox/threads/{thread_id}"
    page = (await client.get(url)).text
    select = page.split('name="assignee"')[1].split("</select>")[0]
    assert 'value="bo@acme.example">Clerk (bo@acme.example)<' in select
    assert "eve@beta.example" not in select and "gone@acme.example" not in select

    async def assign(who: str) -> str:
        token = csrf_of((await client.get(url)).text)
        data = {"csrf": token, "assignee": who}
        return (await client.post(f"{url}/assign", data=data, follow_redirects=True)).text

    assert 'id="assignee">bo@acme.example' in await assign("bo@acme.example")
    refused = await assign("eve@beta.example")
    assert "not a user of this tenant" in refused and 'id="assignee">bo@acme.example' in refused
    assert "not a user of this tenant" in await assign("anyone at all")


async def test_resend_any_email_of_the_thread(
    relay_env: tuple[Services, MemoryTransport], client: httpx.AsyncClient
) -> None:
    services, transport = relay_env
    thread_id = await bounced(services, transport, "smtp; 550 5.1.1 user unknown")
    await _signed_in(client, services, "ana@acme.example", "acme")
    url = f"/inbox/threads/{thread_id}"
    page = (await client.get(url)).text
    forms = re.findall(rf'action="{url}/emails/(\d+)/resend"', page)
    assert len(forms) == 1  # the one email of the thread, bounced or not, may be resent
    before = len(transport.sent)
    token = csrf_of(page)
    done = await client.post(
        f"{url}/emails/{forms[0]}/resend", data={"csrf": token}, follow_redirects=True
    )
    assert "New invoice resent to billing@globex.example" in done.text  # ap@ is blocked
    assert [m.recipients for m in transport.sent[before:]] == [("billing@globex.example",)]
    assert len(re.findall(rf'action="{url}/emails/(\d+)/resend"', done.text)) == 2
    # Another tenant's thread or an email of another thread: not found.
    other = await client.post(f"{url}/emails/999999/resend", data={"csrf": token})
    assert other.status_code == 404


async def test_the_clerk_reads_the_tenants_language(
    relay_env: tuple[Services, MemoryTransport], client: httpx.AsyncClient
) -> None:
    services, transport = relay_env
    await services.sending.send_invoice("BETA-9", kind="new_invoice", tenant="beta")
    await _signed_in(client, services, "eve@beta.example", "beta")
    outbox = (await client.get("/inbox/outbox")).text
    assert 'lang="fr"' in outbox
    assert "Nouvelle facture" in outbox and "accepté par le serveur destinataire (250)" in outbox
    assert "BETA-9" in outbox and "INV-1042" not in outbox
