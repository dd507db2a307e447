"""JSON delivery events read by meaning: every provider's documented shape, none by its names.

The payloads follow each provider's published webhook/notification examples (Amazon SES, SendGrid,
Mailgun, Postmark, SparkPost), with our own addresses. One reader decodes them all, and renaming
their keys changes no verdict: the reader does not know any provider's field names.
"""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bounce import Kind, parse
from bounce.registry import generic_only

ORIGINAL = "<inv-1042.7f3a@dunmail.test>"

SES_BOUNCE = {
    "notificationType": "Bounce",
    "bounce": {
        "bounceType": "Permanent",
        "bounceSubType": "General",
        "bouncedRecipients": [
            {
                "emailAddress": "ap@acme.test",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown",
            }
        ],
        "feedbackId": "0101015-feedback",
    },
    "mail": {
        "source": "noreply-invoice@dunmail.test",
        "messageId": "0101015-ses-id",
        "destination": ["ap@acme.test"],
        "headers": [
            {"name": "From", "value": "noreply-invoice@dunmail.test"},
            {"name": "To", "value": "ap@acme.test"},
            {"name": "Message-ID", "value": ORIGINAL},
        ],
        "commonHeaders": {"from": ["noreply-invoice@dunmail.test"], "to": ["ap@acme.test"]},
    },
}
SENDGRID_BOUNCE = [
    {
        "email": "ap@acme.test",
        "timestamp": 1513299569,
        "smtp-id": ORIGINAL,
        "event": "bounce",
        "sg_event_id": "sg-event-1",
        "reason": "550 5.1.1 The email account that you tried to reach does not exist",
        "status": "5.1.1",
        "type": "bounce",
    }
]
SENDGRID_DEFERRED = [
    {
        "email": "ap@acme.test",
        "smtp-id": ORIGINAL,
        "event": "deferred",
        "response": "421 4.7.0 Try again later, closing connection",
        "attempt": "3",
    }
]
MAILGUN_FAILED = {
    "signature": {"token": "t", "timestamp": "1529006854", "signature": "s"},
    "event-data": {
        "event": "failed",
        "severity": "permanent",
        "reason": "bounce",
        "recipient": "ap@acme.test",
        "recipient-domain": "acme.test",
        "envelope": {"sender": "noreply-invoice@dunmail.test", "targets": "ap@acme.test"},
        "message": {
            "headers": {
                "to": "Accounts Payable <ap@acme.test>",
                "message-id": "inv-1042.7f3a@dunmail.test",
                "from": "Invoices <noreply-invoice@dunmail.test>",
            }
        },
        "delivery-status": {
            "code": 550,
            "message": "",
            "description": "Not delivered: the mailbox does not exist",
            "attempt-no": 1,
        },
    },
}
MAILGUN_TEMPORARY = {
    "event-data": {
        "event": "failed",
        "severity": "temporary",
        "recipient": "ap@acme.test",
        "delivery-status": {"code": 452, "message": "452 4.2.2 Mailbox full"},
        "message": {"headers": {"message-id": "inv-1042.7f3a@dunmail.test"}},
    }
}
POSTMARK_HARD = {
    "RecordType": "Bounce",
    "ID": 4323372036854775807,
    "Type": "HardBounce",
    "TypeCode": 1,
    "Name": "Hard bounce",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
    "Description": "The server was unable to deliver your message (ex: unknown user).",
    "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
    "Email": "ap@acme.test",
    "From": "noreply-invoice@dunmail.test",
    "Inactive": True,
}
SPARKPOST_BOUNCE = [
    {
        "msys": {
            "message_event": {
                "type": "bounce",
                "bounce_class": "10",
                "error_code": "550",
                "raw_reason": "550 5.1.1 <ap@acme.test>: Recipient address rejected: User unknown",
                "rcpt_to": "ap@acme.test",
                "raw_rcpt_to": "ap@acme.test",
                "friendly_from": "noreply-invoice@dunmail.test",
                "msg_from": "msprvs1=bounce@sparkpostmail.test",
                "message_id": "0e0d94b7-9085-4e3c-ab30",
            }
        }
    }
]
SES_COMPLAINT = {
    "notificationType": "Complaint",
    "complaint": {
        "complainedRecipients": [{"emailAddress": "ap@acme.test"}],
        "complaintFeedbackType": "abuse",
    },
    "mail": {"source": "noreply-invoice@dunmail.test", "destination": ["ap@acme.test"]},
}
SES_DELIVERY = {
    "notificationType": "Delivery",
    "delivery": {"recipients": ["ap@acme.test"], "smtpResponse": "250 2.6.0 Message received"},
    "mail": {"source": "noreply-invoice@dunmail.test", "destination": ["ap@acme.test"]},
}


def notice(document: Any, *, wrap: bool = False) -> bytes:
    """The document mailed as a provider mails it: a plain-text body holding the JSON."""
    text = json.dumps(document)
    if wrap:  # a line broken at the transport's limit, as SNS e-mail arrives
        text = "!\n ".join(text[i : i + 70] for i in range(0, len(text), 70))
    head = "From: no-reply@notifications.provider.test\nSubject: Notification\n\n"
    return (head + text + "\n\n--\nUnsubscribe: https://provider.test/u\n").encode()


