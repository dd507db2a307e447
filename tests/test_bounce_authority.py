"""Bounce authority (issue 14, finding 1): only a VERP token proves a bounce, for one recipient.

Two tenants on one relay ("acme" and "beta", both mailing Globex's ap@ and billing@), returned
mail through the real inbound SMTP server on loopback (one stored copy with its envelope), the
IMAP path's source and the file ingest; the clerk's one-click suppress over real HTTP and the
real CLI; SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import httpx
import pytest
from sqlmodel import Session, select

from bounce.inbound_smtp import build_inbound_addresses, start_inbound
from dunmail.app import Services
from mailer.config import InboundConfig
from mailer.inbox_models import DeliveryEvent, InboundMail, InboundStatus
from mailer.ledger.models import Hold
from mailer.outbound.memory import MemoryTransport, SentMail
from mailer.outbound.models import Suppression
from mailer.outbound.verp import issue_verp
from tests.conftest import DEMO_DOC
from tests.test_bounce_ingest import dsn
from tests.test_cli import dunmail, write_config
from tests.test_web_ui import add_user, csrf_of, fast_argon2, login

__all__ = ["fast_argon2"]  # a fixture used here, imported from test_web_ui

AP, BILLING = "ap@globex.example", "billing@globex.example"


@pytest.fixture
def relay_env(
    two_tenant_env: tuple[Services, MemoryTransport],
) -> tuple[Services, MemoryTransport]:
    """conftest's ``relay_env`` plus "beta" (what ``web_server`` serves), with beta's own copy
    of the demo ledger: the same customer addresses, another tenant's emails."""
    services, _ = two_tenant_env
    assert services.ledger.import_document(DEMO_DOC, tenant="beta").errors == []
    return two_tenant_env


@pytest.fixture
async def smtp_port(relay_env: tuple[Services, MemoryTransport]) -> AsyncIterator[int]:
    """The inbound SMTP server (bounce/inbound_smtp.py) on a free loopback port."""
    services, _ = relay_env
    config = InboundConfig.model_validate({"port": 0, "hostname": "mx.test"})
    addresses = build_inbound_addresses(services.config.tenants, services.config.relay)
    server = await start_inbound(config, addresses, services.inbound.receive)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


async def _send(port: int, raw: bytes, *, to: list[str]) -> None:
    """As an MTA delivers a DSN: the null reverse-path, ``to`` as the envelope."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as client:
        await client.sendmail("", to, raw)


async def _invoice(
    services: Services, transport: MemoryTransport, tenant: str
) -> dict[str, SentMail]:
    """Send the tenant's INV-1042; its copies by recipient (one envelope each)."""
    before = len(transport.sent)
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=tenant)
    copies = transport.sent[before:]
    assert all(len(m.recipients) == 1 for m in copies)
    return {m.recipients[0]: m for m in copies}


def _without_dunmail_header(sent: SentMail) -> bytes:
    head = sent.data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    return b"\r\n".join(h for h in head if not h.lower().startswith(b"x-dunmail")) + b"\r\n\r\n"


def _state(services: Services) -> tuple[list[tuple[int, str]], list[Hold], list[DeliveryEvent]]:
    with Session(services.engine) as session:
        suppressed = [(s.tenant_id, s.address) for s in session.exec(select(Suppression))]
        return (
            suppressed,
            list(session.exec(select(Hold))),
            list(session.exec(select(DeliveryEvent))),
        )


def _inbound(services: Services) -> list[InboundMail]:
    with Session(services.engine) as session:
        return list(session.exec(select(InboundMail).order_by(InboundMail.id)).all())  # type: ignore[arg-type]


# -- forged DSNs naming another tenant's email --------------------------------------------------


