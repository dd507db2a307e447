"""SERVICE: a thread's timeline, derived on read from the ledger rows about its document.

Every email queued or sent, each delivery attempt, the bounces, complaints and replies matched
to them, the links the customer opened and the thread's notes, oldest first. Every text field
may come from mail or a stranger's browser: the inbox shows it as text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from bounce.authority import VERIFIED
from bounce.decode import parse
from bounce.evidence import Evidence
from bounce.reply import REPLY_KINDS, from_and_subject, reply_text
from bounce.report import Kind
from bounce.review import REVIEW_OPEN
from bounce.threads import thread_messages
from mailer.inbox_models import DeliveryEvent, InboundMail, InboundStatus, Thread, ThreadNote
from mailer.outbound.models import AttemptOutcome, DeliveryAttempt, LinkEvent, Message


@dataclass(frozen=True)
class Entry:
    """One line of a thread's timeline. Every text field may come from mail: show it as text."""

    at: datetime
    # queued, sent, attempt, bounce, delayed, complaint, delivered, reply, click, note,
    # unverified: a report matched by its headers only, which acted on nothing, and review /
    # reviewed: a hard verdict on weak evidence, open for a person / suppressed or dismissed
    type: str
    summary: str
    detail: str = ""
    address: str | None = None
    status: str | None = None
    reason: str | None = None
    author: str | None = None
    email_kind: str | None = None  # the email's Kind, for the clerk's words (dunmail/labels.py)
    code: int | None = None  # an attempt's SMTP reply code
    to: tuple[str, ...] = ()  # the addresses a send reached

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the time as ISO 8601."""
        return {**asdict(self), "at": self.at.isoformat()}


def document_label(message: Message) -> str:
    invoice = message.context.get("invoice")
    if isinstance(invoice, dict) and invoice.get("number"):
        return str(invoice["number"])
    return message.kind


def build_timeline(session: Session, thread: Thread) -> list[Entry]:
    """Everything that happened to the thread's document, oldest first."""
    messages = thread_messages(session, thread)
    by_id = {m.id: m for m in messages}
    ids = list(by_id)
    # (entry, tie-break): at one instant, the send comes before what came back about it, and
    # inbound mail keeps its arrival order.
    entries: list[tuple[Entry, tuple[int, int]]] = []
    attempts = session.exec(
        select(DeliveryAttempt).where(col(DeliveryAttempt.message_id).in_(ids))
    ).all()
    attempted = {a.message_id for a in attempts}
    for m in messages:
        if m.id not in attempted:
            queued = Entry(
                at=m.created_at,
                type="queued",
                summary=f"{document_label(m)} {m.kind} {m.status.value}",
                detail=m.skip_reason or m.last_error or "",
                status=m.status.value,
                email_kind=m.kind,
            )
            entries.append((queued, (0, m.id or 0)))
    for a in attempts:
        entries.append((_attempt_entry(a, by_id[a.message_id]), (1, a.id or 0)))
    inbound = {
        i.id: i
        for i in session.exec(
            select(InboundMail).where(
                col(InboundMail.message_id).in_(ids),
                InboundMail.status == InboundStatus.PROCESSED,
            )
        ).all()
    }
    events = list(
        session.exec(select(DeliveryEvent).where(col(DeliveryEvent.message_id).in_(ids))).all()
    )
    acted = {e.inbound_id for e in events}
    for i in inbound.values():
        if i.message_id is None:
            continue
        if i.kind in REPLY_KINDS:
            entries.append((_reply_entry(i, by_id[i.message_id]), (2, i.id or 0)))
        elif i.matched_by != VERIFIED or i.id not in acted:
            # Matched by headers only, or a valid token whose report names nobody it proves
            # (a DSN to one recipient's return path about another): it acted on nothing.
            for entry in _unverified_entries(i, by_id[i.message_id]):
                entries.append((entry, (2, i.id or 0)))
    for e in events:
        source = inbound.get(e.inbound_id)
        if source is None or source.kind in REPLY_KINDS:
            continue  # a reply is one entry; a report no longer matched is not shown
        entries.append((_event_entry(e, by_id[e.message_id]), (2, e.inbound_id)))
        if e.review:
            entries.append((_review_entry(e, by_id[e.message_id]), (2, e.inbound_id)))
    for c in session.exec(select(LinkEvent).where(col(LinkEvent.message_id).in_(ids))):
        entries.append((_click_entry(c, by_id[c.message_id]), (2, c.id or 0)))
    for n in session.exec(select(ThreadNote).where(ThreadNote.thread_id == thread.id)):
        note = Entry(
            at=n.created_at,
            type="note",
            summary=f"note by {n.author}: {n.text}",
            detail=n.text,
            author=n.author,
        )
        entries.append((note, (3, n.id or 0)))
    return [e for e, _ in sorted(entries, key=lambda pair: (pair[0].at, pair[1]))]


def unverified_addresses(session: Session, thread: Thread) -> set[str]:
    """The addresses the thread's unverified reports name (what a clerk may suppress from it)."""
    return {
        e.address for e in build_timeline(session, thread) if e.type == "unverified" and e.address
    }


