"""Reasons by meaning: how well-known mail systems word each failure, read as Sisimai defines it.

These answers are written from the mail systems' own documentation and long-standing wording
(Gmail's SMTP error reference, Microsoft's NDR pages, Postfix, Exim, Sendmail, qmail, Yahoo,
Spamhaus), not from the shared corpus: they check that each phrase family lands on a wording
because of what it says. The properties check that the verdict does not depend on spelling
that carries no meaning: letter case, runs of white space, and a reply broken into RFC 5321
continuation lines.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bounce.classify import classify_hard, classify_reason

# (reason, enhanced status, SMTP command answered, the server's words)
WORDINGS: list[tuple[str, str | None, str | None, str]] = [
    (
        "userunknown",
        "5.1.1",
        None,
        "550 5.1.1 The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos or unnecessary spaces.",
    ),
    (
        "userunknown",
        "5.1.1",
        "RCPT",
        "550 5.1.1 <ap@acme.test>: Recipient address rejected: User unknown in virtual mailbox "
        "table",
    ),
    (
        "userunknown",
        "5.1.10",
        None,
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient ap@acme.test not found by SMTP "
        "address lookup",
    ),
    (
        "userunknown",
        "5.0.0",
        None,
        "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) "
        "[DM6NAM.prod.protection.outlook.com]",
    ),
    (
        "userunknown",
        "5.1.1",
        None,
        "The email address you entered couldn't be found. Please check the recipient's email "
        "address and try to resend the message.",
    ),
    ("userunknown", None, "RCPT", "550 No such user here"),
    ("userunknown", None, None, "Sorry, no mailbox here by that name. (#5.1.1)"),
    ("userunknown", "5.1.1", None, "550 5.1.1 <ap@acme.test>... User unknown"),
    ("userunknown", "5.0.0", "RCPT", "550 Unknown local part ap in <ap@acme.test>"),
    ("userunknown", "5.1.1", None, "550 5.1.1 Mailbox does not exist"),
    (
        "mailboxfull",
        "5.2.2",
        None,
        "552 5.2.2 The email account that you tried to reach is over quota. Please direct the "
        "recipient to https://support.google.com/mail/?p=OverQuotaPerm",
    ),
    (
        "mailboxfull",
        "4.2.2",
        None,
        "452 4.2.2 The email account that you tried to reach is over quota.",
    ),
    ("mailboxfull", "5.0.0", None, "552 Mailbox quota exceeded for this recipient"),
    ("mailboxfull", None, None, "Quota exceeded (mailbox for user is full)"),
    ("mailboxfull", "5.2.0", None, "550 5.2.0 Delivery failed: Over quota"),
    ("mailboxfull", "4.2.2", None, "user is over quota"),
    ("suspend", "5.2.1", None, "550 5.2.1 The email account that you tried to reach is disabled."),
    (
        "suspend",
        "5.0.0",
        None,
        "554 30 Sorry, your message to ap@yahoo.test cannot be delivered. This mailbox is "
        "disabled (554.30).",
    ),
    ("suspend", "5.2.1", None, "550 5.2.1 Mailbox unavailable. Account disabled"),
    (
        "hostunknown",
        "5.4.4",
        None,
        "Host or domain name not found. Name service error for name=acme.invalid type=A: Host "
        "not found",
    ),
    ("hostunknown", "5.1.2", None, "DNS Error: Domain name not found"),
    (
        "hostunknown",
        "5.1.2",
        None,
        "DNS Error: DNS type 'mx' lookup of acme.invalid responded with code NXDOMAIN Domain "
        "name not found: acme.invalid",
    ),
    ("hostunknown", None, None, "Host unknown (Authoritative answer from name server)"),
    ("hostunknown", "5.0.0", None, "550 Host unknown"),
    ("hostunknown", None, None, "the domain is not reachable"),
    (
        "networkerror",
        "4.4.3",
        None,
        "Host or domain name not found. Name service error for name=acme.test type=MX: Host not "
        "found, try again",
    ),
    ("expired", "4.0.0", None, "retry timeout exceeded"),
    ("expired", "5.4.7", None, "550 5.4.7 Message expired"),
    (
        "expired",
        None,
        None,
        "I'm not going to try again; this message has been in the queue too long.",
    ),
    ("expired", "4.4.7", None, "Delivery time expired"),
    ("expired", "4.4.1", None, "connect to mx.acme.test[192.0.2.1]:25: Connection timed out"),
    (
        "blocked",
        "5.7.1",
        None,
        "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org; "
        "https://www.spamhaus.org/query/ip/192.0.2.1",
    ),
    (
        "blocked",
        "5.7.1",
        None,
        "550 5.7.1 Mail from IP 192.0.2.1 was rejected due to listing in Spamhaus SBL.",
    ),
    (
        "blocked",
        "5.7.606",
        None,
        "550 5.7.606 Access denied, banned sending IP [192.0.2.1]. To request removal from this "
        "list please visit https://sender.office.com/",
    ),
    ("blocked", "5.7.1", None, "554 5.7.1 Your IP address 192.0.2.1 has been blocked"),
    ("blocked", "5.0.0", "CONNECT", "554 mx.acme.test ESMTP not accepting messages"),
    ("spamdetected", "5.7.1", None, "550 5.7.1 Message rejected as spam by Content Filtering."),
    ("spamdetected", "5.7.1", None, "550 High probability of spam"),
    (
        "spamdetected",
        "5.7.1",
        "DATA",
        "554 5.7.1 This message has been blocked because it contains spam",
    ),
    (
        "policyviolation",
        "5.7.0",
        None,
        "552 5.7.0 This message was blocked because its content presents a potential security "
        "issue. Please visit https://support.google.com/mail/?p=BlockedMessage",
    ),
    ("mesgtoobig", "5.3.4", None, "552 5.3.4 Message size exceeds fixed limit"),
    ("mesgtoobig", "5.0.0", None, "552 Message size exceeds maximum permitted"),
    ("mesgtoobig", None, None, "message file too big"),
    ("mesgtoobig", "5.3.4", None, "552 5.3.4 Error: message file too big"),
    ("exceedlimit", "5.2.3", None, "552 5.2.3 Message exceeds maximum fixed size"),
    (
        "toomanyconn",
        "4.7.0",
        None,
        "421 4.7.0 Too many concurrent SMTP connections from this IP address; please try again "
        "later.",
    ),
    (
        "speeding",
        "4.2.1",
        None,
        "450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
        "additional messages from being delivered.",
    ),
    (
        "toomanyconn",
        "5.1.1",
        None,
        "550 5.1.1 ap@acme.test has sent to too many recipients this hour",
    ),
    ("norelaying", "5.7.1", "RCPT", "554 5.7.1 <ap@acme.test>: Relay access denied"),
    ("norelaying", "5.0.0", None, "550 relay not permitted"),
    (
        "requireptr",
        "5.7.1",
        None,
        "550 5.7.1 Client host rejected: cannot find your reverse hostname, [192.0.2.1]",
    ),
    (
        "requireptr",
        "5.7.25",
        None,
        "550 5.7.25 The IP address sending this message does not have a PTR record setup",
    ),
    (
        "authfailure",
        "5.7.26",
        None,
        "550 5.7.26 This message does not have authentication information or fails to pass "
        "authentication checks (SPF or DKIM).",
    ),
    ("authfailure", "5.7.1", None, "550 5.7.1 Email rejected per DMARC policy for acme.test"),
    (
        "rejected",
        "5.1.8",
        "MAIL",
        "553 5.1.8 <billing@vendor.test>... Domain of sender address billing@vendor.test does "
        "not exist",
    ),
    (
        "rejected",
        "5.7.1",
        None,
        "554 5.7.1 <billing@vendor.test>: Sender address rejected: Access denied",
    ),
    ("virusdetected", "5.7.1", None, "554 5.7.1 The message contains a virus"),
    ("systemerror", "4.3.0", None, "451 4.3.0 Temporary local problem - please try later"),
    ("mailererror", None, None, 'procmail: Couldn\'t create "/var/mail/ap"'),
    (
        "mailererror",
        "5.3.0",
        None,
        'Command died with status 1: "/usr/lib/dovecot/deliver". Command output: Couldn\'t '
        "create mailbox",
    ),
    ("systemfull", "4.3.1", None, "452 4.3.1 Insufficient system storage"),
    ("mailererror", None, None, "Couldn't create /home/ap/Maildir/new"),
    ("mailererror", "5.0.0", None, "Couldn't create mailbox file /var/mail/ap: Permission denied"),
    (
        "mesgtoobig",
        "5.3.0",
        None,
        "The message could not be delivered because the message size exceeded the limit",
    ),
    (
        "mesgtoobig",
        "5.0.0",
        None,
        "552 message size 31000 exceeds size limit 20000 of server mx.acme.test",
    ),
    ("userunknown", "5.1.351", None, "Remote Server returned '550 5.1.351 Unknown recipient'"),
    ("notaccept", "5.1.10", None, "556 5.1.10 Recipient address has null MX"),
    ("hasmoved", "5.1.6", None, "550 5.1.6 Recipient no longer on server"),
    ("securityerror", "5.7.0", None, "530 5.7.0 Must issue a STARTTLS command first"),
    ("filtered", "5.2.1", "DATA", "550 5.2.1 <ap@acme.test>... User Unknown"),
]


@pytest.mark.parametrize(
    ("reason", "status", "command", "text"),
    WORDINGS,
    ids=[f"{w[0]}-{i}" for i, w in enumerate(WORDINGS)],
)
def test_each_wording_reads_as_what_it_means(
    reason: str, status: str | None, command: str | None, text: str
) -> None:
    assert classify_reason(status, text, command=command, action="failed") == reason


def test_the_table_covers_every_reason_an_ar_team_acts_on() -> None:
    """Both sides of the hard/soft line are held, so a drift across it shows up here."""
    reasons = {w[0] for w in WORDINGS}
    assert {"userunknown", "hostunknown", "hasmoved", "notaccept"} <= reasons
    assert {"mailboxfull", "blocked", "expired", "toomanyconn", "filtered", "suspend"} <= reasons
    hard = {r for r in reasons if classify_hard(r, "5.0.0")}
    assert hard == {"userunknown", "hostunknown", "hasmoved", "notaccept"}


def _respelled(text: str, upper: list[bool], spaces: list[int]) -> str:
    words = text.split(" ")
    out = []
    for i, word in enumerate(words):
        if upper[i % len(upper)]:
            word = word.upper()
        out.append(word + " " * spaces[i % len(spaces)])
    return "".join(out).strip()


@given(
    case=st.sampled_from(WORDINGS),
    upper=st.lists(st.booleans(), min_size=1, max_size=8),
    spaces=st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=8),
)
def test_case_and_white_space_carry_no_meaning(
    case: tuple[str, str | None, str | None, str], upper: list[bool], spaces: list[int]
) -> None:
    reason, status, command, text = case
    respelled = _respelled(text, upper, spaces)
    assert classify_reason(status, respelled, command=command, action="failed") == reason


@given(case=st.sampled_from(WORDINGS), cut=st.integers(min_value=0, max_value=1000))
def test_a_reply_broken_into_continuation_lines_reads_the_same(
    case: tuple[str, str | None, str | None, str], cut: int
) -> None:
    """'550-5.1.1 first half' / '550 5.1.1 second half' (RFC 5321 s4.2.1) is one answer."""
    reason, status, command, text = case
    spaces = [i for i, c in enumerate(text) if c == " "]
    if not spaces or not text[:3].isdigit():
        return  # only a server's own numbered reply is broken into lines
    at = spaces[cut % len(spaces)]
    code = text[:3]
    prefix = f"{code} {status} " if status and text[4:].startswith(status) else f"{code} "
    broken = f"{text[:at]}\n{prefix}{text[at + 1 :]}"
    broken = broken.replace(f"{code} ", f"{code}-", 1)
    assert classify_reason(status, broken, command=command, action="failed") == reason