@pytest.mark.parametrize("named_by", ["x-dunmail-message", "message-id"])
async def test_a_dsn_at_our_inbox_naming_another_tenants_email_acts_on_nothing(
    relay_env: tuple[Services, MemoryTransport], smtp_port: int, named_by: str
) -> None:
    services, transport = relay_env
    beta = await _invoice(services, transport, "beta")
    original = None if named_by == "x-dunmail-message" else _without_dunmail_header(beta[AP])
    # Anyone who got beta's email knows its Message-ID and X-Dunmail-Message: no secret.
    forged = dsn(beta[AP], envelope_to="ar@acme.example", original=original)

    await _send(smtp_port, forged, to=["ar@acme.example"])

    suppressed, holds, events = _state(services)
    assert (suppressed, holds, events) == ([], [], [])
    (row,) = _inbound(services)
    assert row.status is InboundStatus.UNMATCHED and row.message_id is None
    assert row.tenant_id == services.tenants.id("acme")  # where it arrived, and only there
    assert row.recipients == ["ar@acme.example"]
    assert [r["id"] for r in services.inbox.unmatched(tenant="acme")] == [row.id]
    assert services.inbox.unmatched(tenant="beta") == []
    assert services.inbox.threads(tenant="beta", status=None) == []  # never threaded into beta
    assert services.inbox.threads(tenant="acme", status=None) == []


async def test_a_dsn_naming_our_own_email_by_its_headers_only_threads_as_unverified(
    relay_env: tuple[Services, MemoryTransport], smtp_port: int
) -> None:
    services, transport = relay_env
    acme = await _invoice(services, transport, "acme")
    await _send(smtp_port, dsn(acme[AP], envelope_to="ar@acme.example"), to=["ar@acme.example"])

    suppressed, holds, events = _state(services)
    assert (suppressed, holds, events) == ([], [], [])
    (thread,) = services.inbox.threads(tenant="acme", status=None)
    timeline = services.inbox.thread(thread["id"], tenant="acme")["timeline"]
    (entry,) = [e for e in timeline if e["type"] == "unverified"]
    assert entry["address"] == AP and "unverified bounce" in entry["summary"]
    assert services.inbox.threads(tenant="beta", status=None) == []


# -- one return path per recipient --------------------------------------------------------------


async def test_a_dsn_to_one_recipients_return_path_naming_another_suppresses_nobody(
    relay_env: tuple[Services, MemoryTransport], smtp_port: int
) -> None:
    services, transport = relay_env
    acme = await _invoice(services, transport, "acme")
    assert acme[AP].sender != acme[BILLING].sender  # each recipient its own VERP address
    # ap@ (or ap@'s server) bounces "billing@ is unknown" to ap@'s own return path.
    other = dsn(
        acme[AP],
        recipient=BILLING,
        diagnostic=f"smtp; 550 5.1.1 <{BILLING}>: User unknown",
        envelope_to="postmaster@acme.example",
    )
    await _send(smtp_port, other, to=[acme[AP].sender])

    suppressed, holds, events = _state(services)
    assert (suppressed, holds, events) == ([], [], [])
    (row,) = _inbound(services)
    assert row.status is InboundStatus.PROCESSED and row.matched_by == "verp"
    (thread,) = services.inbox.threads(tenant="acme", status=None)
    timeline = services.inbox.thread(thread["id"], tenant="acme")["timeline"]
    assert [e["address"] for e in timeline if e["type"] == "unverified"] == [BILLING]


