"""The AR team's copies (issue 18): a tenant's cc / bcc get every customer email over real SMTP
on loopback, Cc in the header, bcc in no header of any copy; a copy's refusal, suppression or
bounce is about the copy alone; retries stay byte-identical and DKIM still verifies."""

from __future__ import annotations

import copy
import email
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path
from typing import Any

import dkim
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import Session, select

from dunmail.app import Services, build_services
from dunmail.config import load_config
from mailer.address import make_address
from mailer.clock import FixedClock
from mailer.errors import ConfigError
from mailer.ledger.models import Hold, HoldReason
from mailer.outbound.compose import Draft, Envelope, Rendered, build_message, to_bytes
from mailer.outbound.copies import plan_recipients
from mailer.outbound.dkim import dns_record
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.mime import LINE_ENDS, compose
from mailer.outbound.models import Message, MessageRecipient, MessageStatus, RecipientRole
from mailer.outbound.requests import EnqueueRequest
from mailer.tenant_config import TenantConfig
from tests.conftest import DEMO_DOC, make_config
from tests.smtpd import RecordingServer
from tests.test_bounce_ingest import dsn
from tests.test_cli import AT, dunmail, start_sink, write_config

CC = "ar-team@acme.example"
BCC = "audit@acme.example"
CUSTOMERS = ("ap@globex.example", "billing@globex.example")


def _tenant(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "acme": {
            "name": "Acme Supplies",
            "email": "ar@acme.example",
            "dkim": [
                {"domain": "acme.example", "selector": "s1", "key_file": str(tmp_path / "s1.pem")}
            ],
            "cc": [CC],
            "bcc": [BCC],
            **extra,
        }
    }


async def _services(
    tmp_path: Path,
    db_url: str,
    clock: FixedClock,
    transport: MemoryTransport | None,
    relay: dict[str, Any],
    **extra: Any,
) -> AsyncIterator[Services]:
    config = make_config(tmp_path, db_url, relay=relay, tenants=_tenant(tmp_path, **extra))
    services = build_services(config, clock, transport)
    assert services.ledger.import_document(DEMO_DOC, tenant="acme").errors == []
    yield services
    await services.close()


@pytest.fixture
async def over_smtp(
    tmp_path: Path, db_url: str, clock: FixedClock, smtpd: RecordingServer
) -> AsyncIterator[Services]:
    """Tenant acme with cc and bcc, its relay the loopback sink ``smtpd``."""
    relay = {"domain": "relay.example", "host": smtpd.host, "port": smtpd.port}
    async for services in _services(tmp_path, db_url, clock, None, relay):
        yield services


@pytest.fixture
async def in_memory(
    tmp_path: Path, db_url: str, clock: FixedClock
) -> AsyncIterator[tuple[Services, MemoryTransport]]:
    transport = MemoryTransport()
    relay = {"domain": "relay.example"}
    async for services in _services(tmp_path, db_url, clock, transport, relay):
        yield services, transport


def _roles(services: Services, message_id: int | None) -> dict[str, tuple[str, str]]:
    with Session(services.engine) as session:
        rows = session.exec(
            select(MessageRecipient).where(MessageRecipient.message_id == message_id)
        ).all()
        return {r.address: (r.role.value, r.status.value) for r in rows}


def _unsigned(data: bytes) -> bytes:
    """The message under its DKIM-Signature fields (which it starts with)."""
    parsed = email.message_from_bytes(data, policy=policy.SMTP)
    assert parsed["DKIM-Signature"] is not None
    return data[data.index(b"\r\nContent-Type:") + 2 :]


