"""``bounce.parse`` on small handwritten messages: one rule of the issue per test."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from bounce import Kind, parse
from bounce.classify import classify_hard, classify_reason
from bounce.detectors.base import Finding, Mail
from bounce.detectors.mime import read_mail
from bounce.registry import DETECTORS

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "bounce-corpus"
ORIGINAL_ID = "<inv1042.abc@acme.test>"
VERP = "bounces+0123456789abcdef-abcdefghijklmnop@bounce.acme.test"


def dsn(
    *, action: str, status: str, diagnostic: str = "", subject: str = "Undelivered Mail"
) -> bytes:
    """An RFC 3464 report from Postfix's mould, for one recipient."""
    diagnostic_line = f"Diagnostic-Code: smtp; {diagnostic}\n" if diagnostic else ""
    return f"""\
From: MAILER-DAEMON@mx.acme.test (Mail Delivery System)
To: {VERP}
Subject: {subject}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

This is the mail system at host mx.acme.test.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.acme.test

Final-Recipient: rfc822; ap@customer.test
Original-Recipient: rfc822;ap@customer.test
Action: {action}
Status: {status}
{diagnostic_line}
--B
Content-Type: text/rfc822-headers

From: ar@acme.test
To: ap@customer.test
Subject: Invoice INV-1042
Message-ID: {ORIGINAL_ID}
X-Dunmail-Message: 0123456789abcdef

--B--
""".encode()


def test_delay_notice_is_delayed_not_a_failure() -> None:
    report = parse(dsn(action="delayed", status="4.4.1", diagnostic="connect to mx timed out"))
    assert report.kind is Kind.DELAYED
    assert not report.is_failure
    [recipient] = report.recipients
    assert (recipient.action, recipient.status, recipient.hard) == ("delayed", "4.4.1", False)


def test_text_warning_is_delayed() -> None:
    raw = b"""\
From: Mail Delivery Subsystem <MAILER-DAEMON@mx.acme.test>
Subject: Warning: could not send message for past 4 hours

    **********************************************
    **      THIS IS A WARNING MESSAGE ONLY      **
    **  YOU DO NOT NEED TO RESEND YOUR MESSAGE  **
    **********************************************

The original message was received at Mon, 30 Nov 2026 10:00:00 GMT

   ----- Transcript of session follows -----
<ap@customer.test>... Deferred: Connection timed out with mx.customer.test.
Warning: message still undelivered after 4 hours
Will keep trying until message is 5 days old
"""
    report = parse(raw)
    assert report.kind is Kind.DELAYED
    assert [(r.address, r.hard) for r in report.recipients] == [("ap@customer.test", False)]


def test_failed_with_4xx_status_is_a_final_failure() -> None:
    report = parse(dsn(action="failed", status="4.4.7", diagnostic="delivery time expired"))
    assert report.kind is Kind.BOUNCE
    [recipient] = report.recipients
    assert (recipient.status, recipient.reason, recipient.hard) == ("4.4.7", "expired", False)


def test_specific_code_in_diagnostic_beats_generic_status() -> None:
    raw = dsn(
        action="failed", status="5.0.0", diagnostic="550 5.1.1 <ap@customer.test>: no such user"
    )
    [recipient] = parse(raw).recipients
    assert (recipient.status, recipient.reply_code) == ("5.1.1", 550)
    assert (recipient.reason, recipient.hard) == ("userunknown", True)


def test_ids_of_the_original_are_found() -> None:
    report = parse(dsn(action="failed", status="5.1.1"))
    assert report.original_message_id == ORIGINAL_ID
    assert report.dunmail_id == "0123456789abcdef"
    assert report.verp == VERP


def test_crlf_line_endings_change_nothing() -> None:
    raw = dsn(action="failed", status="5.2.2", diagnostic="552 5.2.2 mailbox full")
    assert parse(raw.replace(b"\n", b"\r\n")) == parse(raw)


def test_malformed_mime_falls_back_to_the_raw_text() -> None:
    raw = b"""\
From: Mail Delivery Subsystem <MAILER-DAEMON@mx.acme.test>
Subject: Returned mail: see transcript for details
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="never-closed"

--never-closed
Content-Type: text/plain

   ----- The following addresses had permanent fatal errors -----
<ap@customer.test>
    (reason: 550 5.1.1 <ap@customer.test>... User unknown)
"""
    report = parse(raw)
    assert report.kind is Kind.BOUNCE
    assert [(r.address, r.status, r.hard) for r in report.recipients] == [
        ("ap@customer.test", "5.1.1", True)
    ]


