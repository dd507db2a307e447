"""Generate the project's own bounce evidence: real Postfix returns for failures we configured.

The sending Postfix (tests/postfix.py) relays one message per case to a receiving Postfix
(tests/postfix_receiver.py) set up to refuse or return it the way real servers do; every
notice comes back to the case's VERP address and is written out as ``<file>.eml`` beside this
module, with a line in ``labels.jsonl`` in the shared corpus's label format.

The expected verdicts are known by construction (we configured the failure) and are written
from the case table below, never from what ``bounce.parse`` makes of the result. Regenerate
with::

    .venv/bin/python -m tests.bounce_evidence.generate           # every case
    .venv/bin/python -m tests.bounce_evidence.generate userunknown-rcpt hostunknown-nxdomain
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

from mailer.config import SMTPEndpoint
from mailer.outbound.smtp import SMTPTransport
from tests.postfix import (
    BOUNCE_DOMAIN,
    PostfixError,
    PrivatePostfix,
    free_port,
    private_postfix,
)
from tests.postfix_receiver import (
    DNSBL_ZONE,
    LISTED_CLIENT,
    MISSING_DOMAIN,
    RECEIVER_DOMAIN,
    RECEIVER_SIZE_LIMIT,
    REJECTED_SENDER,
    RELAY_DENIED_DOMAIN,
    SENDER_MASTER_CF,
    SILENT_DOMAIN,
    TINY_MAILBOX_LIMIT,
    DNSResponder,
    SilentListener,
    dnsbl_records,
    receiving_postfix,
    sender_routes,
    write_resolv_conf,
)

HERE = Path(__file__).resolve().parent
MTA = "dunmail-postfix"
FROM = "ar@acme.example"


@dataclass(frozen=True)
class Notice:
    """One notice a case produces, and its verdict (Sisimai's reason vocabulary)."""

    file: str
    category: str  # "bounce" (Action: failed) or "delayed" (Action: delayed)
    status: str
    reason: str
    hard: bool
    replycode: str | None = None

    @property
    def action(self) -> str:
        return "delayed" if self.category == "delayed" else "failed"


@dataclass(frozen=True)
class Case:
    """One configured failure: who the message goes to and what must come back."""

    name: str
    recipient: str
    how: str  # the configuration that makes it fail, for the label's notes
    notices: tuple[Notice, ...]
    subject: str = "Invoice INV-1001 from Acme Supplies"
    filler_bytes: int = 0  # extra body, for the size cases
    authors: str = f"Acme Supplies <{FROM}>"  # the From: header

    @property
    def sender(self) -> str:
        return f"bounces+{self.name}@{BOUNCE_DOMAIN}"

    @property
    def message_id(self) -> str:
        return f"<evidence-{self.name}@acme.example>"


R = RECEIVER_DOMAIN
CASES: tuple[Case, ...] = (
    Case(
        "userunknown-rcpt",
        f"nobody-here@{R}",
        "the receiver refuses an address not in its virtual mailbox table at RCPT "
        "(smtpd_reject_unlisted_recipient)",
        (Notice("userunknown-rcpt.eml", "bounce", "5.1.1", "userunknown", True, "550"),),
    ),
    Case(
        "hostunknown-nxdomain",
        f"ap@{MISSING_DOMAIN}",
        "the sender's DNS answers NXDOMAIN for the recipient domain (MX and A)",
        (Notice("hostunknown-nxdomain.eml", "bounce", "5.4.4", "hostunknown", True),),
    ),
    Case(
        "mailboxfull-after-accept",
        f"full@{R}",
        f"the receiver accepts, then its virtual(8) delivery to an mbox already near "
        f"virtual_mailbox_limit ({TINY_MAILBOX_LIMIT} bytes) fails and the receiver returns "
        "the message itself",
        (Notice("mailboxfull-after-accept.eml", "bounce", "5.2.2", "mailboxfull", False),),
    ),
    Case(
        "mailboxfull-rcpt",
        f"quota@{R}",
        "the receiver answers RCPT with '552 5.2.2 Mailbox full' (check_recipient_access)",
        (Notice("mailboxfull-rcpt.eml", "bounce", "5.2.2", "mailboxfull", False, "552"),),
    ),
    Case(
        "mesgtoobig-size-announced",
        f"toobig@{R}",
        f"the receiver announces SIZE {RECEIVER_SIZE_LIMIT}; the sender does not try a bigger "
        "message",
        (Notice("mesgtoobig-size-announced.eml", "bounce", "5.3.4", "mesgtoobig", False),),
        filler_bytes=RECEIVER_SIZE_LIMIT + 10_000,
    ),
    Case(
        "mesgtoobig-end-of-data",
        f"nosize@{R}",
        f"the sender speaks HELO (no SIZE); the receiver refuses at end of DATA over "
        f"message_size_limit ({RECEIVER_SIZE_LIMIT})",
        (Notice("mesgtoobig-end-of-data.eml", "bounce", "5.3.4", "mesgtoobig", False, "552"),),
        filler_bytes=RECEIVER_SIZE_LIMIT + 10_000,
    ),
    Case(
        "expired-greeting-timeout",
        f"ap@{SILENT_DOMAIN}",
        "the next hop accepts TCP and never greets; the sender's smtp_helo_timeout (2 s) "
        "defers it, a delay warning goes out after 1 s and it expires after queue_lifetime "
        "(4 s)",
        (
            Notice("delayed-greeting-timeout.eml", "delayed", "4.4.2", "expired", False),
            Notice("expired-greeting-timeout.eml", "bounce", "4.4.2", "expired", False),
        ),
    ),
    Case(
        "blocked-client-access",
        f"blocked@{R}",
        "the sender connects from 127.0.0.2, which the receiver's check_client_access REJECTs",
        (Notice("blocked-client-access.eml", "bounce", "5.7.1", "blocked", False, "554"),),
    ),
    Case(
        "blocked-dnsbl",
        f"listed@{R}",
        f"the sender connects from {LISTED_CLIENT}, listed in the local DNSBL {DNSBL_ZONE} "
        "(reject_rbl_client)",
        (Notice("blocked-dnsbl.eml", "bounce", "5.7.1", "blocked", False, "554"),),
    ),
    Case(
        "rejected-sender",
        f"sender@{R}",
        f"the receiver's check_sender_access REJECTs the envelope sender {REJECTED_SENDER}",
        (Notice("rejected-sender.eml", "bounce", "5.7.1", "rejected", False, "554"),),
    ),
    Case(
        "policyviolation-header",
        f"twofrom@{R}",
        "the receiver's header_checks REJECT a From: header with two addresses (end of DATA)",
        (Notice("policyviolation-header.eml", "bounce", "5.7.1", "policyviolation", False, "550"),),
        authors=f"Acme Supplies <{FROM}>, Acme Billing <billing@acme.example>",
    ),
    Case(
        "norelaying",
        f"ap@{RELAY_DENIED_DOMAIN}",
        "the receiver is not the destination of the domain and does not trust the sender: "
        "reject_unauth_destination",
        (Notice("norelaying.eml", "bounce", "5.7.1", "norelaying", False, "554"),),
    ),
)


def build_message(case: Case) -> bytes:
    """The outbound email of a case: a plain invoice notice, fixed headers, optional filler."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = case.authors
    if "," in case.authors:
        message["Sender"] = FROM  # RFC 5322 s3.6.2: required with more than one author
    message["To"] = case.recipient
    message["Subject"] = case.subject
    message["Date"] = "Mon, 02 Mar 2026 09:00:00 +0000"
    message["Message-ID"] = case.message_id
    body = "Dear customer,\n\ninvoice INV-1001 (EUR 120.00) is due on 31 March 2026.\n"
    if case.filler_bytes:
        line = "Line item detail, repeated to make the message large enough for this case.\n"
        body += line * (case.filler_bytes // len(line) + 1)
    message.set_content(body)
    return message.as_bytes()


@dataclass
class Generated:
    """What a run wrote: the label rows, and the cases whose notices did not come back."""

    labels: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def label_for(case: Case, notice: Notice) -> dict[str, Any]:
    """The label row of one notice, in the shared corpus's format, from the case alone."""
    row = {
        "address": case.recipient,
        "status": notice.status,
        "status_kind": "explicit",
        "status_in_message": True,
        "replycode": notice.replycode,
        "reason": notice.reason,
        "hardbounce": notice.hard,
        "action": notice.action,
        "feedback_type": None,
        "dsn_final_recipient": case.recipient,
        "dsn_original_recipient": case.recipient,
        "dsn_status_field": notice.status,
        "dsn_action_field": notice.action,
    }
    return {
        "file": notice.file,
        "stratum": MTA,
        "category": notice.category,
        "is_bounce": True,
        "mta": MTA,
        "module_kind": "generated",
        "recipients": [row],
        "recipient_addresses": [case.recipient],
        "original_message_id": case.message_id,
        "original_message_id_source": "own(message/rfc822)",
        "original_message_id_alternatives": [],
        "provider_message_id": None,
        "has_rfc3464_dsn_part": True,
        "has_attached_original": True,
        "source": {"generator": "tests/bounce_evidence/generate.py", "case": case.name},
        "label_source": "by construction",
        "label_notes": [case.how],
        "split": "generated",
    }


def dsn_action(path: Path) -> str:
    """The per-recipient Action field of a notice (RFC 3464 s2.3.3), lowercased."""
    mail = email.parser.BytesParser(policy=email.policy.compat32).parse(path.open("rb"))
    for part in mail.walk():
        if part.get_content_type() == "message/delivery-status":
            groups = part.get_payload()
            if isinstance(groups, list) and len(groups) > 1 and isinstance(groups[1], Message):
                return str(groups[1].get("Action", "")).strip().lower()
    return ""


async def _send(sender: PrivatePostfix, cases: Sequence[Case]) -> None:
    transport = SMTPTransport(
        SMTPEndpoint(port=sender.port, timeout_seconds=10, local_hostname="app.acme.example")
    )
    try:
        for case in cases:
            result = await transport.send(
                build_message(case), sender=case.sender, recipients=[case.recipient]
            )
            if result.code is None or not 200 <= result.code < 300:
                raise RuntimeError(f"{case.name}: the sending Postfix refused it: {result}")
    finally:
        await transport.close()


def collect(
    sender: PrivatePostfix, cases: Sequence[Case], out_dir: Path, *, timeout: float = 30.0
) -> Generated:
    """Wait for each case's notices and copy them to ``out_dir`` under their labelled names."""
    done = Generated()
    for case in cases:
        prefix = f"{case.sender.split('@')[0]}@"
        found = sender.wait_for(sender.returns, prefix, count=len(case.notices), timeout=timeout)
        by_action = {dsn_action(path): path for path in found}
        for notice in case.notices:
            path = by_action.get(notice.action)
            if path is None:
                done.missing.append(f"{case.name}: no Action: {notice.action} notice")
                continue
            (out_dir / notice.file).write_bytes(path.read_bytes())
            done.labels.append(label_for(case, notice))
    return done


def generate(cases: Sequence[Case], out_dir: Path) -> Generated:
    """Start both instances, send every case, and write what comes back to ``out_dir``."""
    with ExitStack() as stack:
        dns = DNSResponder(dnsbl_records())
        stack.callback(dns.close)
        silent = SilentListener()
        stack.callback(silent.close)
        # Each instance needs the other's port (mail one way, returns the other): pick the
        # receiver's first, so the sender can be started with its route to it.
        receiver_port = free_port()
        sender = stack.enter_context(
            private_postfix(
                transports=sender_routes(receiver_port, silent.port),
                extra_master_cf=SENDER_MASTER_CF,
            )
        )
        write_resolv_conf(sender.root / "queue", dns.address)
        receiver = stack.enter_context(
            receiving_postfix(sender_port=sender.port, nameserver=dns.address, port=receiver_port)
        )
        asyncio.run(_send(sender, cases))
        try:
            return collect(sender, cases, out_dir)
        except PostfixError as exc:
            raise PostfixError(
                f"{exc}\n--- receiver's maillog ---\n{receiver.log_tail()}"
            ) from None


def write_labels(labels: list[dict[str, Any]], path: Path) -> None:
    """``labels.jsonl``: one row per notice, in file order, so a regeneration diffs cleanly."""
    rows = sorted(labels, key=lambda row: str(row["file"]))
    path.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def main(argv: Sequence[str]) -> int:
    """Regenerate the named cases (default: all) into this folder and rewrite labels.jsonl."""
    wanted = set(argv)
    unknown = wanted - {case.name for case in CASES}
    if unknown:
        sys.stderr.write(f"unknown case(s): {', '.join(sorted(unknown))}\n")
        return 2
    cases = [case for case in CASES if not wanted or case.name in wanted]
    result = generate(cases, HERE)
    label_path = HERE / "labels.jsonl"
    kept: list[dict[str, Any]] = []
    if wanted and label_path.exists():
        fresh = {row["file"] for row in result.labels}
        lines = label_path.read_text().splitlines()
        kept = [row for row in map(json.loads, lines) if row["file"] not in fresh]
    write_labels(kept + result.labels, label_path)
    for row in result.labels:
        sys.stdout.write(f"wrote {row['file']}\n")
    for miss in result.missing:
        sys.stderr.write(f"missing: {miss}\n")
    return 1 if result.missing else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
