"""SERVICE: store inbound mail, decode it, match it to its outbound email, suppress dead addresses.

The raw bytes are committed before anything is decoded, so a decoder crash loses nothing and
``reprocess`` can run an improved decoder over the same mail later.

Bounce authority: only a valid VERP token (mailer/outbound/verp.py) at an address the mail arrived
at
may act (suppress, mark bounced, hold or re-route), and only on the one recipient the token
was issued for. Our uid in the returned headers (``X-Dunmail-Message``, ``Message-ID``) or in
``In-Reply-To`` is visible in every email, so it only *threads* the mail, and only inside the
tenant whose address received it (:class:`Mailboxes`): the clerk sees an "unverified" entry
and may suppress the address by hand. A token from before per-recipient envelopes acts only
when its message had a single recipient.
"""

from __future__ import annotations

import hashlib
import logging
import mailbox
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bounce import Kind, Recipient, Report, parse
from bounce.authority import Mailboxes, arrival_of, match_report
from bounce.evidence import Decision, decide_suppression
from bounce.recovery import Enqueue, react_to_return
from bounce.threads import record_thread
from mailer.db import session_scope
from mailer.inbox_models import DeliveryEvent, InboundMail, InboundStatus
from mailer.outbound.models import Message, MessageRecipient, RecipientStatus
from mailer.outbound.suppression import (
    SoftBouncePolicy,
    SuppressionKind,
    soft_bounces_reached,
    suppress,
)

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What processing one inbound message did."""

    status: InboundStatus
    kind: str | None = None
    matched_by: str | None = None
    events: int = 0
    suppressed: list[str] = field(default_factory=list)
    rerouted_to: str | None = None  # the bounced email went to this contact instead
    paused: bool = False  # nobody left to send to: escalation waits for a fixed contact
    unverified: bool = False  # threaded by its headers only: it acted on nothing
    reviews: int = 0  # hard verdicts on weak evidence left for a person (bounce/evidence.py)


def store(
    session: Session,
    raw: bytes,
    *,
    source: str,
    now: datetime,
    recipients: Sequence[str] | None = None,
) -> tuple[InboundMail, bool]:
    """Keep the raw message (with its SMTP envelope ``recipients``, when it came by SMTP) and
    commit; returns the row and whether it is new.

    The same bytes twice (by SHA-256) are stored once: the second call returns the first row.
    """
    digest = hashlib.sha256(raw).hexdigest()
    existing = _by_sha(session, digest)
    if existing is not None:
        return existing, False
    envelope = None if recipients is None else [a.strip().lower() for a in recipients]
    row = InboundMail(
        received_at=now, source=source[:300], sha256=digest, raw=raw, recipients=envelope
    )
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


def process(
    session: Session,
    inbound: InboundMail,
    *,
    verp_key: bytes,
    now: datetime,
    mailboxes: Mailboxes | None = None,
    policy_for: Callable[[int], SoftBouncePolicy] | None = None,
    enqueue: Enqueue | None = None,
    emit: Callable[..., object] | None = None,
) -> Outcome:
    """Decode ``inbound``, match it, record its delivery events and suppressions, and (given
    ``enqueue``) let dunning react to a bounce or complaint (bounce/recovery.py).

    Only a VERP-proved match acts, and only on the recipients its tokens name; a match by
    headers threads the mail in the receiving tenant (``mailboxes``, bounce/authority.py) and
    the timeline shows it as unverified (bounce/threads.py).

    ``emit`` (``Webhooks.emit``) queues ``message.bounced`` / ``message.complained`` for each
    newly recorded recipient event and ``thread.replied`` for a reply or auto-reply the first
    time it is attached, in the caller's transaction.

    Idempotent: events are unique per (inbound, address) and suppressions per (tenant, address),
    so processing the same message again adds nothing; the reaction runs only the first time a
    report is attached to its email. The caller commits.
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
    arrival = arrival_of(inbound, mailboxes or Mailboxes(), kind=report.kind)
    found = match_report(session, report, inbound, arrival, verp_key=verp_key)
    message = found.message
    if message is None or message.id is None:
        inbound.status = InboundStatus.UNMATCHED
        inbound.error = found.why
        inbound.message_id = inbound.matched_by = None
        # Kept with the tenant that received it, so it is listed for that tenant only.
        inbound.tenant_id = found.tenant_id
        session.add(inbound)
        return Outcome(status=InboundStatus.UNMATCHED, kind=report.kind.value)
    inbound.status = InboundStatus.PROCESSED
    inbound.message_id = message.id
    inbound.tenant_id = message.tenant_id
    inbound.matched_by = found.matched_by
    session.add(inbound)
    session.flush()
    outcome = Outcome(
        status=InboundStatus.PROCESSED, kind=report.kind.value, matched_by=found.matched_by
    )
    first_time = attached != message.id
    thread = record_thread(session, message, kind=report.kind, new=first_time, now=now)
    reply = report.kind in (Kind.NOT_BOUNCE, Kind.AUTO_REPLY)
    if not reply and not found.authority:
        # Unverified: threaded for the clerk (an "unverified" entry with a one-click
        # suppress), but nothing recorded against a recipient, blocked, held or re-routed.
        outcome.unverified = True
        return outcome
    policy = policy_for(message.tenant_id) if policy_for else SoftBouncePolicy()
    rows = {
        r.address.lower(): r
        for r in session.exec(
            select(MessageRecipient).where(MessageRecipient.message_id == message.id)
        ).all()
    }
    # A reply acts on nobody, whoever it names; a bounce only on the recipients proved.
    may_act = set(rows) if reply else set(found.authority) & set(rows)
    for recipient in _recipients(report, {a: rows[a].address for a in may_act}):
        address = recipient.address.lower()
        if address not in may_act:
            # Not an address this token proves: record nothing against it, suppress nothing.
            continue
        # Suppress now, review or neither: the classifier's hard verdict alone never blocks.
        decision = decide_suppression(report.kind, recipient)
        added = _record_event(session, inbound, message, report.kind, recipient, decision, now)
        outcome.events += added
        if added and decision.review:
            outcome.reviews += 1
        if added and emit is not None and report.kind in _WEBHOOK_EVENTS:
            emit(
                session,
                tenant_id=message.tenant_id,
                event=_WEBHOOK_EVENTS[report.kind],
                data=_event_data(message, thread.id, recipient, decision),
                now=now,
            )
        if report.kind is Kind.BOUNCE:
            _mark_bounced(rows[address], recipient, now)
            session.add(rows[address])
        session.flush()
        if _suppress_for(session, message.tenant_id, report.kind, recipient, decision, policy, now):
            outcome.suppressed.append(rows[address].address)
    if emit is not None and first_time and reply:
        emit(
            session,
            tenant_id=message.tenant_id,
            event="thread.replied",
            data={
                "thread": thread.id,
                "message": message.uid,
                "kind": message.kind,
                "auto_reply": report.kind is Kind.AUTO_REPLY,
            },
            now=now,
        )
    if report.kind in (Kind.BOUNCE, Kind.COMPLAINT) and first_time and enqueue is not None:
        # One reaction for every kind of return: a complaint that blocks a customer's only
        # contact pauses chasing exactly as a hard bounce does (bounce/recovery.py).
        reaction = react_to_return(
            session,
            message,
            thread,
            kind=report.kind,
            suppressed=outcome.suppressed,
            enqueue=enqueue,
            now=now,
        )
        outcome.rerouted_to, outcome.paused = reaction.rerouted_to, reaction.paused
    return outcome


