"""Detectors that hold on mail nobody wrote a module for, and delivery reports that never bounce.

Two promises of issue 15. RFC 3464 s2.3.3's ``delivered``, ``relayed`` and ``expanded`` are not
failures whatever else a notice says. And the generic readers (RFC 3464 fields, the prose
reader) must read a family's notices with that family's own detector switched off: measured
here leave-one-family-out over the shared corpus, and on notices shaped like no family's.
"""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.bounce_detectors_lofo import CORPUS, Figures, load_labels, read_all, table
from bounce import Kind, parse
from bounce.registry import DETECTORS, generic_only, without_families

FAILED_SUBJECT = "Delivery Status Notification (Failure)"


def _dsn(
    blocks: list[str],
    *,
    subject: str = FAILED_SUBJECT,
    text: str = "This is the mail system at host mx.example.net.\n\nYour message could not be "
    "delivered to one or more recipients.\n",
    dsn_type: str = "message/delivery-status",
    newline: str = "\n",
) -> bytes:
    """A multipart/report as Postfix and Sendmail write it, with the given per-recipient blocks."""
    status = "Reporting-MTA: dns; mx.example.net\nArrival-Date: Mon, 3 Mar 2025 10:00:00 +0000\n"
    status += "".join("\n" + block.strip("\n") + "\n" for block in blocks)
    raw = (
        "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\n"
        "To: billing@dunmail.example\n"
        f"Subject: {subject}\n"
        "Message-ID: <notice-1@mx.example.net>\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n'
        "\n--B\nContent-Type: text/plain\n\n"
        f"{text}"
        f"\n--B\nContent-Type: {dsn_type}\n\n{status}"
        "\n--B\nContent-Type: text/rfc822-headers\n\n"
        "From: billing@dunmail.example\nTo: ap@customer.example\n"
        "Message-ID: <invoice-1042@dunmail.example>\nSubject: Invoice 1042\n"
        "\n--B--\n"
    )
    return raw.replace("\n", newline).encode()


def _block(address: str, action: str, status: str = "5.1.1", diagnostic: str = "") -> str:
    diag = f"Diagnostic-Code: {diagnostic}\n" if diagnostic else ""
    return (
        f"Final-Recipient: rfc822; {address}\nOriginal-Recipient: rfc822;{address}\n"
        f"Action: {action}\nStatus: {status}\n{diag}"
    )


# --- delivered, relayed and expanded are never bounces -------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    action=st.sampled_from(["delivered", "relayed", "expanded"]),
    spelling=st.sampled_from(["{}", "{}".title(), "{}".upper(), "{};", "{} (to mailbox)", "{}."]),
    folded=st.booleans(),
    crlf=st.booleans(),
    status=st.sampled_from(["2.0.0", "5.1.1", "5.0.0", "4.4.7", "2.1.5"]),
    diagnostic=st.sampled_from(["", "smtp; 550 5.1.1 <ap@customer.example>: User unknown"]),
)
def test_a_success_action_is_never_a_bounce(
    action: str, spelling: str, folded: bool, crlf: bool, status: str, diagnostic: str
) -> None:
    """Whatever the Status, Diagnostic-Code, prose and subject say beside it."""
    word = spelling.replace("{}", action.title() if spelling == "{}".title() else action)
    if spelling == "{}".upper():
        word = action.upper()
    value = f"\n {word}" if folded else f" {word}"
    block = _block("ap@customer.example", "X", status, diagnostic).replace(
        "Action: X", f"Action:{value}"
    )
    report = parse(_dsn([block], newline="\r\n" if crlf else "\n"))
    assert report.kind is Kind.DELIVERED
    assert not report.is_failure
    assert all(not r.hard for r in report.recipients)


def test_a_mixed_report_keeps_only_the_failed_recipients() -> None:
    raw = _dsn(
        [
            _block("ok@customer.example", "Delivered", "2.0.0"),
            _block("ap@customer.example", "failed", "5.1.1", "smtp; 550 5.1.1 User unknown"),
            _block("list@customer.example", "expanded;", "2.0.0"),
        ]
    )
    report = parse(raw)
    assert report.kind is Kind.BOUNCE
    assert [r.address for r in report.recipients] == ["ap@customer.example"]
    assert report.original_message_id == "<invoice-1042@dunmail.example>"


