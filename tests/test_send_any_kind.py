"""Every kind can be sent again by hand, a failed message can be retried, a credit note earns no
thank-you, a preview's link opens, and a language that has no templates is said out loud.

Services against SQLite and PostgreSQL with a real outbox; the CLI as a user runs it against a
real loopback SMTP server (tests/smtpd.py in its own process).
"""

from __future__ import annotations

import copy
import email
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select

from dunmail.app import Services
from mailer.clock import FixedClock
from mailer.content.kinds import KINDS
from mailer.errors import MailerError, PermanentDeliveryError
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.models import Message, MessageStatus
from tests.conftest import DEMO_DOC, START, emails, make_config
from tests.test_cli import AT, Sink, dunmail, start_sink

LINE = [{"description": "Support", "quantity": "1", "unit_price": "80.00"}]

# One customer with a document behind every kind: INV-1042 open and not yet due, INV-2050
# overdue (and the autopay that failed on it), INV-3000 paid by a payment, INV-4000 settled by a
# credit note, a refund of part of a payment, an estimate sent, a payment plan proposed, a
# subscription started.
LEDGER: dict[str, Any] = copy.deepcopy(DEMO_DOC)
LEDGER["invoices"] += [
    {
        "id": f"i-{number}",
        "number": f"INV-{number}",
        "customer": "C-1",
        "currency": "EUR",
        "issued_at": issued,
        "due_at": due,
        "status": "open",
        "lines": LINE,
    }
    for number, issued, due in (
        (2050, "2026-01-21", "2026-02-20"),
        (3000, "2026-02-01", "2026-03-03"),
        (4000, "2026-02-01", "2026-03-03"),
    )
]
LEDGER["payments"] = [
    {
        "id": "p-1",
        "customer": "C-1",
        "amount": "80.00",
        "currency": "EUR",
        "received_at": "2026-03-02",
        "receipt_number": "RCPT-1",
        "invoices": [{"invoice": "i-3000", "amount": "80.00"}],
    }
]
LEDGER["credit_notes"] = [
    {
        "id": "cn-1",
        "number": "CN-7",
        "customer": "C-1",
        "currency": "EUR",
        "issued_at": "2026-03-02",
        "invoice": "i-4000",
        "lines": LINE,
    }
]
LEDGER["refunds"] = [
    {
        "id": "r-1",
        "payment": "p-1",
        "amount": "10.00",
        "currency": "EUR",
        "refunded_at": "2026-03-02",
    }
]
LEDGER["autopay_failures"] = [
    {
        "id": "a-1",
        "customer": "C-1",
        "invoice": "i-2050",
        "amount": "80.00",
        "currency": "EUR",
        "attempted_at": "2026-03-02",
        "decline_reason": "insufficient_funds",
    }
]
LEDGER["estimates"] = [
    {
        "id": "e-1",
        "number": "EST-1",
        "customer": "C-1",
        "currency": "EUR",
        "issued_at": "2026-03-02",
        "valid_until": "2026-04-01",
        "status": "sent",
        "lines": LINE,
    }
]
LEDGER["payment_plans"] = [
    {
        "id": "pp-1",
        "number": "PP-1",
        "customer": "C-1",
        "currency": "EUR",
        "status": "proposed",
        "installments": [{"due_at": "2026-04-01", "amount": "80.00"}],
        "invoices": ["i-2050"],
    }
]
LEDGER["subscriptions"] = [
    {
        "id": "s-1",
        "customer": "C-1",
        "plan": "Business",
        "amount": "49.00",
        "currency": "EUR",
        "interval": "month",
        "status": "active",
        "started_at": "2026-03-01",
    }
]

# (kind, the option naming its document, the reference): every kind the ledger above can say.
BY_HAND = [
    ("new_invoice", "invoice", "INV-1042"),
    ("invoice_reminder", "invoice", "INV-1042"),
    ("late_payment_reminder", "invoice", "INV-2050"),
    ("thank_you", "invoice", "INV-3000"),
    ("overdue_summary", "customer", "C-1"),
    ("statement", "customer", "C-1"),
    ("payment_receipt", "payment", "RCPT-1"),
    ("credit_note", "credit_note", "CN-7"),
    ("refund", "refund", "r-1"),
    ("autopay_failed", "autopay", "a-1"),
    ("estimate", "estimate", "EST-1"),
    ("payment_plan", "payment_plan", "PP-1"),
    ("subscription_confirmation", "subscription", "s-1"),
]
# Kinds with no occasion in this ledger: nothing billed soon, nothing cancelled.
# A contact confirmation, the notice of changed contacts and a query's answer reply to the
# customer on the account page (tests/test_portal_preferences.py,
# tests/test_contact_change_notice.py, the query tests), never to a ledger record.
NO_OCCASION = {
    "subscription_billed_soon",
    "subscription_cancelled",
    "contact_confirmation",
    "contacts_changed",
    "query_answer",
}