def test_qmail_text_bounce() -> None:
    raw = b"""\
From: MAILER-DAEMON@mx.acme.test
To: ar@acme.test
Subject: failure notice

Hi. This is the qmail-send program at mx.acme.test.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<ap@customer.test>:
192.0.2.1 does not like recipient.
Remote host said: 552 5.2.2 Mailbox quota exceeded
Giving up on 192.0.2.1.

--- Below this line is a copy of the message.

Message-ID: <inv1042.abc@acme.test>
From: ar@acme.test
To: ap@customer.test
"""
    report = parse(raw)
    assert report.kind is Kind.BOUNCE
    [recipient] = report.recipients
    assert (recipient.address, recipient.status, recipient.reply_code) == (
        "ap@customer.test",
        "5.2.2",
        552,
    )
    assert (recipient.reason, recipient.hard) == ("mailboxfull", False)
    assert report.original_message_id == ORIGINAL_ID


def test_arf_complaint_is_not_a_bounce() -> None:
    raw = b"""\
From: feedback@isp.test
Subject: Abuse report
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F"

--F
Content-Type: text/plain

This is an email abuse report.

--F
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ISP-FBL/1.0
Version: 1
Original-Rcpt-To: ap@customer.test

--F
Content-Type: message/rfc822

Message-ID: <inv1042.abc@acme.test>
From: ar@acme.test
To: ap@customer.test
Subject: Invoice

Please pay.
--F--
"""
    report = parse(raw)
    assert report.kind is Kind.COMPLAINT
    assert report.feedback_type == "abuse"
    assert [r.address for r in report.recipients] == ["ap@customer.test"]
    assert report.original_message_id == ORIGINAL_ID


def test_out_of_office_reply_is_an_auto_reply() -> None:
    raw = b"""\
From: Jane AP <ap@customer.test>
To: ar@acme.test
Subject: Automatic reply: Invoice INV-1042
Auto-Submitted: auto-replied

I am out of the office until Monday and will not be able to deliver a reply before then.
"""
    assert parse(raw).kind is Kind.AUTO_REPLY


def test_ordinary_mail_is_not_a_bounce() -> None:
    raw = b"""\
From: Jane AP <ap@customer.test>
To: ar@acme.test
Subject: Re: Invoice INV-1042

We will pay on Friday; the address ap@customer.test is fine for future invoices.
"""
    report = parse(raw)
    assert report.kind is Kind.NOT_BOUNCE
    assert report.recipients == []


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage",
        b"Content-Type: multipart/report; boundary=\n\n--\n--",
        b"Content-Type: message/delivery-status\n\nFinal-Recipient: rfc822;\nStatus: 9.9.9\n",
        b"Content-Transfer-Encoding: base64\n\n!!!not base64!!!",
        b"Subject: =?bogus?Q?=ZZ?=\nFrom: <>\n\n" + b"x" * 100_000,
        bytes(random.Random(5).randrange(256) for _ in range(4096)),
    ],
    ids=["empty", "binary", "empty-boundary", "bad-dsn", "bad-base64", "huge", "random"],
)
def test_garbage_never_raises(raw: bytes) -> None:
    assert parse(raw).kind in set(Kind)


def test_amazon_ses_json_notice() -> None:
    notice = {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bouncedRecipients": [
                {
                    "emailAddress": "ap@customer.test",
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
        },
        "mail": {"commonHeaders": {"messageId": ORIGINAL_ID}},
    }
    raw = (
        b"From: no-reply@sns.amazonaws.com\nSubject: AWS Notification Message\n\n"
        + json.dumps(notice).encode()
    )
    report = parse(raw)
    assert report.kind is Kind.BOUNCE
    assert report.original_message_id == ORIGINAL_ID
    [recipient] = report.recipients
    assert (recipient.address, recipient.status, recipient.reply_code, recipient.hard) == (
        "ap@customer.test",
        "5.1.1",
        550,
        True,
    )


class _BrokenDetector:
    name = "broken"

    def detect(self, mail: Mail) -> Finding | None:
        raise RuntimeError("a bug in a detector")


def test_a_detector_bug_does_not_escape(monkeypatch: pytest.MonkeyPatch) -> None:
    # Patching the registry is the only way to plant a bug; the real detectors still run after.
    monkeypatch.setattr("bounce.decode.DETECTORS", [_BrokenDetector(), *DETECTORS])
    report = parse(dsn(action="failed", status="5.1.1"))
    assert report.kind is Kind.BOUNCE
    assert report.detector == "dsn"


