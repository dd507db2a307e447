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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bounce import Kind, parse
from bounce.authority import Mailboxes, arrival_of, match_report
from bounce.delivery_events import recipients_of, record_recipient
from bounce.recovery import Enqueue, react_to_return
from bounce.threads import record_thread
from mailer.db import session_scope
from mailer.inbox_models import InboundMail, InboundStatus
from mailer.outbound.models import MessageRecipient
from mailer.outbound.suppression import SoftBouncePolicy

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
    the timeline shows it as unverified (bounce/timeline.py). What is recorded per proved
    recipient is bounce/delivery_events.py's.

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
    for recipient in recipients_of(report, {a: rows[a].address for a in may_act}):
        address = recipient.address.lower()
        if address not in may_act:
            # Not an address this token proves: record nothing against it, suppress nothing.
            continue
        recorded = record_recipient(
            session,
            inbound,
            message,
            rows[address],
            recipient,
            kind=report.kind,
            policy=policy,
            thread_id=thread.id,
            emit=emit,
            now=now,
        )
        outcome.events += int(recorded.event)
        outcome.reviews += int(recorded.review)
        if recorded.suppressed:
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
