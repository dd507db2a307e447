"""Returned mail from a real MTA: send through a private Postfix on loopback, ingest its DSNs.

The engine sends with its real SMTP transport to Postfix (tests/postfix.py), which delivers to a
known mailbox, returns an unknown user at once (5.1.1) and defers mail for an unreachable host
until it expires, with a delay warning first. Postfix addresses every notice to the message's
VERP sender, and ``recipient_delimiter = +`` delivers them all to one Maildir, which the
``dunmail bounce ingest`` command reads as an operator's cron job would. Skips, saying why,
where Postfix is not installed or cannot start (see the ``postfix`` fixture in conftest.py).
"""

from __future__ import annotations

import json
from datetime import timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from bounce import Kind, parse
from dunmail.app import Services
from mailer.clock import FixedClock
from mailer.inbox_models import DeliveryEvent, InboundMail, ThreadStatus
from mailer.outbound.models import MessageRecipient, MessageStatus, RecipientStatus
from tests.postfix import BOUNCE_DOMAIN, KNOWN_MAILBOX, SLOW_DOMAIN, PrivatePostfix
from tests.test_cli import dunmail, write_config

# SQLite is enough here: the database paths are covered on both backends by
# test_bounce_ingest.py and test_inbox.py; this file is about what a real MTA sends back.
# Each test waits on a real MTA's queue timers and runs the CLI: seconds, not milliseconds.
pytestmark = [pytest.mark.parametrize("db_url", ["sqlite"], indirect=True), pytest.mark.slow]

UNKNOWN = "ap@customer.test"
STUCK = f"ap@{SLOW_DOMAIN}"
DOC: dict[str, Any] = {
    "customers": [
        {
            "id": "C-1",
            "name": "Globex",
            "locale": "en",
            "time_zone": "UTC",
            "contacts": [
                {"email": UNKNOWN, "name": "AP", "roles": ["ap"]},
                {"email": KNOWN_MAILBOX, "name": "Bill", "roles": ["billing"]},
            ],
        },
        {
            "id": "C-2",
            "name": "Slowco",
            "locale": "en",
            "time_zone": "UTC",
            "contacts": [{"email": STUCK, "name": "AP", "roles": ["ap"]}],
        },
    ],
    "invoices": [
        {
            "id": f"i-{n}",
            "number": f"INV-{n}",
            "customer": customer,
            "currency": "EUR",
            "issued_at": "2026-03-01",
            "due_at": "2026-03-31",
            "status": "open",
            "lines": [{"description": "Support", "quantity": "1", "unit_price": "120.00"}],
        }
        for n, customer in ((1, "C-1"), (2, "C-2"))
    ],
}


@pytest.fixture
def transport() -> None:
    """This module's services send over SMTP: no transport given, the real SMTPTransport."""
    return None


@pytest.fixture
def services_config(tmp_path: Path, postfix: PrivatePostfix) -> dict[str, Any]:
    """This module's shared ``services``: the relay is the private Postfix."""
    key_file = str(tmp_path / "keys" / "s1.pem")  # the same key file as write_config's
    tenant = {
        "name": "Acme Supplies",
        "email": "ar@acme.example",
        "bounce_domain": BOUNCE_DOMAIN,
        "dkim": [{"domain": "acme.example", "selector": "s1", "key_file": key_file}],
    }
    return {"relay": {"port": postfix.port, "timeout_seconds": 10}, "tenants": {"acme": tenant}}


@pytest.fixture
def env(
    services: Services, tmp_path: Path, db_url: str, postfix: PrivatePostfix
) -> tuple[Services, Path]:
    """Services whose relay is the private Postfix, and a CLI config file on the same database."""
    assert services.ledger.import_document(DOC, tenant="acme").errors == []
    cli_config = write_config(tmp_path, db_url, postfix.port)
    text = cli_config.read_text()
    assert 'email = "ar@acme.example"\n' in text
    cli_config.write_text(
        text.replace(
            'email = "ar@acme.example"\n',
            f'email = "ar@acme.example"\nbounce_domain = "{BOUNCE_DOMAIN}"\n',
        )
    )
    return services, cli_config