def _header_block(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


async def test_customer_cc_and_bcc_each_get_the_same_signed_bytes(
    over_smtp: Services, smtpd: RecordingServer
) -> None:
    message = await over_smtp.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    assert message.status is MessageStatus.SENT
    assert sorted(e.rcpt_tos[0] for e in smtpd.envelopes) == sorted([*CUSTOMERS, CC, BCC])
    assert len({e.content for e in smtpd.envelopes}) == 1  # one message, one signature
    data = smtpd.envelopes[0].content
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert parsed["To"] == ", ".join(CUSTOMERS)
    assert parsed["Cc"] == CC
    assert parsed["Bcc"] is None
    # The blind copy's address is in no header of any copy (nor in the body).
    for envelope in smtpd.envelopes:
        assert b"audit" not in envelope.content.lower()
    record = dns_record(over_smtp.config.tenants["acme"].dkim[0]).encode()

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"s1._domainkey.acme.example." else b""

    assert dkim.verify(data, dnsfunc=dnsfunc)
    assert b"cc" in _header_block(data).split(b"DKIM-Signature:")[1].split(b"b=")[0].lower()
    assert _roles(over_smtp, message.id) == {
        "ap@globex.example": ("to", "accepted"),
        "billing@globex.example": ("to", "accepted"),
        CC: ("cc", "accepted"),
        BCC: ("bcc", "accepted"),
    }


@pytest.mark.smtpd_options(rcpt={BCC: "550 5.1.1 No such user"})
async def test_a_refused_bcc_never_fails_the_customers_email(
    over_smtp: Services, smtpd: RecordingServer
) -> None:
    message = await over_smtp.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    assert message.status is MessageStatus.SENT
    roles = _roles(over_smtp, message.id)
    assert roles[BCC] == ("bcc", "rejected")
    assert roles["ap@globex.example"] == ("to", "accepted")


@pytest.mark.smtpd_options(
    rcpt=dict.fromkeys(("ap@globex.example", "billing@globex.example"), "550 5.1.1 No such user")
)
async def test_copies_that_took_it_never_make_a_refused_customers_email_sent(
    over_smtp: Services, smtpd: RecordingServer
) -> None:
    message = await over_smtp.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    assert message.status is MessageStatus.FAILED
    assert _roles(over_smtp, message.id)[CC] == ("cc", "accepted")


@pytest.mark.smtpd_options(rcpt={"billing@globex.example": "451 4.2.0 Mailbox busy"})
async def test_a_retry_to_a_deferred_customer_is_byte_identical(
    over_smtp: Services, smtpd: RecordingServer, clock: FixedClock
) -> None:
    message = await over_smtp.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    assert message.status is MessageStatus.DEFERRED
    first = {_unsigned(e.content) for e in smtpd.envelopes}
    smtpd.script(rcpt=None)
    clock.advance(timedelta(hours=1))
    assert (await over_smtp.sending.deliver()).sent == 1
    # billing's RCPT got the 4xx (no DATA); the others took it; the retry is billing's alone.
    assert [e.rcpt_tos[0] for e in smtpd.envelopes] == [CUSTOMERS[0], CC, BCC, CUSTOMERS[1]]
    # The same bytes under the signature (only its t= may move with the signing second).
    assert {_unsigned(e.content) for e in smtpd.envelopes} == first


@pytest.mark.smtpd_options(rcpt={CC: "451 4.2.0 Mailbox busy"})
async def test_a_deferred_copy_is_retried_alone_and_the_customer_is_not_sent_twice(
    over_smtp: Services, smtpd: RecordingServer, clock: FixedClock
) -> None:
    message = await over_smtp.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    assert message.status is MessageStatus.DEFERRED  # the copy is still owed
    assert _roles(over_smtp, message.id)[CC] == ("cc", "deferred")
    smtpd.script(rcpt=None)
    clock.advance(timedelta(hours=1))
    assert (await over_smtp.sending.deliver()).sent == 1
    assert [e.rcpt_tos for e in smtpd.envelopes[3:]] == [(CC,)]
    assert len({_unsigned(e.content) for e in smtpd.envelopes}) == 1
    assert _roles(over_smtp, message.id)[CC] == ("cc", "accepted")


async def test_a_suppressed_copy_is_skipped_and_the_customer_still_gets_it(
    over_smtp: Services, smtpd: RecordingServer
) -> None:
    assert over_smtp.suppressions.suppress(BCC, tenant="acme", reason="left", by="test")
    message = await over_smtp.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    assert message.status is MessageStatus.SENT
    assert BCC not in {e.rcpt_tos[0] for e in smtpd.envelopes}
    assert _roles(over_smtp, message.id)[BCC] == ("bcc", "rejected")


async def test_suppressed_customers_are_not_mailed_through_their_copies(
    over_smtp: Services, smtpd: RecordingServer
) -> None:
    request = EnqueueRequest(
        tenant_id=over_smtp.tenants.id("acme"),
        kind="thank_you",
        recipients=list(CUSTOMERS),
        context={"n": 1},
        document="test:1",
    )
    with Session(over_smtp.engine) as session:
        over_smtp.sending.queue.enqueue(session, request, now=over_smtp.clock.now())
        session.commit()
    for address in CUSTOMERS:  # blocked after it was queued: pre-flight decides
        over_smtp.suppressions.suppress(address, tenant="acme", reason="gone", by="test")
    await over_smtp.sending.deliver()
    assert smtpd.envelopes == []
    with Session(over_smtp.engine) as session:
        assert session.exec(select(Message)).one().status is MessageStatus.SKIPPED


async def test_a_bounce_of_the_cc_suppresses_the_cc_and_nothing_of_the_customer(
    in_memory: tuple[Services, MemoryTransport],
) -> None:
    services, transport = in_memory
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    (to_cc,) = [m for m in transport.sent if m.recipients == (CC,)]
    bounce = dsn(to_cc, recipient=CC, diagnostic=f"smtp; 550 5.1.1 <{CC}>: User unknown")
    summary = services.inbound.ingest([("file:cc.eml", bounce)])
    assert summary.suppressed == [CC]
    assert (summary.rerouted, summary.paused) == ([], 0)
    with Session(services.engine) as session:
        assert session.exec(select(Hold)).all() == []
    blocked = {row["address"] for row in services.suppressions.blocked(tenant="acme")}
    assert blocked == {CC}


async def test_a_customer_bounce_still_pauses_though_the_copies_took_it(
    in_memory: tuple[Services, MemoryTransport],
) -> None:
    services, transport = in_memory
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"][0]["contacts"] = [
        {"email": "ap@globex.example", "name": "AP", "roles": ["ap"]}
    ]
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    (to_ap,) = [m for m in transport.sent if m.recipients == ("ap@globex.example",)]
    summary = services.inbound.ingest([("file:ap.eml", dsn(to_ap))])
    assert summary.paused == 1  # the cc and bcc accepted it; the customer was not reached
    with Session(services.engine) as session:
        (hold,) = session.exec(select(Hold)).all()
    assert hold.reason is HoldReason.CONTACT_BOUNCED


