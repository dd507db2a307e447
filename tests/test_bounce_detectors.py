"""Each text family's detector on one small notice in its own mould: claimed by it, read right.

The samples are written from each mail system's published wording (qmail-send.c, Exim's
deliver.c, Postfix's bounce(8) templates ...) with made-up addresses; the real notices are in
the corpus, which tests/test_bounce_corpus.py scores as a whole.
"""

from __future__ import annotations

import pytest

from bounce import Kind, parse
from bounce.detectors.base import Detector
from bounce.detectors.mime import read_mail
from bounce.registry import DETECTORS

RCPT = "ap@customer.test"
ORIGINAL = """\
From: ar@acme.test
To: ap@customer.test
Subject: Invoice INV-1042
Message-ID: <inv1042.abc@acme.test>

Please find your invoice attached.
"""


def notice(sender: str, subject: str, body: str, *, original: str = ORIGINAL) -> bytes:
    """A plain-text notice with the returned message quoted after the body."""
    return f"From: {sender}\nTo: ar@acme.test\nSubject: {subject}\n\n{body}\n{original}".encode()


SAMPLES: dict[str, tuple[bytes, str, bool]] = {
    # detector name -> (message, expected status, expected hard)
    "qmail": (
        notice(
            "MAILER-DAEMON@mx.acme.test",
            "failure notice",
            f"""\
Hi. This is the qmail-send program at mx.acme.test.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<{RCPT}>:
192.0.2.10 does not like recipient.
Remote host said: 550 5.1.1 <{RCPT}>... User Unknown
Giving up on 192.0.2.10.

--- Below this line is a copy of the message.
""",
        ),
        "5.1.1",
        True,
    ),
    "exim": (
        notice(
            "Mail Delivery System <Mailer-Daemon@mx.acme.test>",
            "Mail delivery failed: returning message to sender",
            f"""\
This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  {RCPT}
    SMTP error from remote mail server after RCPT TO:<{RCPT}>:
    host mx.customer.test [192.0.2.20]: 550 5.1.1 <{RCPT}>: Recipient address rejected: User unknown

------ This is a copy of the message, including all the headers. ------
""",
        ),
        "5.1.1",
        True,
    ),
    "exchange": (
        notice(
            "postmaster@customer.test",
            "Undeliverable: Invoice INV-1042",
            f"""\
Delivery has failed to these recipients or groups:

{RCPT}<mailto:{RCPT}>
Your message couldn't be delivered because the recipient's mailbox is full.

Diagnostic information for administrators:

Generating server: EX01.customer.test

{RCPT}
Remote Server returned '552 5.2.2 STOREDRV.Deliver; mailbox full'

Original message headers:
""",
        ),
        "5.2.2",
        False,
    ),
    "gmail": (
        notice(
            "Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
            "Delivery Status Notification (Failure)",
            f"""\
Delivery to the following recipient failed permanently:

     {RCPT}

Technical details of permanent failure:
Google tried to deliver your message, but it was rejected by the server for the recipient
domain customer.test by mx.customer.test. [192.0.2.30].

The error that the other server returned was:
550 5.1.1 <{RCPT}>: Recipient address rejected: User unknown in virtual mailbox table

----- Original message -----
""",
        ),
        "5.1.1",
        True,
    ),
    "yahoo": (
        notice(
            "MAILER-DAEMON@yahoo.com",
            "Failure Notice",
            f"""\
Sorry, we were unable to deliver your message to the following address.

<{RCPT}>:
Remote host said: 552 5.2.2 <{RCPT}>: Mailbox full [RCPT_TO]

--- Below this line is a copy of the message.
""",
        ),
        "5.2.2",
        False,
    ),
    "domino": (
        notice(
            "Postmaster <postmaster@customer.test>",
            "DELIVERY FAILURE: User ap not listed in Domino Directory",
            f"""\
Your message

  Subject: Invoice INV-1042

was not delivered to:

  {RCPT}

because:

  550 5.1.1 User ap ({RCPT}) not listed in Domino Directory

------- Returned Message --------
""",
        ),
        "5.1.1",
        True,
    ),
    "postfix": (
        notice(
            "MAILER-DAEMON@mx.acme.test (Mail Delivery System)",
            "Undelivered Mail Returned to Sender",
            f"""\
This is the mail system at host mx.acme.test.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

                   The mail system

<{RCPT}>: host mx.customer.test[192.0.2.40] said: 550 5.1.1
    <{RCPT}>: Recipient address rejected: User unknown in local recipient
    table (in reply to RCPT TO command)

--- Undelivered Message ---
""",
        ),
        "5.1.1",
        True,
    ),
    "sendmail": (
        notice(
            "Mail Delivery Subsystem <MAILER-DAEMON@mx.acme.test>",
            "Returned mail: see transcript for details",
            f"""\
The original message was received at Mon, 2 Mar 2026 10:00:00 +0100
from localhost [127.0.0.1]

   ----- The following addresses had permanent fatal errors -----
<{RCPT}>
    (reason: 550 5.1.1 <{RCPT}>... User unknown)

   ----- Transcript of session follows -----
... while talking to mx.customer.test.:
>>> RCPT To:<{RCPT}>
<<< 550 5.1.1 <{RCPT}>... User unknown
550 5.1.1 <{RCPT}>... User unknown

   ----- Original message follows -----
""",
        ),
        "5.1.1",
        True,
    ),
    "dragonfly": (
        notice(
            "MAILER-DAEMON <>",
            "Mail delivery failed",
            f"""\
This is the DragonFly Mail Agent v0.13 at mx.acme.test.

There was an error delivering your mail to <{RCPT}>.

mx.customer.test [192.0.2.50] did not like our RCPT TO:
550 5.1.1 <{RCPT}>: Recipient address rejected: User unknown

Message headers follow.
""",
        ),
        "5.1.1",
        True,
    ),
}