def _json(config: Path, *args: str) -> Any:
    done = dunmail(config, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _ingest(config: Path, clock: FixedClock, *paths: Path) -> str:
    done = dunmail(config, "bounce", "ingest", *map(str, paths), "--at", clock.now().isoformat())
    assert done.returncode == 0, done.stderr
    return done.stdout


def _outbox_row(services: Services, uid: str) -> dict[str, Any]:
    (row,) = [r for r in services.desk.outbox_rows() if r["uid"] == uid]
    return row


def _thread(config: Path, number: str) -> dict[str, Any]:
    rows = [r for r in _json(config, "inbox") if r["document"] == number]
    assert len(rows) == 1, rows
    thread: dict[str, Any] = _json(config, "inbox", "show", str(rows[0]["id"]))
    return thread


def _dsn_fields(path: Path) -> dict[str, str]:
    """The per-recipient fields of the message/delivery-status part (RFC 3464 s2.3)."""
    mail = message_from_bytes(path.read_bytes())
    for part in mail.walk():
        if part.get_content_type() == "message/delivery-status":
            groups = part.get_payload()
            assert isinstance(groups, list) and len(groups) == 2, groups
            per_recipient = groups[1]
            assert isinstance(per_recipient, Message)
            # Unfolded: Postfix wraps long Diagnostic-Code lines.
            return {k.lower(): " ".join(str(v).split()) for k, v in per_recipient.items()}
    raise AssertionError(f"{path.name} has no message/delivery-status part")


async def test_unknown_user_bounce_reaches_the_thread_and_suppresses(
    env: tuple[Services, Path], clock: FixedClock, postfix: PrivatePostfix
) -> None:
    services, config = env
    message = await services.sending.send_invoice("INV-1", kind="new_invoice", tenant="acme")
    assert message.status is MessageStatus.SENT, message.last_error
    verp = f"bounces+{message.uid}-"

    # The known mailbox got the email; the unknown one came back to the VERP address.
    (delivered,) = postfix.wait_for(postfix.customer, KNOWN_MAILBOX)
    assert message_from_bytes(delivered.read_bytes())["Return-Path"].startswith(f"<{verp}")
    (returned,) = postfix.wait_for(postfix.returns, verp)
    fields = _dsn_fields(returned)
    assert (fields["final-recipient"], fields["action"], fields["status"]) == (
        f"rfc822; {UNKNOWN}",
        "failed",
        "5.1.1",
    )
    decoded = parse(returned.read_bytes())
    assert decoded.kind is Kind.BOUNCE
    assert decoded.verp is not None and decoded.verp.startswith(verp)
    [recipient] = decoded.recipients
    assert (recipient.address, recipient.status, recipient.hard) == (UNKNOWN, "5.1.1", True)

    # A reminder queued before the bounce is known still lists the address.
    clock.advance(timedelta(minutes=1))
    queued = services.sending.enqueue_invoice_email(
        "INV-1", kind="invoice_reminder", tenant="acme", manual=True
    )
    assert queued is not None
    assert {r["address"] for r in _outbox_row(services, queued.uid)["recipients"]} == {
        UNKNOWN,
        KNOWN_MAILBOX,
    }

    clock.advance(timedelta(minutes=1))
    out = _ingest(config, clock, postfix.returns)
    assert "stored 1, duplicates 0, matched 1, unmatched 0, errors 0, suppressed 1" in out
    assert f"suppressed {UNKNOWN}" in out
    with Session(services.engine) as session:
        inbound = session.exec(select(InboundMail)).one()
    assert (inbound.kind, inbound.matched_by, inbound.message_id) == ("bounce", "verp", message.id)
    assert inbound.source.startswith("maildir:")

    thread = _thread(config, "INV-1")
    assert (thread["customer"], thread["status"]) == ("C-1", ThreadStatus.OPEN.value)
    types = [e["type"] for e in thread["timeline"]]
    assert types == ["sent", "queued", "bounce"], thread["timeline"]
    sent, _, bounce = thread["timeline"]
    assert UNKNOWN in sent["summary"] and KNOWN_MAILBOX in sent["summary"]
    assert f"127.0.0.1:{postfix.port}" in sent["detail"]
    assert (bounce["address"], bounce["status"], bounce["reason"]) == (
        UNKNOWN,
        "5.1.1",
        "userunknown",
    )
    assert "unknown user" in bounce["detail"]
    assert bounce["summary"] == f"INV-1 to {UNKNOWN} bounced: userunknown (5.1.1)"

    suppressed = _json(config, "suppressions")
    assert [s["address"] for s in suppressed] == [UNKNOWN]
    assert suppressed[0]["reason"].startswith("hard bounce 5.1.1")

    # Pre-flight drops the suppressed address from the queued reminder before the SMTP
    # conversation: Postfix never hears of it again and only the billing contact gets it.
    clock.advance(timedelta(minutes=1))
    delivered_pass = await services.sending.deliver()
    assert (delivered_pass.sent, delivered_pass.failed, delivered_pass.skipped) == (1, 0, 0)
    reminder = _outbox_row(services, queued.uid)
    assert reminder["status"] == MessageStatus.SENT.value
    assert {r["address"]: r["status"] for r in reminder["recipients"]} == {
        UNKNOWN: "rejected",
        KNOWN_MAILBOX: "accepted",
    }
    with Session(services.engine) as session:
        dropped = session.exec(
            select(MessageRecipient).where(MessageRecipient.address == UNKNOWN)
        ).all()
    assert [(r.status, r.response) for r in dropped if r.message_id == queued.id] == [
        (RecipientStatus.REJECTED, "suppressed: hard bounce 5.1.1: userunknown")
    ]
    assert len(postfix.wait_for(postfix.customer, KNOWN_MAILBOX, count=2)) == 2
    assert postfix.log().count(f"to=<{UNKNOWN}>") == 1

    # Emails queued from now on are addressed to the remaining contact only.
    clock.advance(timedelta(minutes=1))
    later = await services.sending.send_invoice(
        "INV-1", kind="late_payment_reminder", tenant="acme"
    )
    assert later.status is MessageStatus.SENT, later.last_error
    assert [r["address"] for r in _outbox_row(services, later.uid)["recipients"]] == [KNOWN_MAILBOX]
    assert len(postfix.wait_for(postfix.customer, KNOWN_MAILBOX, count=3)) == 3
    assert postfix.log().count(f"to=<{UNKNOWN}>") == 1
    timeline = services.inbox.thread(thread["id"], tenant="acme")["timeline"]
    assert [(e["type"], e["summary"]) for e in timeline] == [
        ("sent", f"INV-1 new_invoice sent to {UNKNOWN}, {KNOWN_MAILBOX}"),
        ("bounce", f"INV-1 to {UNKNOWN} bounced: userunknown (5.1.1)"),
        ("sent", f"INV-1 invoice_reminder sent to {KNOWN_MAILBOX}"),
        ("sent", f"INV-1 late_payment_reminder sent to {KNOWN_MAILBOX}"),
    ]


async def test_expired_mail_is_a_final_failure_after_a_delay_notice(
    env: tuple[Services, Path], clock: FixedClock, postfix: PrivatePostfix
) -> None:
    services, config = env
    message = await services.sending.send_invoice("INV-2", kind="new_invoice", tenant="acme")
    # Postfix queued it: for the engine the email is sent; what follows comes back by mail.
    assert message.status is MessageStatus.SENT, message.last_error
    verp = f"bounces+{message.uid}-"

    # First the delay warning (delay_warning_time): recorded on the thread, suppresses nothing.
    warning, *_ = postfix.wait_for(postfix.returns, verp)
    fields = _dsn_fields(warning)
    assert (fields["action"], fields["status"]) == ("delayed", "4.4.1")
    clock.advance(timedelta(minutes=1))
    out = _ingest(config, clock, warning)
    assert "stored 1, duplicates 0, matched 1, unmatched 0, errors 0, suppressed 0" in out
    thread = _thread(config, "INV-2")
    assert [e["type"] for e in thread["timeline"]] == ["sent", "delayed"]
    delayed = thread["timeline"][-1]
    assert (delayed["address"], delayed["status"]) == (STUCK, "4.4.1")
    assert _json(config, "suppressions") == []

    # Then the expiry (maximal_queue_lifetime): "Action: failed" with a 4.x.x status is a
    # final failure (RFC 3464 s2.3.3), not a temporary one, and the address itself is fine.
    _, expired = postfix.wait_for(postfix.returns, verp, count=2, timeout=30)
    fields = _dsn_fields(expired)
    assert (fields["action"], fields["status"]) == ("failed", "4.4.1")
    assert "Connection refused" in fields["diagnostic-code"]
    clock.advance(timedelta(minutes=1))
    out = _ingest(config, clock, postfix.returns)
    assert "stored 1, duplicates 1, matched 1, unmatched 0, errors 0, suppressed 0" in out

    thread = _thread(config, "INV-2")
    # What the engine does next about it (bounce/recovery.py) shows as notes; not checked here.
    events = [e for e in thread["timeline"] if e["type"] != "note"]
    assert [e["type"] for e in events] == ["sent", "delayed", "bounce"]
    failed = events[-1]
    assert (failed["address"], failed["status"]) == (STUCK, "4.4.1")
    # The reason is the last deferral's cause; the DSN does not say "expired" (the log does).
    assert failed["summary"] == f"INV-2 to {STUCK} bounced: expired (4.4.1)"
    assert "Connection refused" in failed["detail"]
    assert thread["status"] == ThreadStatus.OPEN.value
    with Session(services.engine) as session:
        rows = session.exec(select(DeliveryEvent).order_by(col(DeliveryEvent.id))).all()
    assert [(e.kind, e.status, e.hard) for e in rows] == [
        ("delayed", "4.4.1", False),
        ("bounce", "4.4.1", False),
    ]
    assert _json(config, "suppressions") == []