async def test_a_kinds_own_copies_replace_the_tenants(
    tmp_path: Path, db_url: str, clock: FixedClock
) -> None:
    transport = MemoryTransport()
    emails = {"new_invoice": {"enabled": True, "attach_pdf": False, "bcc": []}}
    async for services in _services(
        tmp_path, db_url, clock, transport, {"domain": "relay.example"}, emails=emails
    ):
        message = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
        assert sorted(_roles(services, message.id)) == sorted([*CUSTOMERS, CC])


def test_a_bad_copy_address_stops_the_config_naming_tenant_key_and_address(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dunmail.toml"
    path.write_text(
        'env = "dev"\n[relay]\ndomain = "relay.example"\n'
        '[tenants.acme]\nname = "Acme"\nemail = "ar@acme.example"\n'
        '[tenants.acme.emails.statement]\nbcc = ["ok@acme.example", "audit@acme"]\n'
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert "tenants.acme.emails.statement.bcc" in message
    assert "'audit@acme'" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("settings", "wrong"),
    [
        ({"cc": ["a@b.example\r\nBcc: x@evil.example"]}, "cc"),
        ({"cc": ["x@acme.example"], "bcc": ["X@acme.example"]}, "both cc and bcc"),
        ({"emails": {"new_invoice": {"attach_invoices": True}}}, "only a statement"),
    ],
)
def test_copy_settings_refuse_injection_duplicates_and_misplaced_keys(
    settings: dict[str, Any], wrong: str
) -> None:
    with pytest.raises(ValueError, match=wrong):
        TenantConfig(name="Acme", email="ar@acme.example", **settings)


_LOCAL = st.text("abcdefgh.-_", min_size=1, max_size=8).filter(
    lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s
)
_ADDRESS = st.builds(lambda a, d: f"{a}@{d}.example", _LOCAL, st.sampled_from(["x", "y", "Z"]))


@given(
    st.lists(_ADDRESS, min_size=1, max_size=4),
    st.lists(_ADDRESS, max_size=3),
    st.lists(_ADDRESS, max_size=3),
)
def test_each_address_gets_one_row_and_customers_keep_their_role(
    to: list[str], cc: list[str], bcc: list[str]
) -> None:
    rows = plan_recipients(to, cc, bcc)
    addresses = [a.lower() for a, _ in rows]
    assert len(addresses) == len(set(addresses))  # each address once
    role_of = {a.lower(): role for a, role in rows}
    assert {a.lower() for a in to} == {a for a, r in role_of.items() if r is RecipientRole.TO}
    assert all(role_of[a.lower()] is not RecipientRole.BCC for a in cc)  # cc wins over bcc
    assert set(role_of) == {a.lower() for a in [*to, *cc, *bcc]}  # nobody dropped
    assert [r for _, r in rows] == sorted((r for _, r in rows), key=list(RecipientRole).index)


_NAME = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40
)


