"""Returned mail end to end: send through the outbox, bounce it, ingest, match, suppress.

The DSNs are built here as an MTA builds them (RFC 3464 multipart/report around the real
headers of the message the outbox sent), on SQLite and PostgreSQL through ``db_url``.
"""

from __future__ import annotations

import json
import mailbox
from datetime import UTC, datetime
from email import message_from_bytes
from pathlib import Path

from sqlmodel import Session, select

from bounce.spool import read_paths
from dunmail.app import Services
from mailer.clock import FixedClock
from mailer.inbox_models import DeliveryEvent, InboundMail, InboundStatus
from mailer.outbound.memory import MemoryTransport, SentMail
from mailer.outbound.models import Message, Suppression
from tests.test_cli import dunmail, write_config


def dsn(
    sent: SentMail,
    *,
    recipient: str = "ap@globex.example",
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <ap@globex.example>: Recipient address rejected: "
    "User unknown",
    envelope_to: str | None = None,
    original: bytes | None = None,
) -> bytes:
    """An RFC 3464 DSN from a Postfix-like MTA about ``sent``, addressed to its VERP sender."""
    headers = (original or sent.data).split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    to = envelope_to or sent.sender
    text = (
        "Your message could not be delivered to one or more recipients."
        if action == "failed"
        else "Delivery to the following recipient has been delayed; still trying."
    )
    return (
        f"Return-Path: <>\r\n"
        f"Delivered-To: {to}\r\n"
        f"From: MAILER-DAEMON@mx.globex.example (Mail Delivery System)\r\n"
        f"To: {to}\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\n"
        f"Date: Mon, 02 Mar 2026 09:05:00 +0000\r\n"
        f"Message-ID: <20260302090500.ABC123@mx.globex.example>\r\n"
        f"MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="BOUND"\r\n'
        f"\r\n"
        f"--BOUND\r\n"
        f"Content-Type: text/plain; charset=us-ascii\r\n"
        f"\r\n"
        f"{text}\r\n"
        f"\r\n"
        f"<{recipient}>: {diagnostic.partition('; ')[2]}\r\n"
        f"\r\n"
        f"--BOUND\r\n"
        f"Content-Type: message/delivery-status\r\n"
        f"\r\n"
        f"Reporting-MTA: dns; mx.globex.example\r\n"
        f"Arrival-Date: Mon, 02 Mar 2026 09:04:59 +0000\r\n"
        f"\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Original-Recipient: rfc822;{recipient}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        f"Remote-MTA: dns; mx.globex.example\r\n"
        f"Diagnostic-Code: {diagnostic}\r\n"
        f"\r\n"
        f"--BOUND\r\n"
        f"Content-Type: text/rfc822-headers\r\n"
        f"\r\n"
        f"{headers}\r\n"
        f"\r\n"
        f"--BOUND--\r\n"
    ).encode()


async def _sent(
    services: Services, transport: MemoryTransport, *, to: str = "ap@globex.example"
) -> SentMail:
    """The invoice email as sent to ``to``: one transaction per recipient, each with the VERP
    return path of that recipient, so a DSN built from it is ``to``'s bounce."""
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    assert all(len(mail.recipients) == 1 for mail in transport.sent)  # one envelope each
    (mine,) = [mail for mail in transport.sent if mail.recipients == (to,)]
    return mine


def _rows(services: Services) -> tuple[list[InboundMail], list[DeliveryEvent], list[Suppression]]:
    with Session(services.engine) as session:
        return (
            list(session.exec(select(InboundMail)).all()),
            list(session.exec(select(DeliveryEvent)).all()),
            list(session.exec(select(Suppression)).all()),
        )