@pytest.mark.parametrize("family", sorted(SAMPLES))
def test_family_claims_its_own_notice(family: str) -> None:
    raw, status, hard = SAMPLES[family]
    report = parse(raw)
    assert report.detector == family
    assert report.kind is Kind.BOUNCE
    [recipient] = report.recipients
    assert (recipient.address, recipient.status, recipient.hard) == (RCPT, status, hard)
    assert report.original_message_id == "<inv1042.abc@acme.test>"


@pytest.mark.parametrize("family", sorted(SAMPLES))
def test_no_other_family_claims_it_first(family: str) -> None:
    """The registry's order matters only where marks overlap; these samples overlap nowhere."""
    mail = read_mail(SAMPLES[family][0])
    claimed = [d.name for d in DETECTORS if d.name != "text" and d.detect(mail) is not None]
    assert claimed == [family]


def test_marks_quoted_by_a_person_are_not_a_bounce() -> None:
    """A colleague forwarding a qmail notice writes as a person: no family takes it."""
    raw, _, _ = SAMPLES["qmail"]
    forwarded = raw.replace(b"From: MAILER-DAEMON@mx.acme.test", b"From: Ann <ann@acme.test>")
    forwarded = forwarded.replace(b"Subject: failure notice", b"Subject: Fwd: see below")
    report = parse(forwarded)
    assert report.detector not in SAMPLES


def test_fml_refusal_names_the_list() -> None:
    raw = notice(
        "list-admin@lists.customer.test",
        "You ar@acme.test are not member (billing ML)",
        "You are not a member of this mailing list <billing@lists.customer.test>.\n",
        original="",
    )
    report = parse(raw)
    assert report.detector == "fml"
    [recipient] = report.recipients
    assert (recipient.address, recipient.reason, recipient.hard) == (
        "billing@lists.customer.test",
        "rejected",
        False,
    )


def test_every_detector_conforms_to_the_protocol() -> None:
    names = [d.name for d in DETECTORS]
    assert len(names) == len(set(names))
    assert names[-1] == "text"  # the generic prose reader is the last resort
    for detector in DETECTORS:
        assert isinstance(detector.name, str)
        conforming: Detector = detector
        assert callable(conforming.detect)