def test_reason_and_hardness_rules() -> None:
    assert classify_reason("5.2.2", "552 mailbox full") == "mailboxfull"
    assert classify_reason("5.0.0", "550 Host unknown") == "hostunknown"
    assert classify_reason(None, "", action="delivered") == "delivered"
    assert classify_hard("userunknown", "5.1.1")
    assert classify_hard("notaccept", "5.1.10")
    assert not classify_hard("expired", "4.4.7")


def test_provider_phrases_and_codes() -> None:
    """Sisimai's reason tables and providers' documented codes, beyond the status code."""
    gmail_rate = "550-5.2.1 The user you are trying to contact is receiving mail at a rate that "
    gmail_rate += "550-5.2.1 prevents additional messages from being delivered."
    assert classify_reason("5.2.1", gmail_rate) == "speeding"
    assert classify_reason("5.0.0", "pipe to |/usr/bin/app generated by a@b.c") == "mailererror"
    assert classify_reason("5.2.0", "550 5.2.0 Mail rejete. Mail rejected. OFR_506 [506]") == (
        "spamdetected"
    )
    assert classify_reason("5.1.0", "550 5.1.0 <x@y.z> sender rejected. AUP#In-1310") == (
        "toomanyconn"
    )
    dbeb = "550 5.4.1 [a@b.example]: Recipient address rejected: Access denied"
    assert classify_reason("5.4.1", dbeb, command="RCPT") == "userunknown"
    assert classify_reason("5.0.0", "553 neko.example.com does not exist") == "hostunknown"
    assert classify_reason("5.0.0", "553 <a@neko.example.com> does not exist") != "hostunknown"
    assert classify_reason("5.4.316", "550 5.4.316 Message expired, connection refused") == (
        "expired"
    )
    assert classify_reason("5.4.312", "550 5.4.312 Message expired, DNS query failed") == (
        "networkerror"
    )


def test_bare_refusals_yield_to_the_stage_and_the_status() -> None:
    """'Access denied' says that, not why: the SMTP stage or a specific code says more."""
    assert classify_reason("5.7.1", "550 5.7.1 Access denied", command="MAIL") == "rejected"
    assert classify_reason("5.0.0", "550 Rejected", command="CONNECT") == "blocked"
    assert classify_reason("5.7.9", "550 5.7.9 Rejected") == "securityerror"
    assert classify_reason("5.7.1", "550 5.7.1 authentication required") == "securityerror"
    assert classify_reason("5.7.26", "550 5.7.26 DMARC policy") == "authfailure"


def test_the_holdout_phrasings_land_by_meaning() -> None:
    """Issue 15's wordings that went wrong on unseen mail, read by what they mean."""
    assert classify_reason(None, "550 The address couldn't be found.") == "userunknown"
    host = "550 Host unknown (Authoritative answer from name server)"
    assert classify_reason("5.0.0", host) == "hostunknown"
    assert classify_reason(None, "550 the domain is not reachable") == "hostunknown"
    hourly = "550 5.1.1 user@example.jp has sent to too many recipients this hour"
    assert classify_reason("5.1.1", hourly, command="RCPT") == "toomanyconn"
    lda = "dovecot-lda: Error: Couldn't create mailbox INBOX: Permission denied"
    assert classify_reason("5.0.0", lda) == "mailererror"
    assert classify_reason("5.1.1", "550 5.1.1 User unknown", command="DATA") == "userunknown"
    assert classify_reason("5.0.0", "550 User unknown", command="DATA") == "filtered"
    assert classify_reason(None, "", reply_code=521) == "notaccept"
    assert classify_reason(None, "", reply_code=525) == "suspend"


def test_every_detector_conforms_to_the_protocol() -> None:
    names = [d.name for d in DETECTORS]
    assert len(names) == len(set(names))
    ordinary = b"From: a@b.test\nSubject: hello\n\nhi\n"
    for detector in DETECTORS:
        assert callable(detector.detect)
        assert detector.detect(read_mail(ordinary)) is None