async def test_hard_bounce_suppresses_and_the_next_reminder_skips_the_address(
    relay_env: tuple[Services, MemoryTransport], clock: FixedClock
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    assert sent.sender.startswith("bounces+")
    assert sent.recipients == ("ap@globex.example",)  # billing@ had its own envelope

    summary = services.inbound.ingest([("file:bounce.eml", dsn(sent))])

    assert (summary.stored, summary.matched, summary.unmatched) == (1, 1, 0)
    assert summary.suppressed == ["ap@globex.example"]
    inbound, events, suppressions = _rows(services)
    with Session(services.engine) as session:
        message = session.exec(select(Message)).one()
    assert inbound[0].status is InboundStatus.PROCESSED
    assert (inbound[0].kind, inbound[0].matched_by) == ("bounce", "verp")
    assert inbound[0].message_id == message.id
    assert inbound[0].tenant_id == message.tenant_id
    assert [(e.address, e.kind, e.status, e.hard) for e in events] == [
        ("ap@globex.example", "bounce", "5.1.1", True)
    ]
    assert events[0].reply_code == 550
    assert [(s.address, s.tenant_id) for s in suppressions] == [
        ("ap@globex.example", message.tenant_id)
    ]
    assert suppressions[0].reason.startswith("hard bounce 5.1.1")
    assert services.suppressions.blocked(tenant="acme")[0]["address"] == "ap@globex.example"

    # Processing again (the decoder improved) adds nothing.
    again = services.inbound.reprocess()
    assert (again.matched, again.suppressed) == (1, [])
    assert [len(rows) for rows in _rows(services)] == [1, 1, 1]

    clock.set(datetime(2026, 4, 1, 8, tzinfo=UTC))
    await services.dunning.tick()
    later = transport.sent[2:]  # after the invoice's two envelopes
    assert later, "a reminder is due after the due date"
    assert all(mail.recipients == ("billing@globex.example",) for mail in later)


async def test_matched_by_header_and_by_message_id_without_verp_only_threads(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    """Issue 14: the uid in X-Dunmail-Message or Message-ID is in every email, so a DSN that
    names it without a VERP token threads in the tenant that received it and acts on nothing
    (before, it suppressed ap@: this test encoded the old matching)."""
    services, transport = relay_env
    sent = await _sent(services, transport)
    tenant_inbox = "ar@acme.example"  # the tenant's own server returned it: no VERP token
    by_header = dsn(sent, envelope_to=tenant_inbox)
    assert services.inbound.ingest([("file:a.eml", by_header)]).matched == 1
    headers = b"\r\n".join(
        line
        for line in sent.data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        if not line.lower().startswith(b"x-dunmail-message")
    )
    by_id = dsn(sent, envelope_to=tenant_inbox, original=headers + b"\r\n\r\n")
    assert services.inbound.ingest([("file:b.eml", by_id)]).matched == 1
    inbound, events, suppressions = _rows(services)
    assert [i.matched_by for i in inbound] == ["header", "message-id"]
    assert (events, suppressions) == ([], [])
    (thread,) = services.inbox.threads(tenant="acme", status=None)
    timeline = services.inbox.thread(thread["id"], tenant="acme")["timeline"]
    unverified = [e for e in timeline if e["type"] == "unverified"]
    assert [e["address"] for e in unverified] == ["ap@globex.example"] * 2
    assert not [e for e in timeline if e["type"] == "bounce"]


async def test_forged_bounces_are_unmatched_and_suppress_nothing(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    local, _, domain = sent.sender.partition("@")
    prefix, _, mac = local.rpartition("-")
    bad_mac = f"{prefix}-{'a' * len(mac)}@{domain}"
    unknown_uid = sent.data.replace(
        message_from_bytes(sent.data)["X-Dunmail-Message"].encode(), b"0123456789abcdef"
    )
    summary = services.inbound.ingest(
        [
            ("file:bad-mac.eml", dsn(sent, envelope_to=bad_mac)),
            (
                "file:unknown.eml",
                dsn(sent, envelope_to="ar@acme.example", original=unknown_uid.replace(b"@", b"@x")),
            ),
        ]
    )
    assert (summary.stored, summary.matched, summary.unmatched) == (2, 0, 2)
    inbound, events, suppressions = _rows(services)
    assert {i.status for i in inbound} == {InboundStatus.UNMATCHED}
    assert all(i.message_id is None for i in inbound)
    # Kept with the tenant whose address received it (the AR inbox), none for a bad token.
    assert [i.tenant_id for i in inbound] == [None, services.tenants.id("acme")]
    assert "VERP" in (inbound[0].error or "")
    assert (events, suppressions) == ([], [])


async def test_delay_notice_is_recorded_but_suppresses_nothing(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    notice = dsn(
        sent,
        action="delayed",
        status="4.4.1",
        diagnostic="smtp; 421 4.4.1 mx.globex.example: connection timed out",
    )
    summary = services.inbound.ingest([("file:delay.eml", notice)])
    assert (summary.matched, summary.suppressed) == (1, [])
    inbound, events, suppressions = _rows(services)
    assert inbound[0].kind == "delayed"
    assert [(e.address, e.kind, e.hard) for e in events] == [
        ("ap@globex.example", "delayed", False)
    ]
    assert suppressions == []


async def test_the_same_message_twice_is_stored_once(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    services, transport = relay_env
    raw = dsn(await _sent(services, transport))
    first = services.inbound.ingest([("file:a.eml", raw)])
    second = services.inbound.ingest([("file:a-copy.eml", raw)])
    assert (first.stored, first.duplicates) == (1, 0)
    assert (second.stored, second.duplicates, second.matched) == (0, 1, 0)
    assert [len(rows) for rows in _rows(services)] == [1, 1, 1]


async def test_garbage_is_stored_without_raising(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    services, _ = relay_env
    summary = services.inbound.ingest([("file:junk", b"\x00\xff\xfe not mail at all \x80" * 50)])
    assert summary.stored == 1
    inbound, events, suppressions = _rows(services)
    assert inbound[0].raw.startswith(b"\x00\xff\xfe")
    assert inbound[0].status in (InboundStatus.UNMATCHED, InboundStatus.ERROR)
    assert inbound[0].kind in (None, "not_bounce")
    assert (events, suppressions) == ([], [])


def test_read_paths_reads_files_maildir_and_mbox(tmp_path: Path) -> None:
    single = tmp_path / "one.eml"
    single.write_bytes(b"Subject: one\r\n\r\nbody\r\n")
    maildir = mailbox.Maildir(tmp_path / "Maildir", create=True)
    maildir.add(b"Subject: two\n\nbody\n")
    box = mailbox.mbox(tmp_path / "box.mbox", create=True)
    box.add(b"Subject: three\n\nbody\n")
    box.add(b"Subject: four\n\nbody\n")
    box.flush()
    found = list(read_paths([single, tmp_path / "Maildir", tmp_path / "box.mbox"]))
    assert [source.partition(":")[0] for source, _ in found] == ["file", "maildir", "mbox", "mbox"]
    assert [message_from_bytes(raw)["Subject"] for _, raw in found] == [
        "one",
        "two",
        "three",
        "four",
    ]


async def test_cli_ingests_a_maildir_and_an_mbox(
    tmp_path: Path, db_url: str, relay_env: tuple[Services, MemoryTransport]
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    config = write_config(tmp_path, db_url, 2525)
    maildir = mailbox.Maildir(tmp_path / "bounces", create=True)
    maildir.add(dsn(sent))
    box = mailbox.mbox(tmp_path / "bounces.mbox", create=True)
    box.add(dsn(sent, envelope_to="ar@acme.example"))
    box.add(b"Subject: hello\n\njust a note\n")
    box.flush()

    result = dunmail(config, "bounce", "ingest", str(tmp_path / "bounces"))
    assert result.returncode == 0, result.stderr
    assert "stored 1, duplicates 0, matched 1, unmatched 0" in result.stdout
    assert "suppressed 1" in result.stdout

    result = dunmail(config, "bounce", "ingest", str(tmp_path / "bounces.mbox"))
    assert result.returncode == 0, result.stderr
    assert "stored 2, duplicates 0, matched 1, unmatched 1" in result.stdout
    assert "suppressed 0" in result.stdout

    result = dunmail(config, "bounce", "reprocess")
    assert result.returncode == 0, result.stderr
    assert "matched 2, unmatched 1" in result.stdout

    result = dunmail(config, "suppressions", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["address"] for r in rows] == ["ap@globex.example"]
    assert rows[0]["reason"].startswith("hard bounce 5.1.1")


async def test_complaint_suppresses_the_complainer(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    """The FBL report names the original's envelope sender (RFC 5965 s3.2 Original-Mail-From):
    billing@'s own VERP token proves the email and the complainer. Without it (some FBLs drop
    it), the complaint only threads as unverified and blocks nobody until a clerk says so."""
    services, transport = relay_env
    sent = await _sent(services, transport, to="billing@globex.example")
    headers = sent.data.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    arf = (  # RFC 5965 s2: multipart/report; report-type=feedback-report
        "From: fbl@isp.example\r\n"
        "To: fbl@relay.example\r\n"
        "Subject: FW: invoice\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="B"\r\n'
        "\r\n"
        "--B\r\n"
        "Content-Type: text/plain\r\n"
        "\r\n"
        "This is an email abuse report for an email message received from IP 192.0.2.1\r\n"
        "--B\r\n"
        "Content-Type: message/feedback-report\r\n"
        "\r\n"
        "Feedback-Type: abuse\r\n"
        "User-Agent: SomeGenerator/1.0\r\n"
        "Version: 1\r\n"
        f"Original-Mail-From: <{sent.sender}>\r\n"
        "Original-Rcpt-To: <billing@globex.example>\r\n"
        "\r\n"
        "--B\r\n"
        "Content-Type: text/rfc822-headers\r\n"
        "\r\n"
        f"{headers}\r\n"
        "\r\n"
        "--B--\r\n"
    ).encode()
    unproved = arf.replace(f"Original-Mail-From: <{sent.sender}>\r\n".encode(), b"")
    summary = services.inbound.ingest([("file:arf-unproved.eml", unproved)])
    assert (summary.unmatched, summary.suppressed) == (1, [])  # reached no tenant's address
    summary = services.inbound.ingest([("file:arf.eml", arf)])
    assert summary.matched == 1
    _, _, suppressions = _rows(services)
    assert [(s.address, s.reason) for s in suppressions] == [
        ("billing@globex.example", "complaint")
    ]