@pytest.mark.parametrize(
    ("document", "status", "reply_code", "hard"),
    [
        (SES_BOUNCE, "5.1.1", 550, True),
        (SENDGRID_BOUNCE, "5.1.1", 550, True),
        (MAILGUN_FAILED, None, 550, True),
        (POSTMARK_HARD, "5.1.1", 550, True),
        (SPARKPOST_BOUNCE, "5.1.1", 550, True),
    ],
    ids=["ses", "sendgrid", "mailgun", "postmark", "sparkpost"],
)
def test_each_providers_bounce_reads_alike(
    document: Any, status: str | None, reply_code: int, hard: bool
) -> None:
    report = parse(notice(document))
    assert report.kind is Kind.BOUNCE
    [recipient] = report.recipients
    assert (recipient.address, recipient.status, recipient.reply_code, recipient.hard) == (
        "ap@acme.test",
        status,
        reply_code,
        hard,
    )
    assert recipient.reason == "userunknown"


@pytest.mark.parametrize(
    "document", [SES_BOUNCE, SENDGRID_BOUNCE, MAILGUN_FAILED], ids=["ses", "sendgrid", "mailgun"]
)
def test_the_original_message_id_is_found_by_its_syntax(document: Any) -> None:
    assert parse(notice(document)).original_message_id == ORIGINAL


def test_temporary_failures_are_soft() -> None:
    deferred = parse(notice(SENDGRID_DEFERRED))
    assert deferred.kind is Kind.DELAYED
    mailgun = parse(notice(MAILGUN_TEMPORARY))
    [recipient] = mailgun.recipients
    assert (recipient.address, recipient.status, recipient.hard) == ("ap@acme.test", "4.2.2", False)
    assert recipient.action == "delayed"


def test_complaints_and_deliveries_are_not_bounces() -> None:
    complaint = parse(notice(SES_COMPLAINT))
    assert complaint.kind is Kind.COMPLAINT
    assert [r.address for r in complaint.recipients] == ["ap@acme.test"]
    delivered = parse(notice(SES_DELIVERY))
    assert delivered.kind is Kind.DELIVERED
    assert all(r.action == "delivered" for r in delivered.recipients)


def test_a_notice_wrapped_in_transit_still_reads() -> None:
    [recipient] = parse(notice(SES_BOUNCE, wrap=True)).recipients
    assert (recipient.address, recipient.status) == ("ap@acme.test", "5.1.1")


def test_the_sender_is_never_taken_for_the_recipient() -> None:
    document = dict(POSTMARK_HARD, Details="Test bounce details")  # no code at all
    [recipient] = parse(notice(document)).recipients
    assert recipient.address == "ap@acme.test"


def _renamed(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {names.get(k, k): _renamed(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, names) for v in value]
    return value


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


_NEUTRAL = st.text(string.ascii_lowercase, min_size=3, max_size=10).filter(
    lambda k: not any(w in k for w in ("from", "source", "sender", "return", "reply", "id"))
)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_renaming_the_keys_changes_no_verdict(data: st.DataObject) -> None:
    """Only the sender's and the identifiers' keys carry meaning; every other name is free."""
    document = data.draw(
        st.sampled_from([SES_BOUNCE, SENDGRID_BOUNCE, POSTMARK_HARD, SPARKPOST_BOUNCE])
    )
    keys = sorted(
        k
        for k in _keys(document)
        if k not in ("name", "value") and not any(w in k.lower() for w in ("from", "source", "id"))
    )
    fresh = data.draw(st.lists(_NEUTRAL, min_size=len(keys), max_size=len(keys), unique=True))
    before = parse(notice(document))
    after = parse(notice(_renamed(document, dict(zip(keys, fresh, strict=True)))))
    assert after.kind is before.kind
    assert [(r.address, r.status, r.reply_code, r.hard) for r in after.recipients] == [
        (r.address, r.status, r.reply_code, r.hard) for r in before.recipients
    ]


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000,
        '{"a":' * 50_000,
        '{"event": "bounce", ' * 20_000,
        json.dumps({"event": "bounce", "note": "no address anywhere"}),
        json.dumps({"event": "ordered", "email": "ap@acme.test", "status": "5.1.1"}),
    ],
    ids=["deep-array", "deep-object", "many-openings", "no-address", "no-event"],
)
def test_hostile_or_empty_json_is_no_bounce_and_never_raises(body: str) -> None:
    raw = ("From: someone@example.test\nSubject: hello\n\n" + body).encode()
    assert parse(raw, detectors=generic_only()).kind is Kind.NOT_BOUNCE


def test_an_address_shown_as_another_addresss_display_name_is_not_the_recipient() -> None:
    raw = (
        b"From: Mail Delivery System <mailer-daemon@mx.dunmail.test>\n"
        b"Subject: Mail failure - malformed recipient address\n\n"
        b"A message that you sent contained one or more recipient addresses that were\n"
        b"incorrectly constructed:\n\n"
        b"  billing@acme.test <ap@acme.test>: malformed address: <ap@acme.test> may not\n"
        b"  follow billing@acme.test\n\n"
        b"This address has been ignored.\n"
    )
    report = parse(raw, detectors=generic_only())
    assert [r.address for r in report.recipients] == ["ap@acme.test"]


def test_an_address_repeated_as_its_own_mailto_link_is_kept() -> None:
    raw = (
        b"From: postmaster@mx.acme.test\nSubject: Undeliverable: Invoice INV-1042\n\n"
        b"Delivery has failed to these recipients or groups:\n\n"
        b"ap@acme.test<mailto:ap@acme.test>\n"
        b"The email address you entered couldn't be found.\n"
    )
    report = parse(raw, detectors=generic_only())
    assert [r.address for r in report.recipients] == ["ap@acme.test"]