def test_a_success_status_without_an_action_is_not_a_delay() -> None:
    """RFC 3463 s3.1: class 2 is success; it used to come out as a delay notice."""
    block = "Final-Recipient: rfc822; ap@customer.example\nStatus: 2.0.0\n"
    assert parse(_dsn([block])).kind is Kind.DELIVERED


def test_delivered_fields_overrule_every_other_reader() -> None:
    """A block whose address no reader can use still says the message was delivered.

    The prose readers would otherwise take the failure-worded text for a bounce.
    """
    block = "Final-Recipient: LOCAL; ap\nAction: delivered\nStatus: 2.0.0\n"
    text = (
        "Your message could not be delivered to ap@customer.example.\n"
        "550 5.1.1 <ap@customer.example>... User unknown\n"
    )
    assert parse(_dsn([block], text=text)).kind is Kind.DELIVERED


def test_a_prose_success_notice_is_not_a_bounce() -> None:
    """Exchange's "Delivered:" receipt and its kind carry no RFC 3464 part at all."""
    message = EmailMessage()
    message["From"] = "postmaster@customer.example"
    message["To"] = "billing@dunmail.example"
    message["Subject"] = "Delivered: Invoice 1042"
    message.set_content(
        "Your message has been delivered to the following recipients:\n\n"
        "ap@customer.example (ap@customer.example)\n\nSubject: Invoice 1042\n"
    )
    report = parse(message.as_bytes())
    assert report.kind is Kind.DELIVERED
    assert not report.is_failure


def test_a_notice_that_also_writes_a_failure_stays_a_bounce() -> None:
    message = EmailMessage()
    message["From"] = "postmaster@customer.example"
    message["To"] = "billing@dunmail.example"
    message["Subject"] = "Undeliverable: Invoice 1042"
    message.set_content(
        "Your message was delivered to ok@customer.example, but delivery failed to:\n\n"
        "ap@customer.example\n550 5.1.1 User unknown\n"
    )
    assert parse(message.as_bytes()).kind is Kind.BOUNCE


def _corpus_files(category: str) -> list[Path]:
    if not (CORPUS / "labels.jsonl").is_file():
        pytest.skip(f"bounce corpus not found at {CORPUS}")
    labels = load_labels()
    return [CORPUS / "emails" / r["file"] for r in labels if r["category"] == category]


def test_the_corpus_delivery_notice_is_delivered_with_or_without_its_family() -> None:
    for path in _corpus_files("delivered"):
        assert parse(path.read_bytes()).kind is Kind.DELIVERED, path.name
        assert not parse(path.read_bytes(), detectors=generic_only()).is_failure, path.name


# --- the generic readers, with every family detector switched off -----------------------------


def test_every_detector_declares_its_families() -> None:
    generic = {d.name for d in DETECTORS if not d.families}
    assert generic == {"dsn", "text", "arf", "autoreply", "json_event"}
    for detector in DETECTORS:
        assert isinstance(detector.families, tuple)
        assert all(isinstance(f, str) and f for f in detector.families)
    assert [d.name for d in without_families("Postfix")] == [
        d.name for d in DETECTORS if d.name != "postfix"
    ]


def test_declared_families_are_corpus_families() -> None:
    """A typo in a family name would leave its detector on in its own fold."""
    labels = load_labels() if (CORPUS / "labels.jsonl").is_file() else None
    if labels is None:
        pytest.skip(f"bounce corpus not found at {CORPUS}")
    known = {r["mta"] for r in labels}
    for detector in DETECTORS:
        assert set(detector.families) <= known, (detector.name, detector.families)


def test_a_report_part_under_the_wrong_type_is_still_read() -> None:
    raw = _dsn(
        [_block("ap@customer.example", "failed", "5.0.0", "smtp; 550 5.1.1 No such user")],
        dsn_type="application/octet-stream",
        text="Delivery to the listed recipients failed.\n",
    )
    report = parse(raw, detectors=generic_only())
    assert report.kind is Kind.BOUNCE
    assert [(r.address, r.status) for r in report.recipients] == [("ap@customer.example", "5.1.1")]


@pytest.mark.parametrize("indent", ["   ", "\t", "> "])
def test_indented_or_quoted_report_fields_are_read(indent: str) -> None:
    fields = (
        "Reporting-MTA: dns; gw.customer.example\n\n"
        "Final-Recipient: rfc822; ap@customer.example\nAction: failed\nStatus: 5.2.2\n"
        "Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\n"
    )
    message = EmailMessage()
    message["From"] = "Mail Delivery Subsystem <mailer-daemon@gw.customer.example>"
    message["To"] = "billing@dunmail.example"
    message["Subject"] = "Returned mail: see transcript for details"
    quoted = "\n".join(indent + line if line else indent.rstrip() for line in fields.split("\n"))
    message.set_content("The report of the remote system:\n\n" + quoted + "\n")
    report = parse(message.as_bytes(), detectors=generic_only())
    assert report.kind is Kind.BOUNCE
    assert [(r.address, r.status) for r in report.recipients] == [("ap@customer.example", "5.2.2")]