def test_the_table_covers_every_kind() -> None:
    assert {k for k, _, _ in BY_HAND} | NO_OCCASION == set(KINDS)


def _every_kind_on() -> dict[str, dict[str, bool]]:
    """Every kind switched on, none with a PDF (the PDFs have their own tests)."""
    return {
        kind: {"enabled": True, "attach_pdf": False} if spec.pdf else {"enabled": True}
        for kind, spec in KINDS.items()
    }


@pytest.fixture
def services_config(tmp_path: Path, db_url: str) -> dict[str, Any]:
    """This module's shared ``services``: acme with every kind switched on."""
    acme = make_config(tmp_path, db_url).tenants["acme"].model_dump(mode="json")
    acme["emails"] = _every_kind_on()
    return {"tenants": {"acme": acme}}


@pytest.fixture
def ledger(services: Services, transport: MemoryTransport) -> tuple[Services, MemoryTransport]:
    """The shared ``services`` with ``LEDGER`` imported, and the ``transport`` they send into."""
    assert services.ledger.import_document(LEDGER, tenant="acme").errors == []
    return services, transport


def _messages(services: Services) -> list[Message]:
    with Session(services.engine) as session:
        return list(session.exec(select(Message).order_by(col(Message.id))).all())


async def test_every_kind_is_sent_by_hand_once(ledger: tuple[Services, MemoryTransport]) -> None:
    services, transport = ledger
    for kind, document, ref in BY_HAND:
        sent = await services.sending.send_email(kind, document=document, ref=ref, tenant="acme")
        assert sent.kind == kind
        assert [m.status for m in sent.messages] == [MessageStatus.SENT], (kind, sent.messages)
        assert all(m.manual for m in sent.messages)
        again = await services.sending.send_email(kind, document=document, ref=ref, tenant="acme")
        assert [m.id for m in again.messages] == [m.id for m in sent.messages], kind
    assert len(emails(transport)) == len(BY_HAND)  # each once, however often asked
    kinds = [m.kind for m in _messages(services)]
    assert sorted(kinds) == sorted(k for k, _, _ in BY_HAND)
    # The events sent by hand are done: the next pass does not send them a second time.
    dunning, _ = await services.dunning.tick()
    assert not set(dunning.queued) & {"payment_receipt", "credit_note", "refund", "estimate"}


async def test_a_by_hand_email_is_built_by_the_engine_s_own_builders(
    ledger: tuple[Services, MemoryTransport],
) -> None:
    """The receipt by hand carries the context the event pass would queue, to the letter."""
    services, transport = ledger
    await services.dunning.tick()  # the event pass queues and sends the receipt by itself
    automatic = next(m for m in _messages(services) if m.kind == "payment_receipt")
    sent = await services.sending.send_email(
        "payment_receipt", document="payment", ref="p-1", tenant="acme"
    )
    [by_hand] = sent.messages
    assert by_hand.id != automatic.id and by_hand.uid != automatic.uid
    assert by_hand.context == automatic.context
    assert by_hand.context["payment"]["receipt_number"] == "RCPT-1"


async def test_wrong_documents_and_kinds_are_refused_clearly(
    ledger: tuple[Services, MemoryTransport],
) -> None:
    services, _ = ledger
    cases = [
        ("credit_note", "payment", "p-1", "credit_note is about a --credit-note, not a --payment"),
        (None, "customer", "C-1", "say which email with --kind: one of overdue_summary, statement"),
        ("payment_receipt", "payment", "p-404", "no payment 'p-404'"),
        ("subscription_cancelled", "subscription", "s-1", "never asked for a"),
        ("thank_you", "invoice", "INV-1042", "invoice INV-1042 is open: not paid yet"),
        ("nonsense", "invoice", "INV-1042", "unknown email kind 'nonsense'"),
    ]
    for kind, document, ref, words in cases:
        with pytest.raises(MailerError, match=re.escape(words)):
            await services.sending.send_email(kind, document=document, ref=ref, tenant="acme")
    # The document's own email when no kind is named.
    sent = await services.sending.send_email(
        None, document="credit_note", ref="cn-1", tenant="acme"
    )
    assert sent.kind == "credit_note"