async def test_genuine_per_recipient_bounces_suppress_exactly_that_recipient_and_hold(
    relay_env: tuple[Services, MemoryTransport], smtp_port: int
) -> None:
    services, transport = relay_env
    acme = await _invoice(services, transport, "acme")
    beta = await _invoice(services, transport, "beta")
    acme_id, beta_id = services.tenants.id("acme"), services.tenants.id("beta")
    bounce = dsn(acme[BILLING], recipient=BILLING, envelope_to="postmaster@acme.example")

    await _send(smtp_port, bounce, to=[acme[BILLING].sender])

    suppressed, holds, _ = _state(services)
    assert suppressed == [(acme_id, BILLING)]
    assert holds == []  # ap@ still gets the mail: nothing to pause
    # The last contact bounces too: chasing pauses, as it always did, in acme only.
    await _send(
        smtp_port, dsn(acme[AP], envelope_to="postmaster@acme.example"), to=[acme[AP].sender]
    )
    suppressed, holds, _ = _state(services)
    assert sorted(suppressed) == sorted([(acme_id, BILLING), (acme_id, AP)])
    assert [h.tenant_id for h in holds] == [acme_id]
    # beta's copies to the same people are untouched.
    assert not [s for s in suppressed if s[0] == beta_id] and beta


# -- replayed tokens ----------------------------------------------------------------------------


async def test_a_replayed_token_of_another_tenants_email_never_crosses_tenants(
    relay_env: tuple[Services, MemoryTransport], smtp_port: int
) -> None:
    services, transport = relay_env
    beta = await _invoice(services, transport, "beta")
    acme_id, beta_id = services.tenants.id("acme"), services.tenants.id("beta")
    token = beta[AP].sender  # seen by ap@ as the Return-Path of beta's email
    replay = dsn(beta[AP], envelope_to=token)  # To: and Delivered-To: name beta's token

    # 1. By SMTP to acme's inbox: the headers are the sender's; the envelope says acme.
    await _send(smtp_port, replay, to=["ar@acme.example"])
    # 2. In acme's own IMAP mailbox: a token for another tenant's email proves nothing there.
    services.inbound.receive("imap:acme/INBOX/1:7", replay.replace(b"ABC123", b"IMAP01"))
    # 3. A file with acme's inbox as the delivery agent's Delivered-To, beta's token below it.
    filed = b"Delivered-To: ar@acme.example\r\n" + replay.replace(b"ABC123", b"FILE01")
    services.inbound.ingest([("file:replay.eml", filed)])

    suppressed, holds, events = _state(services)
    assert (suppressed, holds, events) == ([], [], [])
    rows = _inbound(services)
    assert [(r.status, r.tenant_id) for r in rows] == [(InboundStatus.UNMATCHED, acme_id)] * 3
    assert services.inbox.threads(tenant="beta", status=None) == []

    # 4. At the address it was issued as: it acts on its own email, in beta, and nowhere else.
    await _send(smtp_port, replay.replace(b"ABC123", b"TRUE01"), to=[token])
    suppressed, _, _ = _state(services)
    assert suppressed == [(beta_id, AP)]
    assert services.inbox.threads(tenant="acme", status=None) == []


# -- tokens issued before the upgrade -----------------------------------------------------------


async def test_a_message_level_token_acts_only_for_a_single_recipient_email(
    relay_env: tuple[Services, MemoryTransport], smtp_port: int
) -> None:
    services, transport = relay_env
    acme = await _invoice(services, transport, "acme")  # two recipients
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"][0]["contacts"] = [{"email": AP, "roles": ["ap"]}]
    assert services.ledger.import_document(doc, tenant="beta").errors == []
    beta = await _invoice(services, transport, "beta")  # one recipient
    assert list(beta) == [AP]

    def legacy(sent: SentMail) -> str:
        uid = sent.sender.partition("+")[2].partition("-")[0]
        return issue_verp(uid, key=services.links.verp_key, domain="relay.example")  # no recipient

    shared = legacy(acme[AP])
    await _send(smtp_port, dsn(acme[AP], envelope_to=shared), to=[shared])
    assert _state(services)[0] == []  # two recipients: the old token cannot say whom
    (row,) = _inbound(services)
    assert (row.status, row.matched_by) == (InboundStatus.PROCESSED, "verp-shared")

    single = legacy(beta[AP])
    await _send(
        smtp_port, dsn(beta[AP], envelope_to=single).replace(b"ABC123", b"OLD001"), to=[single]
    )
    assert _state(services)[0] == [(services.tenants.id("beta"), AP)]