POSTFIX = [
    ("postfix-bounce-4.4.1-delay-warning.eml", Kind.DELAYED, "4.4.1", False),
    ("postfix-bounce-4.4.1-expired-after-retries.eml", Kind.BOUNCE, "4.4.1", False),
    ("postfix-bounce-5.1.1-unknown-user-full-message.eml", Kind.BOUNCE, "5.1.1", True),
    (
        "postfix-bounce-5.1.1-unknown-user-pdf-over-bounce_size_limit-headers-only.eml",
        Kind.BOUNCE,
        "5.1.1",
        True,
    ),
    ("postfix-bounce-5.1.1-unknown-user-ret-hdrs.eml", Kind.BOUNCE, "5.1.1", True),
    ("postfix-bounce-5.2.2-mailbox-full-full-message.eml", Kind.BOUNCE, "5.2.2", False),
]


@pytest.mark.parametrize(("name", "kind", "status", "hard"), POSTFIX, ids=[p[0] for p in POSTFIX])
def test_real_postfix_bounces(name: str, kind: Kind, status: str, hard: bool) -> None:
    path = CORPUS / "postfix" / name
    if not path.is_file():
        pytest.skip(f"bounce corpus not found at {CORPUS}")
    report = parse(path.read_bytes())
    assert report.kind is kind
    [recipient] = report.recipients
    assert (recipient.status, recipient.hard) == (status, hard)
    assert report.original_message_id is not None


def test_cli_prints_one_json_object_per_file() -> None:
    files = [CORPUS / "emails" / "lhost-postfix-02.eml", CORPUS / "emails" / "arf-11.eml"]
    if not all(f.is_file() for f in files):
        pytest.skip(f"bounce corpus not found at {CORPUS}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUNMAIL_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "dunmail.cli", "bounce", "parse", *map(str, files), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["file"], r["kind"]) for r in rows] == [
        (str(files[0]), "bounce"),
        (str(files[1]), "complaint"),
    ]
    recipient = rows[0]["recipients"][0]
    assert set(recipient) == {
        "address",
        "status",
        "reply_code",
        "reason",
        "hard",
        "action",
        "diagnostic",
        "command",
    }
    assert recipient["status"].startswith("5.")
    assert "original_message_id" in rows[0]


def test_an_over_long_boundary_counts_as_none_and_the_text_is_still_read() -> None:
    """RFC 2046 caps a boundary at 70 characters; the stdlib compiles each one into a regex, so
    a megabyte of boundary would stall the decoder. Past 200 the part is read as text."""
    boundary = "x" * 5000
    message = dsn(action="failed", status="5.1.1").replace(
        b'boundary="B"', f'boundary="{boundary}"'.encode()
    )
    mail = read_mail(message)
    assert mail.message is not None and not mail.message.is_multipart()
    assert mail.message.get_boundary() is None
    report = parse(message)
    assert [r.address for r in report.recipients] == ["ap@customer.test"]
    assert report.recipients[0].status == "5.1.1"
    # Within the limit, the same message is multipart as ever.
    fine = dsn(action="failed", status="5.1.1").replace(
        b'boundary="B"', b'boundary="' + b"y" * 70 + b'"'
    )
    fine = fine.replace(b"--B", b"--" + b"y" * 70)
    assert read_mail(fine).message.is_multipart()  # type: ignore[union-attr]


def test_a_recipient_block_repeated_a_thousand_times_is_one_recipient() -> None:
    block = b"Final-Recipient: rfc822; ap@customer.test\n"
    message = dsn(action="failed", status="5.1.1").replace(block, block * 1000, 1)
    report = parse(message)
    assert [(r.address, r.status) for r in report.recipients] == [("ap@customer.test", "5.1.1")]


def test_parts_nested_past_fifty_boundaries_read_as_text_and_still_decode() -> None:
    """The stdlib parser checks each line against every open boundary; a thousand nested parts
    cost depth x lines. Past 50 boundaries the rest are renamed and read as text."""
    inner = dsn(action="failed", status="5.1.1").split(b"\n\n", 1)[1]  # the body: --B parts
    body = b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n' + inner
    for depth in range(60):
        body = (
            f'Content-Type: multipart/mixed; boundary="n{depth}"\n\n--n{depth}\n'.encode()
            + body
            + f"\n--n{depth}--\n".encode()
        )
    message = (
        b"From: MAILER-DAEMON@mx.acme.test\nSubject: Undelivered Mail\nMIME-Version: 1.0\n" + body
    )
    mail = read_mail(message)
    depth = 0
    part = mail.message
    while part is not None and part.is_multipart():
        depth += 1
        part = part.get_payload(0)  # type: ignore[assignment]
    assert depth == 50
    report = parse(message)
    assert [(r.address, r.status) for r in report.recipients] == [("ap@customer.test", "5.1.1")]