_WEBHOOK_EVENTS = {Kind.BOUNCE: "message.bounced", Kind.COMPLAINT: "message.complained"}


def _event_data(
    message: Message, thread_id: int | None, recipient: Recipient, decision: Decision
) -> dict[str, object]:
    """A bounce or complaint webhook's ``data``: the email, the address and the reason;
    ``hard`` only when the evidence suppressed the address, ``review`` when a person decides."""
    return {
        "message": message.uid,
        "kind": message.kind,
        "thread": thread_id,
        "address": recipient.address.lower(),
        "status": recipient.status,
        "reason": recipient.reason,
        "hard": decision.hard,
        "review": decision.review,
        "diagnostic": recipient.diagnostic[:300],
    }


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


def _suppress_for(
    session: Session,
    tenant_id: int,
    kind: Kind,
    recipient: Recipient,
    decision: Decision,
    policy: SoftBouncePolicy,
    now: datetime,
) -> bool:
    """Block the address if the report calls for it; returns whether it is newly blocked.

    Hard bounces on unambiguous evidence (bounce/evidence.py) and complaints block until
    unblocked. A soft bounce (a full mailbox, a server refusing for now, or a hard verdict on
    weak evidence, which also waits for a person's review) blocks only once it repeats
    ``policy.limit`` times within the window, and then for ``policy.period``; a delay notice
    is not a failure and blocks nothing.
    """
    status = f" {recipient.status}" if recipient.status else ""
    until = None
    if kind is Kind.COMPLAINT:
        block, reason = SuppressionKind.COMPLAINT, "complaint"
    elif kind is not Kind.BOUNCE:
        return False
    elif decision.hard:
        block, reason = SuppressionKind.HARD, f"hard bounce{status}: {recipient.reason}"
    else:
        count = soft_bounces_reached(
            session, tenant_id=tenant_id, address=recipient.address, policy=policy, now=now
        )
        if count is None:
            return False
        block, until = SuppressionKind.SOFT, now + policy.period
        reason = f"{count} soft bounces in {policy.window.days} days{status}: {recipient.reason}"
        if decision.review:
            reason += " (a hard verdict on weak evidence, under review)"
    return suppress(
        session,
        tenant_id=tenant_id,
        address=recipient.address,
        kind=block,
        reason=reason,
        now=now,
        until=until,
    )


