"""SERVICE: store inbound mail, decode it, match it to its outbound email, suppress dead addresses.

The raw bytes are committed before anything is decoded, so a decoder crash loses nothing and
``reprocess`` can run an improved decoder over the same mail later. Only a verified match (an
HMAC-checked VERP token, else our own uid in the returned headers) may suppress an address, and
only an address the matched email was actually sent to: a forged bounce suppresses nothing.
"""

from __future__ import annotations

import hashlib
import logging
import mailbox
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bounce import Kind, Recipient, Report, parse
from bounce.threads import record_thread
from mailer.db import session_scope
from mailer.errors import LinkInvalid
from mailer.models import (
    DeliveryEvent,
    InboundMail,
    InboundStatus,
    Message,
    MessageRecipient,
    Suppression,
)
from mailer.verp import verify_verp

log = logging.getLogger(__name__)

_UID = re.compile(r"^[0-9a-f]{8,32}$")
# A Message-ID of ours is <uid@domain> (mailer/compose.py::message_id).
_OUR_MESSAGE_ID = re.compile(r"^<?(?P<uid>[0-9a-f]{8,32})@[^>\s]+>?$", re.IGNORECASE)


@dataclass
class Outcome:
    """What processing one inbound message did."""

    status: InboundStatus
    kind: str | None = None
    matched_by: str | None = None
    events: int = 0
    suppressed: list[str] = field(default_factory=list)


def store(session: Session, raw: bytes, *, source: str, now: datetime) -> tuple[InboundMail, bool]:
    """Keep the raw message and commit; returns the row and whether it is new.

    The same bytes twice (by SHA-256) are stored once: the second call returns the first row.
    """
    digest = hashlib.sha256(raw).hexdigest()
    existing = _by_sha(session, digest)
    if existing is not None:
        return existing, False
    row = InboundMail(received_at=now, source=source[:300], sha256=digest, raw=raw)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # another process stored the same bytes between our read and write
        session.rollback()
        existing = _by_sha(session, digest)
        if existing is None:
            raise
        return existing, False
    return row, True


def _by_sha(session: Session, digest: str) -> InboundMail | None:
    return session.exec(select(InboundMail).where(InboundMail.sha256 == digest)).first()


def process(session: Session, inbound: InboundMail, *, verp_key: bytes, now: datetime) -> Outcome:
    """Decode ``inbound``, match it, record its delivery events and suppressions.

    Idempotent: events are unique per (inbound, address) and suppressions per (tenant, address),
    so processing the same message again adds nothing. The caller commits.
    """
    # Already attached to this message by an earlier run: a reprocess must not reopen its thread.
    attached = inbound.message_id if inbound.status is InboundStatus.PROCESSED else None
    try:
        report = parse(inbound.raw)
    except Exception as exc:  # parse promises not to raise; if it does, keep the mail for later
        log.exception("bounce: decoder failed on inbound %s", inbound.id)
        inbound.status = InboundStatus.ERROR
        inbound.error = f"{type(exc).__name__}: {exc}"[:1000]
        inbound.processed_at = now
        session.add(inbound)
        return Outcome(status=InboundStatus.ERROR)
    inbound.kind = report.kind.value
    inbound.error = None
    inbound.processed_at = now
    message, matched_by, why = _match(session, report, verp_key=verp_key)
    if message is None or message.id is None:
        inbound.status = InboundStatus.UNMATCHED
        inbound.error = why
        inbound.message_id = inbound.matched_by = inbound.tenant_id = None
        session.add(inbound)
        return Outcome(status=InboundStatus.UNMATCHED, kind=report.kind.value)
    inbound.status = InboundStatus.PROCESSED
    inbound.message_id = message.id
    inbound.tenant_id = message.tenant_id
    inbound.matched_by = matched_by
    session.add(inbound)
    session.flush()
    outcome = Outcome(status=InboundStatus.PROCESSED, kind=report.kind.value, matched_by=matched_by)
    record_thread(session, message, kind=report.kind, new=attached != message.id, now=now)
    sent_to = {
        r.address.lower(): r.address
        for r in session.exec(
            select(MessageRecipient).where(MessageRecipient.message_id == message.id)
        ).all()
    }
    for recipient in _recipients(report, sent_to):
        address = recipient.address.lower()
        if address not in sent_to:
            # Not an address this email went to: record nothing against it, suppress nothing.
            continue
        outcome.events += _record_event(session, inbound, message, report.kind, recipient, now)
        reason = _suppression_reason(report.kind, recipient)
        if reason and _suppress(session, message.tenant_id, sent_to[address], reason, now):
            outcome.suppressed.append(sent_to[address])
    return outcome