def test_a_returned_bounce_threads_on_the_mail_that_failed() -> None:
    """A notice about a notice: the innermost attached message is the one that failed."""
    inner = _dsn(
        [_block("ap@customer.example", "failed", "5.1.1", "smtp; 550 5.1.1 User unknown")]
    ).decode()
    raw = (
        "From: MAILER-DAEMON@relay.example.net\nTo: postmaster@mx.example.net\n"
        "Subject: Returned mail: User unknown\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="OUT"\n\n--OUT\nContent-Type: text/plain\n\n'
        "----- The following addresses had permanent delivery errors -----\n"
        "<ap@customer.example>\n\n--OUT\nContent-Type: message/rfc822\n\n"
        f"{inner}\n--OUT--\n"
    ).encode()
    assert parse(raw).original_message_id == "<invoice-1042@dunmail.example>"


def _unknown_mta(body: str) -> bytes:
    message = EmailMessage()
    message["From"] = "Mail Delivery System <MAILER-DAEMON@gw.unheard-of.example>"
    message["To"] = "billing@dunmail.example"
    message["Subject"] = "Undelivered Mail Returned to Sender"
    message.set_content(
        body + "\n--- Below this line is a copy of the message.\n\n"
        "From: billing@dunmail.example\nTo: ap@customer.example\n"
        "Message-ID: <invoice-1042@dunmail.example>\nSubject: Invoice 1042\n\nHello\n"
    )
    return message.as_bytes()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("Delivery failed.\n\n<ap@customer.example>... 550 5.1.1 User unknown\n", "5.1.1"),
        ("Delivery failed.\n\nap@customer.example: 552 5.2.2 mailbox over quota\n", "5.2.2"),
        (
            "Your message could not be delivered.\n\n<ap@customer.example>:\n"
            "    host mx.customer.example said: 550 5.7.1 message rejected by policy\n",
            "5.7.1",
        ),
        (
            "A permanent error occurred.\nRCPT TO:<ap@customer.example> 550 5.1.2 bad host\n",
            "5.1.2",
        ),
    ],
    ids=["angle-dots", "colon", "indented-reply", "rcpt-line"],
)
def test_an_unknown_mtas_text_notice_is_read_by_its_shape(body: str, status: str) -> None:
    report = parse(_unknown_mta(body), detectors=generic_only())
    assert report.kind is Kind.BOUNCE
    assert [(r.address, r.status) for r in report.recipients] == [("ap@customer.example", status)]
    assert report.original_message_id == "<invoice-1042@dunmail.example>"


# --- the measurement --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def readings() -> dict[str, Figures]:
    if not (CORPUS / "labels.jsonl").is_file():
        pytest.skip(f"bounce corpus not found at {CORPUS}")
    return read_all()


def test_print_leave_one_family_out_figures(
    readings: dict[str, Figures], capsys: pytest.CaptureFixture[str]
) -> None:
    """The figures on every run, in-sample beside the ablations."""
    with capsys.disabled():
        print("\n" + "\n".join(table(readings)))  # noqa: T201


def test_the_generic_readers_hold_without_the_family_detectors(
    readings: dict[str, Figures],
) -> None:
    """The issue's targets, met with each family's own detector switched off."""
    for name in ("leave-one-family-out", "generic only"):
        figures = readings[name]
        assert figures.detection.percent >= 99.5, (name, figures.detection.misses)
        assert figures.recipients.percent >= 99.0, (name, figures.recipients.misses)
        assert figures.status.percent >= 98.0, (name, figures.status.misses)
        assert figures.message_id.percent >= 99.0, (name, figures.message_id.misses)
        assert figures.false_positives == [], name


def test_switching_detectors_off_never_beats_the_whole_registry(
    readings: dict[str, Figures],
) -> None:
    whole = readings["in-sample"]
    assert whole.false_positives == []
    for figures in readings.values():
        for (_, mine), (_, full) in zip(figures.scores(), whole.scores(), strict=True):
            assert mine.hits <= full.hits