def _unverified_entries(inbound: InboundMail, message: Message) -> list[Entry]:
    """A report that names this email only in headers anyone can copy (no VERP token proved
    it): one entry per address it names, for the clerk to judge; it suppressed nothing."""
    report = parse(inbound.raw)
    label = document_label(message)
    what = f"unverified {report.kind.value.replace('_', ' ')}"
    how = (
        "its VERP token proves another recipient: nothing was suppressed or paused"
        if inbound.matched_by == VERIFIED
        else f"matched by {inbound.matched_by or '?'} only: nothing was suppressed or paused"
    )
    if not report.recipients:
        return [
            Entry(at=inbound.received_at, type="unverified", summary=f"{label}: {what}", detail=how)
        ]
    entries = []
    for r in report.recipients:
        status = f" ({r.status})" if r.status else ""
        entries.append(
            Entry(
                at=inbound.received_at,
                type="unverified",
                summary=f"{label} to {r.address}: {what}: {r.reason}{status}",
                detail=f"{how}. {r.diagnostic}"[:1000],
                address=r.address.lower(),
                status=r.status,
                reason=r.reason,
            )
        )
    return entries


def _review_entry(event: DeliveryEvent, message: Message) -> Entry:
    """The review task beside a bounce whose hard verdict rested on weak evidence
    (bounce/evidence.py): counted as soft, the address left unsuppressed until a person
    suppresses it or dismisses the task. The evidence is remote text: show it as text."""
    label = document_label(message)
    status = f" ({event.status})" if event.status else ""
    what = f"{label} to {event.address}: hard bounce{status}: {event.reason}"
    if event.review == REVIEW_OPEN:
        summary = f"{what}: review: suppress or dismiss (counted as soft until then)"
        kind = "review"
    else:
        summary = f"{what}: review closed: {event.review}"
        kind = "reviewed"
    return Entry(
        at=event.created_at,
        type=kind,
        summary=summary,
        detail=_evidence_text(event)[:1000],
        address=event.address,
        status=event.status,
        reason=event.reason,
        email_kind=message.kind,
    )


def _evidence_text(event: DeliveryEvent) -> str:
    """What decided the review, as recorded when it was opened (or the event's own fields)."""
    try:
        return Evidence(**(event.evidence or {})).describe()
    except TypeError:  # recorded by another version of the decision: its fields as stored
        return f"status {event.status or 'none'}; diagnostic: {event.diagnostic}"


def _attempt_entry(attempt: DeliveryAttempt, message: Message) -> Entry:
    label = document_label(message)
    accepted = [r["address"] for r in attempt.recipients if r.get("status") == "accepted"]
    code = f" {attempt.code}" if attempt.code else ""
    if attempt.outcome in (AttemptOutcome.ACCEPTED, AttemptOutcome.PARTIAL):
        summary = f"{label} {message.kind} sent to {', '.join(accepted) or '-'}"
        if attempt.outcome is AttemptOutcome.PARTIAL:
            refused = [r["address"] for r in attempt.recipients if r.get("status") != "accepted"]
            summary += f" (not to {', '.join(refused)})"
        return Entry(
            at=attempt.finished_at,
            type="sent",
            summary=summary,
            detail=f"attempt {attempt.number} via {attempt.endpoint}:{code} "
            f"{attempt.response or ''}".rstrip(),
            status=attempt.outcome.value,
            email_kind=message.kind,
            code=attempt.code,
            to=tuple(accepted),
        )
    return Entry(
        at=attempt.finished_at,
        type="attempt",
        summary=f"{label} {message.kind} attempt {attempt.number} {attempt.outcome.value}{code}",
        detail=attempt.response or "",
        status=attempt.outcome.value,
        email_kind=message.kind,
        code=attempt.code,
    )


_VERBS = {"bounce": "bounced", "delayed": "delayed", "delivered": "delivered"}


def _event_entry(event: DeliveryEvent, message: Message) -> Entry:
    label = document_label(message)
    status = f" ({event.status})" if event.status else ""
    if event.kind == Kind.COMPLAINT.value:
        summary = f"{label} to {event.address}: complaint ({event.reason})"
    else:
        verb = _VERBS.get(event.kind, event.kind)
        summary = f"{label} to {event.address} {verb}: {event.reason}{status}"
    return Entry(
        at=event.created_at,
        type=event.kind,
        summary=summary,
        detail=event.diagnostic,
        address=event.address,
        status=event.status,
        reason=event.reason,
        email_kind=message.kind,
    )


# What a customer did with a link from the email (dunmail/web/links.py): (purpose, action).
_CLICKS = {
    ("view", "opened"): "viewed",
    ("pay", "redirected"): "Pay clicked",
    ("update_payment", "redirected"): "Update payment clicked",
    ("manage", "redirected"): "Manage clicked",
    ("download", "downloaded"): "PDF downloaded",
    ("view", "downloaded"): "PDF downloaded",
}


def _click_entry(event: LinkEvent, message: Message) -> Entry:
    """A link opened from the email; the user agent is text from a stranger's browser."""
    if event.action == "refreshed":
        what = "fresh link requested"
    elif event.action == "refused":
        what = f"expired, revoked or unusable {event.purpose} link opened"
    else:
        what = _CLICKS.get((event.purpose, event.action), f"{event.purpose} {event.action}")
    return Entry(
        at=event.at,
        type="click",
        summary=f"{document_label(message)}: {what}",
        detail=event.user_agent,
        status=event.action,
    )


def _reply_entry(inbound: InboundMail, message: Message) -> Entry:
    sender, subject = from_and_subject(inbound.raw)
    what = "auto-reply" if inbound.kind == Kind.AUTO_REPLY.value else "reply"
    return Entry(
        at=inbound.received_at,
        type="reply",
        summary=f"{document_label(message)}: {what} from {sender or '?'}: {subject}",
        detail=reply_text(inbound.raw),
        address=sender or None,
    )