# -- the clerk's one click ----------------------------------------------------------------------


async def _unverified_thread(services: Services, transport: MemoryTransport) -> int:
    """A DSN naming acme's email by its headers only, with a hostile diagnostic; the thread."""
    acme = await _invoice(services, transport, "acme")
    raw = dsn(
        acme[AP],
        envelope_to="ar@acme.example",
        diagnostic="smtp; 550 5.1.1 <script>window.pwned=1</script> unknown",
    )
    assert services.inbound.ingest([("file:u.eml", raw)]).matched == 1
    (thread,) = services.inbox.threads(tenant="acme", status=None)
    return int(thread["id"])


@pytest.fixture
async def client(web_server: str, fast_argon2: None) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web_server, follow_redirects=False) as http:
        yield http


async def test_one_click_suppress_from_an_unverified_entry_over_http(
    relay_env: tuple[Services, MemoryTransport], client: httpx.AsyncClient
) -> None:
    services, transport = relay_env
    thread_id = await _unverified_thread(services, transport)
    add_user(services, "eve@beta.example", tenant="beta")
    add_user(services, "ana@acme.example")

    # Another tenant's clerk: the thread does not exist for her, and nothing is blocked.
    await login(client, "eve@beta.example")
    token = csrf_of((await client.get("/inbox")).text)
    url = f"/inbox/threads/{thread_id}/suppress"
    assert (await client.post(url, data={"address": AP, "csrf": token})).status_code == 404
    assert _state(services)[0] == []
    client.cookies.clear()

    await login(client, "ana@acme.example")
    page = await client.get(f"/inbox/threads/{thread_id}")
    assert page.status_code == 200
    assert "unverified bounce" in page.text and 'class="suppress-unverified"' in page.text
    assert "<script>window.pwned" not in page.text and "&lt;script&gt;" in page.text
    token = csrf_of(page.text)
    assert (await client.post(url, data={"address": AP, "csrf": "x" * 43})).status_code == 403
    stranger = await client.post(url, data={"address": "ceo@globex.example", "csrf": token})
    assert stranger.status_code == 303 and _state(services)[0] == []

    done = await client.post(url, data={"address": AP, "csrf": token})

    assert done.status_code == 303
    (row,) = services.suppressions.blocked(tenant="acme")
    assert (row["address"], row["kind"], row["created_by"]) == (AP, "manual", "ana@acme.example")
    assert services.suppressions.blocked(tenant="beta") == []
    timeline = services.inbox.thread(thread_id, tenant="acme")["timeline"]
    assert any(e["type"] == "note" and e["author"] == "ana@acme.example" for e in timeline)


async def test_one_click_suppress_from_the_cli(
    relay_env: tuple[Services, MemoryTransport], tmp_path: Path, db_url: str
) -> None:
    services, transport = relay_env
    thread_id = await _unverified_thread(services, transport)
    config = write_config(tmp_path, db_url, 2525)
    config.write_text(
        config.read_text() + '\n[tenants.beta]\nname = "Beta Ltd"\nemail = "ar@beta.example"\n'
    )

    other = await asyncio.to_thread(
        dunmail, config, "inbox", "suppress", str(thread_id), AP, "--tenant", "beta"
    )
    assert other.returncode != 0 and "no thread" in (other.stdout + other.stderr)
    done = await asyncio.to_thread(
        dunmail, config, "inbox", "suppress", str(thread_id), AP, "--tenant", "acme", "--by", "bo"
    )
    assert done.returncode == 0, done.stderr
    assert f"thread {thread_id}: {AP} suppressed" in done.stdout

    (row,) = services.suppressions.blocked(tenant="acme")
    assert (row["address"], row["created_by"]) == (AP, "bo")
    assert services.suppressions.blocked(tenant="beta") == []