@given(st.lists(st.tuples(_NAME, _ADDRESS), min_size=1, max_size=4))
def test_the_cc_header_is_the_references_byte_for_byte(cc: list[tuple[str, str]]) -> None:
    """mime.py writes Cc as the stdlib reference (compose.py) does, after To, and only then."""
    rendered = Rendered(subject="Invoice", text="Hello\n", html=None)
    draft = Draft(
        uid="0123456789abcdef0123",
        message_id_domain="acme.example",
        date=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        to=[make_address("ap@globex.example", "Globex AP")],
        envelope=Envelope(
            from_addr=make_address("noreply-invoice@relay.example", "Acme Supplies"),
            reply_to=None,
            mail_from="bounces+x@relay.example",
        ),
        cc=[make_address(a, LINE_ENDS.sub(" ", n)) for n, a in cc],
    )
    fast = compose(rendered, draft)
    head = fast.split(b"\r\n\r\n", 1)[0]
    assert head == to_bytes(build_message(rendered, draft)).split(b"\r\n\r\n", 1)[0]
    assert head.index(b"\r\nTo: ") < head.index(b"\r\nCc: ")
    parsed = email.message_from_bytes(fast, policy=policy.default)
    assert [a.addr_spec for a in parsed["Cc"].addresses] == [a.lower() for _, a in cc]
    assert b"Cc: " not in compose(rendered, replace(draft, cc=[]))


def test_dunmail_send_by_hand_sends_the_copies(tmp_path: Path, db_url: str) -> None:
    """The user's path: ``dunmail send`` with the tenant's cc and bcc in its config file."""
    sink = start_sink(tmp_path)
    try:
        config = write_config(tmp_path, db_url, sink.port)
        text = config.read_text()
        tenant = 'email = "ar@acme.example"\n'
        config.write_text(text.replace(tenant, f'{tenant}cc = ["{CC}"]\nbcc = ["{BCC}"]\n', 1))
        doc = tmp_path / "doc.json"
        doc.write_text(json.dumps(DEMO_DOC))
        assert dunmail(config, "import", str(doc), "--at", AT).returncode == 0
        sent = dunmail(config, "send", "--invoice", "INV-1042", "--at", AT)
        assert sent.returncode == 0, sent.stderr
        assert "new_invoice for INV-1042: sent" in sent.stdout
        rows = json.loads(dunmail(config, "outbox", "--json").stdout)
        assert sink.accepted() == [f"<{rows[0]['uid']}@acme.example>"] * 4  # 2 customers, cc, bcc
    finally:
        sink.stop()
