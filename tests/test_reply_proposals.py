"""A customer's reply, delivered over SMTP to the tenant's AR inbox, is read and its action
proposed in its thread; the clerk accepts it in one click (CLI and web), and a tenant that
opted in gets its promise-to-pay holds placed by themselves.

The reply comes in as mail does: through the inbound SMTP server on loopback
(bounce/inbound_smtp.py), threaded to the invoice email by In-Reply-To.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest
from sqlmodel import select

from bounce.inbound_smtp import build_inbound_addresses, start_inbound
from dunmail.app import Services, build_services
from mailer.clock import FixedClock
from mailer.config import InboundConfig
from mailer.db import session_scope
from mailer.errors import MailerError, NotFoundError
from mailer.inbox_models import ReplyProposal
from mailer.outbound.memory import MemoryTransport, SentMail
from tests.conftest import DEMO_DOC, make_config
from tests.test_bounce_ingest import _sent
from tests.test_cli import dunmail, write_config
from tests.test_web_ui import add_user, csrf_of, fast_argon2, login

__all__ = ["fast_argon2"]  # a fixture used here, imported from test_web_ui

QUOTE = (
    "\r\n\r\nKind regards,\r\nPat\r\nAccounts Payable\r\n\r\n"
    "On Mon, 2 Mar 2026 at 09:00, Acme Supplies <ar@acme.example> wrote:\r\n"
    "> If you have already paid, please ignore this message.\r\n"
    "> If this invoice is wrong, reply and we will look into it.\r\n"
)


def _message_id(sent: SentMail) -> str:
    return next(
        line.split(b":", 1)[1].strip().decode()
        for line in sent.data.split(b"\r\n")
        if line.lower().startswith(b"message-id:")
    )


def _reply(sent: SentMail, text: str, clock: FixedClock, *, n: int = 1) -> bytes:
    """A person's reply to ``sent``, written now, quoting the reminder below."""
    return (
        "From: Pat <ap@globex.example>\r\n"
        "To: Acme Supplies <ar@acme.example>\r\n"
        "Subject: Re: Invoice INV-1042\r\n"
        f"Date: {format_datetime(clock.now())}\r\n"
        f"Message-ID: <reply-{n}@globex.example>\r\n"
        f"In-Reply-To: {_message_id(sent)}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text + QUOTE
    ).encode()


@pytest.fixture
def relay_env(two_tenant_env: tuple[Services, MemoryTransport]) -> tuple[Services, MemoryTransport]:
    """conftest's ``relay_env`` plus a second tenant, "beta", which must not see acme's threads."""
    return two_tenant_env


@asynccontextmanager
async def _inbound_server(services: Services) -> AsyncIterator[int]:
    """The inbound SMTP server on a free loopback port, feeding ``services.inbound``."""
    config = InboundConfig.model_validate({"port": 0, "hostname": "mx.test"})
    addresses = build_inbound_addresses(services.config.tenants, services.config.relay)
    server = await start_inbound(config, addresses, services.inbound.receive)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def smtp_port(relay_env: tuple[Services, MemoryTransport]) -> AsyncIterator[int]:
    async with _inbound_server(relay_env[0]) as port:
        yield port