def _match(
    session: Session, report: Report, *, verp_key: bytes
) -> tuple[Message | None, str | None, str | None]:
    """The outbound message a report is about, how it was found, and why not when it wasn't.

    RFC 3464 s2.3.1 leaves the original recipient optional, so the envelope (VERP) is the most
    reliable handle; a VERP token that fails its HMAC is a forgery and ends the search.
    """
    if report.kind is Kind.NOT_BOUNCE:
        return None, None, "not a bounce or notice"
    if report.verp:
        try:
            uid = verify_verp(report.verp, key=verp_key)
        except LinkInvalid as exc:
            return None, None, f"VERP {report.verp}: {exc}"
        found = _by_uid(session, uid)
        if found is not None:
            return found, "verp", None
    if report.dunmail_id and _UID.match(report.dunmail_id.strip().lower()):
        found = _by_uid(session, report.dunmail_id.strip().lower())
        if found is not None:
            return found, "header", None
    if report.original_message_id:
        ours = _OUR_MESSAGE_ID.match(report.original_message_id.strip())
        if ours:
            found = _by_uid(session, ours["uid"].lower())
            if found is not None:
                return found, "message-id", None
    return None, None, "no outbound message of ours matches"


def _by_uid(session: Session, uid: str) -> Message | None:
    return session.exec(select(Message).where(Message.uid == uid)).first()


def _recipients(report: Report, sent_to: dict[str, str]) -> list[Recipient]:
    """The report's recipients; an ARF complaint (RFC 5965) often redacts its recipient, so a
    complaint about a single-recipient email is taken to be about that recipient."""
    if report.recipients or report.kind is not Kind.COMPLAINT or len(sent_to) != 1:
        return list(report.recipients)
    (address,) = sent_to.values()
    return [
        Recipient(
            address=address,
            status=None,
            reply_code=None,
            reason="feedback",
            hard=False,
            action=None,
            diagnostic=report.feedback_type or "",
        )
    ]


def _suppression_reason(kind: Kind, recipient: Recipient) -> str | None:
    """Why the address must not be mailed again, or None: only hard bounces and complaints."""
    if kind is Kind.COMPLAINT:
        return "complaint"
    if kind is Kind.BOUNCE and recipient.hard:
        status = f" {recipient.status}" if recipient.status else ""
        return f"hard bounce{status}: {recipient.reason}"[:300]
    return None


def _record_event(
    session: Session,
    inbound: InboundMail,
    message: Message,
    kind: Kind,
    recipient: Recipient,
    now: datetime,
) -> int:
    existing = session.exec(
        select(DeliveryEvent).where(
            DeliveryEvent.inbound_id == inbound.id,
            DeliveryEvent.address == recipient.address.lower(),
        )
    ).first()
    if existing is not None:
        return 0
    session.add(
        DeliveryEvent(
            inbound_id=inbound.id or 0,
            message_id=message.id or 0,
            address=recipient.address.lower()[:320],
            kind=kind.value,
            status=(recipient.status or None) and recipient.status[:20],
            reply_code=recipient.reply_code,
            reason=recipient.reason[:63],
            hard=recipient.hard,
            diagnostic=recipient.diagnostic[:1000],
            created_at=now,
        )
    )
    return 1


def _suppress(session: Session, tenant_id: int, address: str, reason: str, now: datetime) -> bool:
    existing = session.exec(
        select(Suppression).where(
            Suppression.tenant_id == tenant_id, Suppression.address == address
        )
    ).first()
    if existing is not None:
        return False
    session.add(Suppression(tenant_id=tenant_id, address=address, reason=reason, created_at=now))
    session.flush()
    log.info("bounce: suppressed an address of tenant %s (%s)", tenant_id, reason)
    return True


def reprocess(
    engine: Engine,
    *,
    verp_key: bytes,
    now: datetime,
    statuses: Iterable[InboundStatus] | None = None,
) -> list[Outcome]:
    """Run the decoder again over stored mail (all of it, or the rows in ``statuses``).

    One transaction per message, so one bad message cannot roll back the others.
    """
    with Session(engine) as session:
        query = select(InboundMail.id).order_by(col(InboundMail.id))
        if statuses is not None:
            query = query.where(col(InboundMail.status).in_(list(statuses)))
        ids = list(session.exec(query).all())
    outcomes = []
    for inbound_id in ids:
        with session_scope(engine) as session:
            inbound = session.get(InboundMail, inbound_id)
            if inbound is not None:
                outcomes.append(process(session, inbound, verp_key=verp_key, now=now))
    return outcomes


def read_paths(paths: Iterable[Path]) -> Iterator[tuple[str, bytes]]:
    """(source, raw bytes) for every message under ``paths``: a Maildir directory (its ``cur/``
    and ``new/``), a directory of files, an mbox file, or a single message file."""
    for path in paths:
        if path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir():
            maildir = mailbox.Maildir(path, factory=None, create=False)
            for key in sorted(maildir.keys()):
                with maildir.get_file(key) as handle:
                    yield f"maildir:{path.name}/{key}", handle.read()
        elif path.is_dir():
            for child in sorted(p for p in path.iterdir() if p.is_file()):
                yield f"file:{child.name}", child.read_bytes()
        elif _is_mbox(path):
            box = mailbox.mbox(path, factory=None, create=False)
            for number, key in enumerate(box.keys()):
                yield f"mbox:{path.name}#{number}", box.get_bytes(key)
        else:
            yield f"file:{path.name}", path.read_bytes()


def _is_mbox(path: Path) -> bool:
    # An mbox starts with a "From " separator line (RFC 4155); a single message never does.
    with path.open("rb") as handle:
        return handle.read(5) == b"From "