def _mark_bounced(row: MessageRecipient, recipient: Recipient, now: datetime) -> None:
    """The server accepted it, then the mail came back: for the outbox, a final failure."""
    status = f" {recipient.status}" if recipient.status else ""
    row.status = RecipientStatus.BOUNCED
    row.response = f"bounced{status}: {recipient.reason}: {recipient.diagnostic}"[:1000]
    row.updated_at = now


def _record_event(
    session: Session,
    inbound: InboundMail,
    message: Message,
    kind: Kind,
    recipient: Recipient,
    decision: Decision,
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
            hard=decision.hard,
            diagnostic=recipient.diagnostic[:1000],
            created_at=now,
            review="open" if decision.review else None,
            evidence=decision.evidence.as_dict(),
        )
    )
    return 1


def reprocess(
    engine: Engine,
    *,
    verp_key: bytes,
    now: datetime,
    statuses: Iterable[InboundStatus] | None = None,
    mailboxes: Mailboxes | None = None,
    policy_for: Callable[[int], SoftBouncePolicy] | None = None,
    enqueue: Enqueue | None = None,
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
                outcomes.append(
                    process(
                        session,
                        inbound,
                        verp_key=verp_key,
                        now=now,
                        mailboxes=mailboxes,
                        policy_for=policy_for,
                        enqueue=enqueue,
                    )
                )
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


def count_messages(paths: Iterable[Path]) -> int | None:
    """How many messages :func:`read_paths` will yield (for a progress bar), or None when
    that would mean reading an mbox twice."""
    total = 0
    for path in paths:
        if path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir():
            total += sum(1 for sub in ("cur", "new") for p in (path / sub).iterdir() if p.is_file())
        elif path.is_dir():
            total += sum(1 for p in path.iterdir() if p.is_file())
        elif _is_mbox(path):
            return None
        else:
            total += 1
    return total


def _is_mbox(path: Path) -> bool:
    # An mbox starts with a "From " separator line (RFC 4155); a single message never does.
    with path.open("rb") as handle:
        return handle.read(5) == b"From "