@pytest.fixture
async def web(web_server: str, request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client (cookies kept) of the app serving ``relay_env``'s services."""
    request.getfixturevalue("fast_argon2")  # cheap password hashes for the sign-ins
    async with httpx.AsyncClient(base_url=web_server, timeout=10) as browser:
        yield browser


async def _deliver(port: int, raw: bytes) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as client:
        await client.sendmail("ap@globex.example", ["ar@acme.example"], raw)


def _thread(services: Services) -> dict[str, Any]:
    (row,) = services.inbox.threads(tenant="acme", status=None)
    return services.inbox.thread(row["id"], tenant="acme")


async def test_a_promise_over_smtp_is_proposed_and_accepting_it_holds_until_the_day_plus_grace(
    relay_env: tuple[Services, MemoryTransport], smtp_port: int, clock: FixedClock
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    await _deliver(smtp_port, _reply(sent, "Hi,\r\n\r\nWe will pay it on the 20th.", clock))
    thread = _thread(services)
    (proposal,) = thread["proposals"]
    assert (proposal["intent"], proposal["status"]) == ("promise_to_pay", "proposed")
    assert proposal["promised_on"] == "2026-03-20"
    assert proposal["hold_until"] == "2026-03-23T00:00:00+00:00"  # + 3 days' grace
    assert services.desk.holds(tenant="acme") == []  # nothing without a clerk

    done = services.inbox.accept(thread["id"], tenant="acme", by="ana@acme.example")
    assert "promise_to_pay" in done
    (hold,) = services.desk.holds(tenant="acme")
    assert (hold["invoice"], hold["reason"], hold["by"]) == (
        "INV-1042",
        "promise_to_pay",
        "ana@acme.example",
    )
    assert hold["until"] == "2026-03-23T00:00:00+00:00"
    after = _thread(services)
    assert after["proposals"][0]["status"] == "accepted"
    assert after["timeline"][-1]["type"] == "note" and "promised" in after["timeline"][-1]["detail"]
    with pytest.raises(MailerError, match="no proposal waiting"):
        services.inbox.accept(thread["id"], tenant="acme", by="ana@acme.example")
    with pytest.raises(NotFoundError):  # another tenant's thread does not exist for beta
        services.inbox.accept(thread["id"], tenant="beta", by="ana@beta.example")


@pytest.mark.parametrize(
    ("text", "intent", "task", "reason"),
    [
        ("We paid this yesterday by bank transfer.", "already_paid", "check_payment", "manual"),
        (
            "We dispute this invoice: the goods arrived damaged.",
            "dispute",
            "resolve_dispute",
            "dispute",
        ),
    ],
)
async def test_paid_and_dispute_replies_propose_a_hold_and_a_task(
    relay_env: tuple[Services, MemoryTransport],
    smtp_port: int,
    clock: FixedClock,
    text: str,
    intent: str,
    task: str,
    reason: str,
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    await _deliver(smtp_port, _reply(sent, text, clock))
    thread = _thread(services)
    assert thread["proposals"][0]["intent"] == intent
    services.inbox.accept(thread["id"], tenant="acme", by="ana@acme.example")
    (hold,) = services.desk.holds(tenant="acme")
    assert (hold["reason"], hold["until"]) == (reason, None)
    assert _thread(services)["task"] == task


async def test_a_wrong_contact_reply_changes_the_contact_it_came_from_once_accepted(
    relay_env: tuple[Services, MemoryTransport], smtp_port: int, clock: FixedClock
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    text = "Pat no longer works here. Please send invoices to payables@globex.example instead."
    await _deliver(smtp_port, _reply(sent, text, clock))
    thread = _thread(services)
    assert thread["proposals"][0]["new_address"] == "payables@globex.example"
    before = [c["email"] for c in services.inbox.context(thread["id"], tenant="acme")["contacts"]]
    assert "ap@globex.example" in before  # unchanged until a clerk accepts
    services.inbox.accept(thread["id"], tenant="acme", by="ana@acme.example")
    after = [c["email"] for c in services.inbox.context(thread["id"], tenant="acme")["contacts"]]
    assert "payables@globex.example" in after and "ap@globex.example" not in after


async def test_a_negated_payment_and_an_other_reply_propose_nothing(
    relay_env: tuple[Services, MemoryTransport], smtp_port: int, clock: FixedClock
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    await _deliver(smtp_port, _reply(sent, "We have NOT paid this yet. Who approved it?", clock))
    thread = _thread(services)
    assert [(p["intent"], p["status"]) for p in thread["proposals"]] == [("other", "none")]
    with pytest.raises(MailerError, match="no proposal waiting"):
        services.inbox.accept(thread["id"], tenant="acme", by="ana@acme.example")


async def test_an_opted_in_tenant_gets_the_promise_hold_placed_by_itself_and_shown(
    tmp_path: Path, db_url: str, clock: FixedClock
) -> None:
    acme = {
        "name": "Acme Supplies",
        "email": "ar@acme.example",
        "dkim": [
            {"domain": "acme.example", "selector": "s1", "key_file": str(tmp_path / "s1.pem")}
        ],
        "replies": {"auto_promise_holds": True, "promise_grace_days": 2},
    }
    config = make_config(tmp_path, db_url, tenants={"acme": acme})
    services = build_services(config, clock, (transport := MemoryTransport()))
    try:
        assert services.ledger.import_document(DEMO_DOC, tenant="acme").errors == []
        sent = await _sent(services, transport)
        async with _inbound_server(services) as port:
            await _deliver(port, _reply(sent, "We'll transfer the money next Friday.", clock))
        (hold,) = services.desk.holds(tenant="acme")
        assert (hold["reason"], hold["until"]) == ("promise_to_pay", "2026-03-08T00:00:00+00:00")
        (proposal,) = _thread(services)["proposals"]
        assert (proposal["status"], proposal["decided_by"]) == ("auto", "auto:promise_to_pay")
        clock.advance(timedelta(days=7))  # the hold ends by itself: chasing resumes
        assert services.desk.holds(tenant="acme") == []
    finally:
        await services.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_clerk_sees_and_accepts_the_proposal_with_the_cli(
    relay_env: tuple[Services, MemoryTransport],
    smtp_port: int,
    clock: FixedClock,
    tmp_path: Path,
    db_url: str,
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    await _deliver(smtp_port, _reply(sent, "Nous réglerons la facture le 20 mars.", clock))
    config = write_config(tmp_path, db_url, 1)
    at = clock.now().isoformat()
    listed = dunmail(config, "inbox", "--status", "all", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    shown = dunmail(config, "inbox", "show", str(row["id"]))
    assert shown.returncode == 0, shown.stderr
    assert (
        "proposal 1 (proposed): promise to pay: hold the invoice until 2026-03-23" in shown.stdout
    )
    assert "Nous réglerons la facture le 20 mars." in shown.stdout
    accepted = dunmail(config, "inbox", "accept", str(row["id"]), "--by", "ana", "--at", at)
    assert accepted.returncode == 0, accepted.stderr
    assert "promise_to_pay" in accepted.stdout
    holds = json.loads(dunmail(config, "hold", "list", "--json", "--at", at).stdout)
    assert [(h["invoice"], h["reason"], h["by"]) for h in holds] == [
        ("INV-1042", "promise_to_pay", "ana")
    ]
    again = dunmail(config, "inbox", "accept", str(row["id"]), "--at", at)
    assert again.returncode == 2 and "no proposal waiting" in again.stderr


async def test_the_thread_page_shows_the_proposal_escaped_and_accepts_it_in_one_click(
    relay_env: tuple[Services, MemoryTransport],
    smtp_port: int,
    clock: FixedClock,
    web: httpx.AsyncClient,
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    text = "We will pay on the 20th <script>alert(1)</script>"
    await _deliver(smtp_port, _reply(sent, text, clock))
    thread_id = _thread(services)["id"]
    proposal_id = _thread(services)["proposals"][0]["id"]
    add_user(services, "ana@acme.example")
    add_user(services, "bob@beta.example", tenant="beta")
    assert (await login(web, "bob@beta.example")).status_code == 303
    page = await web.get("/inbox")
    url = f"/inbox/threads/{thread_id}/proposals/{proposal_id}/accept"
    other = await web.post(url, data={"csrf": csrf_of(page.text)})
    assert other.status_code == 404 and services.desk.holds(tenant="acme") == []
    await web.post("/logout", data={"csrf": csrf_of(page.text)})
    web.cookies.clear()

    assert (await login(web, "ana@acme.example")).status_code == 303
    page = await web.get(f"/inbox/threads/{thread_id}")
    assert "Accept: hold the invoice until 2026-03-23" in page.text
    assert "<script>alert(1)" not in page.text and "&lt;script&gt;alert(1)" in page.text
    done = await web.post(url, data={"csrf": csrf_of(page.text)})
    assert done.status_code == 303
    (hold,) = services.desk.holds(tenant="acme")
    assert (hold["reason"], hold["by"]) == ("promise_to_pay", "ana@acme.example")
    after = await web.get(f"/inbox/threads/{thread_id}")
    assert (
        "accepted by ana@acme.example" in after.text and 'class="accept-proposal"' not in after.text
    )


async def test_reprocess_reads_the_replies_stored_before_triage_once(
    relay_env: tuple[Services, MemoryTransport], smtp_port: int, clock: FixedClock
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    await _deliver(smtp_port, _reply(sent, "We paid this yesterday.", clock))
    with session_scope(services.engine) as session:  # as stored before reply triage existed
        for row in session.exec(select(ReplyProposal)).all():
            session.delete(row)
    assert _thread(services)["proposals"] == []
    services.inbound.reprocess()
    services.inbound.reprocess()
    assert [p["intent"] for p in _thread(services)["proposals"]] == ["already_paid"]
