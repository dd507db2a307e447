"""The query form of the account page and the clerk's side in the AR inbox, through real HTTP
(uvicorn), on SQLite and PostgreSQL: a multipart post with a file raises the query (CSRF,
same-origin, another customer's invoice, the file's type and size); the clerk sees the
customer's words escaped beside the invoice's thread, downloads the file only as a download of
its checked type, answers (an email, and the answer on the account page) and resolves; another
tenant's clerk reaches none of it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from sqlmodel import Session, select

from dunmail.app import Services
from dunmail.web import users
from mailer.ledger.models import Hold, Invoice
from mailer.outbound.memory import MemoryTransport
from mailer.query_models import InvoiceQuery
from tests.portal_fixtures import csrf_of, form_checkout, ledger, tenants, view_token
from tests.test_web_ui import add_user, login

PDF = b"%PDF-1.4\n%%EOF\n"
SCRIPT = "<script>alert(1)</script>"


@pytest.fixture
def fast_argon2(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """argon2id at its smallest cost (as tests/test_web_ui.py does): same code, faster."""
    monkeypatch.setattr(
        users, "HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )
    users._dummy_hash.cache_clear()
    yield
    users._dummy_hash.cache_clear()


@pytest.fixture
def services_config(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("ACME_HOOK", "hook-secret")
    monkeypatch.setenv("ACME_PAY", "pay-secret")
    return tenants(tmp_path, db_url, form_checkout())


@pytest.fixture
def relay_env(services: Services, transport: MemoryTransport) -> tuple[Services, MemoryTransport]:
    assert services.ledger.import_document(ledger(), tenant="acme").errors == []
    return services, transport


def _client(base: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, follow_redirects=False)


def _ids(services: Services) -> dict[str, int]:
    with Session(services.engine) as session:
        return {i.number: i.id or 0 for i in session.exec(select(Invoice)).all()}


def _queries(services: Services) -> list[InvoiceQuery]:
    with Session(services.engine) as session:
        return list(session.exec(select(InvoiceQuery)).all())


async def _post(
    client: httpx.AsyncClient,
    token: str,
    fields: dict[str, str],
    file: tuple[str, bytes, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    files = {"attachment": file} if file else {"attachment": ("", b"", "application/octet-stream")}
    return await client.post(f"/l/{token}/account/query", data=fields, files=files, headers=headers)


async def test_raise_a_query_from_the_page_then_the_clerk_answers_and_resolves(
    relay_env: tuple[Services, MemoryTransport], web_server: str, fast_argon2: None
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    ids = _ids(services)
    async with _client(web_server) as customer:
        page = (await customer.get(f"/l/{token}/account")).text
        # An accessible form: every field has its label; the invoices are the customer's own.
        for field in ("query-invoice", "query-message", "query-file"):
            assert f'<label for="{field}">' in page and f'id="{field}"' in page
        assert "<legend>What is wrong?</legend>" in page and 'for="reason-wrong_amount"' in page
        assert f'<option value="{ids["INV-1050"]}">INV-1050</option>' in page
        assert "INV-2001" not in page
        csrf = csrf_of(page)
        form = {
            "csrf": csrf,
            "invoice": str(ids["INV-1050"]),
            "reason": "wrong_amount",
            "message": f"We were billed twice {SCRIPT}",
        }
        # Without the form's token, from another site, for another customer's invoice: refused.
        assert (await _post(customer, token, {**form, "csrf": "0" * 64})).status_code == 403
        cross = await _post(customer, token, form, headers={"Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 403
        foreign = await _post(customer, token, {**form, "invoice": str(ids["INV-2001"])})
        assert foreign.status_code == 400 and "Please choose one of your invoices." in foreign.text
        html = await _post(
            customer, token, form, ("x.pdf", b"<html>" + SCRIPT.encode(), "application/pdf")
        )
        assert html.status_code == 400 and "The file must be a PDF, PNG or JPEG." in html.text
        assert _queries(services) == []
        taken = await _post(customer, token, form, ("remittance.pdf", PDF, "application/pdf"))
        assert taken.status_code == 303, taken.text
        assert taken.headers["location"].startswith(f"/l/{token}/account?query=sent#query-")
        page = (await customer.get(taken.headers["location"])).text
        assert "Thank you. We received your message" in page
        assert "Waiting for our answer; reminders are paused" in page
        assert "We were billed twice &lt;script&gt;" in page and SCRIPT not in page
        assert "Attached: remittance.pdf" in page
    (query,) = _queries(services)
    with Session(services.engine) as session:
        hold = session.get(Hold, query.hold_id)
        assert hold is not None and hold.reason == "dispute" and hold.lifted_at is None

    add_user(services, "ana@acme.example")
    add_user(services, "bo@beta.example", tenant="beta")
    async with _client(web_server) as clerk, _client(web_server) as other:
        assert (await login(clerk, "ana@acme.example")).status_code == 303
        assert (await login(other, "bo@beta.example")).status_code == 303
        thread = (await clerk.get(f"/inbox/threads/{query.thread_id}")).text
        assert "Query on invoice INV-1050: wrong amount" in thread
        assert "We were billed twice &lt;script&gt;alert(1)&lt;/script&gt;" in thread
        assert SCRIPT not in thread
        file_url = re.search(r'href="(/inbox/queries/files/\d+)"', thread)
        assert file_url is not None
        download = await clerk.get(file_url.group(1))
        assert download.status_code == 200 and download.content == PDF
        assert download.headers["content-type"] == "application/pdf"
        assert download.headers["content-disposition"] == 'attachment; filename="remittance.pdf"'
        assert download.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in download.headers["content-security-policy"]
        clerk_csrf = re.search(r'name="csrf" value="([^"]+)"', thread)
        assert clerk_csrf is not None
        answer = {
            "csrf": clerk_csrf.group(1),
            "text": "Corrected: see the credit note.",
            "thread": str(query.thread_id),
        }
        # beta's clerk: the thread, the file, the answer and the resolve do not exist.
        assert (await other.get(f"/inbox/threads/{query.thread_id}")).status_code == 404
        assert (await other.get(file_url.group(1))).status_code == 404
        beta_page = (await other.get("/inbox")).text
        beta_csrf = re.search(r'name="csrf" value="([^"]+)"', beta_page)
        assert beta_csrf is not None
        stolen = await other.post(
            f"/inbox/queries/{query.id}/answer", data={**answer, "csrf": beta_csrf.group(1)}
        )
        assert stolen.status_code == 404
        resolved_by_beta = await other.post(
            f"/inbox/queries/{query.id}/resolve", data={"csrf": beta_csrf.group(1)}
        )
        assert resolved_by_beta.status_code == 404
        # The clerk's own post without the session's CSRF token is refused too.
        assert (
            await clerk.post(f"/inbox/queries/{query.id}/answer", data={**answer, "csrf": "x"})
        ).status_code == 403
        sent = len(transport.sent)
        done = await clerk.post(f"/inbox/queries/{query.id}/answer", data=answer)
        assert (
            done.status_code == 303
            and done.headers["location"] == f"/inbox/threads/{query.thread_id}"
        )
        assert any(b"Your query about invoice INV-1050" in m.data for m in transport.sent[sent:]), (
            "the answer was not emailed"
        )
        resolved = await clerk.post(
            f"/inbox/queries/{query.id}/resolve", data={"csrf": clerk_csrf.group(1)}
        )
        assert resolved.status_code == 303
    with Session(services.engine) as session:
        hold = session.get(Hold, query.hold_id)
        assert hold is not None and hold.lifted_at is not None
    async with _client(web_server) as customer:
        page = (await customer.get(f"/l/{token}/account")).text
        assert "Corrected: see the credit note." in page
        assert "We resolved this query." in page


async def test_a_file_over_the_limit_is_refused_and_other_forms_keep_the_small_limit(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    token, _ = await view_token(services, transport)
    ids = _ids(services)
    async with _client(web_server) as customer:
        page = (await customer.get(f"/l/{token}/account")).text
        form = {
            "csrf": csrf_of(page),
            "invoice": str(ids["INV-1042"]),
            "reason": "other",
            "message": "See the scan",
        }
        big = PDF + b"0" * (3 * 1024 * 1024)
        refused = await _post(customer, token, form, ("scan.pdf", big, "application/pdf"))
        assert refused.status_code == 413 and "The file is too large" in refused.text
        # The pay form's path keeps web.max_form_bytes: the same body is refused unread.
        pay = await customer.post(f"/l/{token}/account/pay", content=b"x" * (100 * 1024))
        assert pay.status_code == 413
    assert _queries(services) == []