async def test_a_failed_message_is_retried_as_the_same_email_once_its_cause_is_fixed(
    ledger: tuple[Services, MemoryTransport],
) -> None:
    services, transport = ledger
    transport.fail_next(PermanentDeliveryError(550, "5.7.1 relay refused"))
    sent = await services.sending.send_email(
        "payment_receipt", document="payment", ref="p-1", tenant="acme"
    )
    [failed] = sent.messages
    assert failed.status is MessageStatus.FAILED and failed.last_error
    retried = await services.sending.retry_message(failed.id or 0, tenant="acme")
    assert retried.id == failed.id and retried.uid == failed.uid
    assert retried.status is MessageStatus.SENT and retried.attempts == 2
    delivered = email.message_from_bytes(transport.sent[-1].data, policy=policy.default)
    assert failed.uid in str(delivered["Message-ID"])
    with pytest.raises(MailerError, match=f"message {failed.id} is sent: only a failed"):
        await services.sending.retry_message(failed.id or 0, tenant="acme")
    with pytest.raises(MailerError, match="no message 99999"):
        await services.sending.retry_message(99999, tenant="acme")


async def test_a_credit_note_that_settles_an_invoice_earns_no_thank_you(
    ledger: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    """Two invoices are sent; then a payment settles one and a credit note the other. Only
    the payment is thanked; the credit note has its own email."""
    services, _ = ledger
    invoices = copy.deepcopy(DEMO_DOC)
    invoices["invoices"] = [
        dict(invoices["invoices"][0], id=f"i-{n}", number=f"INV-{n}", lines=LINE)
        for n in (5000, 6000)
    ]
    assert services.ledger.import_document(invoices, tenant="acme").errors == []
    clock.advance(timedelta(hours=1))
    await services.dunning.tick()
    sent = {m.context["invoice"]["number"] for m in _messages(services) if m.kind == "new_invoice"}
    assert {"INV-5000", "INV-6000"} <= sent
    clock.advance(timedelta(hours=1))
    settlements = {
        "payments": [
            dict(
                LEDGER["payments"][0],
                id="p-9",
                receipt_number="RCPT-9",
                invoices=[{"invoice": "i-5000", "amount": "80.00"}],
            )
        ],
        "credit_notes": [
            dict(LEDGER["credit_notes"][0], id="cn-9", number="CN-9", invoice="i-6000")
        ],
    }
    assert services.ledger.import_document(settlements, tenant="acme").errors == []
    clock.advance(timedelta(hours=1))
    await services.dunning.tick()
    later = [m for m in _messages(services) if m.created_at > START + timedelta(hours=1)]
    thanks = [m.context["invoice"]["number"] for m in later if m.kind == "thank_you"]
    assert thanks == ["INV-5000"]
    notes = [m.context["credit_note"]["number"] for m in later if m.kind == "credit_note"]
    assert notes == ["CN-9"]
    plan = {e.document: e for e in services.dunning.plan(tenant="acme", customer="C-1")}
    assert plan["INV-6000"].action is None


async def test_the_outbox_row_records_the_language_it_was_rendered_in(
    ledger: tuple[Services, MemoryTransport],
) -> None:
    services, _ = ledger
    japanese = copy.deepcopy(DEMO_DOC)
    japanese["customers"][0]["locale"] = "ja"
    assert services.ledger.import_document(japanese, tenant="acme").errors == []
    sent = await services.sending.send_email(
        "new_invoice", document="invoice", ref="INV-1042", tenant="acme"
    )
    [message] = sent.messages
    assert message.context["locale"] == "ja" and message.language == "en"
    spanish = copy.deepcopy(DEMO_DOC)
    spanish["customers"][0]["locale"] = "es-MX"
    assert services.ledger.import_document(spanish, tenant="acme").errors == []
    reminder = await services.sending.send_email(
        "invoice_reminder", document="invoice", ref="INV-1042", tenant="acme"
    )
    assert reminder.messages[0].language == "es"
    [row] = [r for r in services.desk.outbox_rows() if r["id"] == message.id]
    assert row["language"] == "en"


async def test_a_preview_s_view_link_opens_the_page_a_real_send_s_does(
    relay_env: tuple[Services, MemoryTransport], web_server: str
) -> None:
    services, transport = relay_env
    preview = await services.previews.build("new_invoice", invoice="INV-1042", tenant="acme")
    previewed = _view_link(preview.data)
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    real = _view_link(transport.sent[-1].data)
    async with httpx.AsyncClient(base_url=web_server) as client:
        pages = [await client.get(f"/l/{token}") for token in (previewed, real)]
    assert [p.status_code for p in pages] == [200, 200]
    for page in pages:
        assert "Invoice INV-1042" in page.text and "€120.00" in page.text
    # Opening a preview's link is nobody's click: only the real one is in the inbox.
    from mailer.outbound.models import LinkEvent

    with Session(services.engine) as session:
        events = session.exec(select(LinkEvent)).all()
    assert [(e.purpose, e.message_id is not None) for e in events] == [("view", True)]


def _view_link(data: bytes) -> str:
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None
    tokens = re.findall(r"/l/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", body.get_content())
    assert tokens, "the email has no link"
    return str(tokens[0])


# -- the CLI -----------------------------------------------------------------------------------


@pytest.fixture
def cli_sink(tmp_path: Path) -> Iterator[Sink]:
    """The recording SMTP server, in its own process, as the CLI tests use it."""
    server = start_sink(tmp_path)
    yield server
    server.stop()


def _cli_config(tmp_path: Path, port: int) -> Path:
    emails = "".join(
        f"[tenants.acme.emails.{kind}]\nenabled = true\n"
        + ("attach_pdf = false\n" if spec.pdf else "")
        for kind, spec in KINDS.items()
    )
    path = tmp_path / "config.toml"
    path.write_text(f"""
env = "dev"
[database]
url = "sqlite:///{tmp_path / "cli.db"}"
[relay]
host = "127.0.0.1"
port = {port}
domain = "relay.example"
timeout_seconds = 5
[tenants.acme]
name = "Acme Supplies"
email = "ar@acme.example"
[[tenants.acme.dkim]]
domain = "acme.example"
selector = "s1"
key_file = "{tmp_path / "keys" / "s1.pem"}"
{emails}""")
    doc = tmp_path / "ledger.json"
    doc.write_text(json.dumps(LEDGER))
    imported = dunmail(path, "import", str(doc), "--at", AT)
    assert imported.returncode == 0, imported.stderr
    return path


def test_dunmail_send_sends_every_kind_once(tmp_path: Path, cli_sink: Sink) -> None:
    sink = cli_sink
    config = _cli_config(tmp_path, sink.port)
    for kind, document, ref in BY_HAND:
        option = "--" + document.replace("_", "-")
        result = dunmail(config, "send", "--kind", kind, option, ref, "--at", AT)
        assert result.returncode == 0, (kind, result.stdout, result.stderr)
        assert f"{kind} for {ref}: sent" in result.stdout, result.stdout
    again = dunmail(config, "send", "--payment", "RCPT-1", "--at", AT)  # its receipt, by default
    assert again.returncode == 0 and "payment_receipt for RCPT-1: sent" in again.stdout
    assert len(set(sink.accepted())) == len(BY_HAND)  # a Message-ID per recipient's copy
    rows = json.loads(dunmail(config, "outbox", "--json").stdout)
    assert sorted(r["kind"] for r in rows) == sorted(k for k, _, _ in BY_HAND)
    assert {r["language"] for r in rows} == {"en"}
    wrong = dunmail(config, "send", "--kind", "refund", "--payment", "p-1", "--at", AT)
    assert wrong.returncode == 2 and "refund is about a --refund, not a --payment" in wrong.stderr
    two = dunmail(config, "send", "--payment", "p-1", "--invoice", "INV-1042", "--at", AT)
    assert two.returncode == 2 and "name the one document" in two.stderr


def test_dunmail_outbox_retry_sends_a_failed_message_again(tmp_path: Path, cli_sink: Sink) -> None:
    """The relay's size limit is set too low, so the credit note fails for good; once the
    limit is fixed, ``dunmail outbox retry`` sends that same email."""
    sink = cli_sink
    config = _cli_config(tmp_path, sink.port)
    fixed = config.read_text()
    config.write_text(
        fixed.replace("timeout_seconds = 5", "timeout_seconds = 5\nmax_message_bytes = 1024")
    )
    failed = dunmail(config, "send", "--credit-note", "CN-7", "--at", AT)
    assert failed.returncode == 4, (failed.stdout, failed.stderr)
    [row] = json.loads(dunmail(config, "outbox", "--json").stdout)
    assert (row["kind"], row["status"]) == ("credit_note", "failed")
    assert sink.accepted() == []
    config.write_text(fixed)  # the cause, fixed
    retried = dunmail(config, "outbox", "retry", str(row["id"]), "--at", AT)
    assert retried.returncode == 0, (retried.stdout, retried.stderr)
    assert f"credit_note retried: sent (message {row['id']}, {row['uid']})" in retried.stdout
    [accepted] = set(sink.accepted())  # the copies of each recipient: one Message-ID
    assert row["uid"] in accepted  # the same Message-ID
    again = dunmail(config, "outbox", "retry", str(row["id"]), "--at", AT)
    assert again.returncode == 2
    assert f"message {row['id']} is sent: only a failed message can be retried" in again.stderr
    [after] = json.loads(dunmail(config, "outbox", "--json").stdout)
    assert (after["status"], after["attempts"]) == ("sent", 2)
    # A preview in a language without templates says so (and what it used) on stderr.
    out = tmp_path / "ja.eml"
    japanese = dunmail(
        config,
        *("preview", "new_invoice", "--invoice", "INV-1042", "--locale", "ja"),
        *("--out", str(out), "--at", AT),
    )
    assert japanese.returncode == 0, japanese.stderr
    assert "no Japanese templates; rendered in English (en)" in japanese.stderr
