"""SERVICE: the AR inbox, one thread per customer document, with a timeline derived on read.

A thread stores only its own state (status, assignee, notes). What happened (the emails sent,
each delivery attempt, the bounces, complaints and replies) is read from the ledger rows each
time, so the inbox can never disagree with the outbox or the inbound store.
"""

from __future__ import annotations

import email.errors
from dataclasses import asdict, dataclass
from datetime import datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from typing import Any

import sqlalchemy as sa
from inscriptis import get_text
from sqlmodel import Session, col, select

from bounce.authority import VERIFIED
from bounce.decode import parse
from bounce.evidence import Evidence
from bounce.report import Kind
from mailer.errors import NotFoundError
from mailer.inbox_models import (
    DeliveryEvent,
    InboundMail,
    InboundStatus,
    Thread,
    ThreadNote,
    ThreadStatus,
)
from mailer.ledger.models import Customer, Invoice
from mailer.outbound.models import AttemptOutcome, DeliveryAttempt, LinkEvent, Message

# Inbound kinds that are a person's (or their autoresponder's) answer rather than a report
# about delivery: shown as one "reply" entry each.
REPLY_KINDS = (Kind.AUTO_REPLY.value, Kind.NOT_BOUNCE.value)
# What a thread must see again even after it was resolved (the issue's "a bounce or reply
# reopens a resolved thread"); a delay notice or a delivery report does not.
REOPENING_KINDS = (Kind.BOUNCE, Kind.COMPLAINT, Kind.AUTO_REPLY, Kind.NOT_BOUNCE)


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

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the time as ISO 8601."""
        return {**asdict(self), "at": self.at.isoformat()}


def document_key(message: Message) -> str:
    """The document a message is about: its invoice, else its customer, else itself."""
    if message.invoice_id is not None:
        return f"invoice:{message.invoice_id}"
    if message.customer_id is not None:
        return f"customer:{message.customer_id}"
    return f"message:{message.id}"


def record_thread(
    session: Session, message: Message, *, kind: Kind, new: bool, now: datetime
) -> Thread:
    """Attach a matched inbound report to its document's thread, creating the thread.

    ``new`` is False when the same inbound message was already attached (a reprocess run):
    then a thread resolved since is left resolved. The caller commits.
    """
    thread, created = _thread_of(session, message, now=now, status=ThreadStatus.OPEN)
    if new and not created:
        thread.last_event_at = now
        if kind in REOPENING_KINDS and thread.status is ThreadStatus.RESOLVED:
            thread.status = ThreadStatus.OPEN
            thread.updated_at = now
    session.add(thread)
    session.flush()
    return thread


def reopen_thread(session: Session, message: Message, *, now: datetime) -> Thread:
    """The thread of ``message``'s document, created or reopened, for news about it that
    came from elsewhere (its customer's only contact was blocked on another email's
    return): like :func:`record_thread` for a new report. The caller commits."""
    thread, created = _thread_of(session, message, now=now, status=ThreadStatus.OPEN)
    if not created:
        thread.status = ThreadStatus.OPEN
        thread.last_event_at = max(thread.last_event_at, now)
        thread.updated_at = now
    session.add(thread)
    session.flush()
    return thread


def note_activity(session: Session, message: Message, *, now: datetime) -> Thread:
    """The thread of ``message``'s document, for a customer's activity that needs no answer (a
    view or a click on Pay): created resolved when there is none, never reopened, so the click
    is on the document's timeline without putting work in anyone's inbox. The caller commits."""
    thread, created = _thread_of(session, message, now=now, status=ThreadStatus.RESOLVED)
    if not created:
        thread.last_event_at = max(thread.last_event_at, now)
    session.add(thread)
    session.flush()
    return thread


def _thread_of(
    session: Session, message: Message, *, now: datetime, status: ThreadStatus
) -> tuple[Thread, bool]:
    """The thread of ``message``'s document, or a new one in ``status``; and whether it is new."""
    key = document_key(message)
    thread = session.exec(
        select(Thread).where(Thread.tenant_id == message.tenant_id, Thread.document == key)
    ).first()
    if thread is not None:
        return thread, False
    thread = Thread(
        tenant_id=message.tenant_id,
        customer_id=message.customer_id,
        document=key,
        status=status,
        created_at=now,
        updated_at=now,
        last_event_at=now,
    )
    return thread, True


def fetch_thread(session: Session, thread_id: int, *, tenant_id: int) -> Thread:
    """The tenant's thread ``thread_id``; another tenant's thread does not exist for it."""
    thread = session.get(Thread, thread_id)
    if thread is None or thread.tenant_id != tenant_id:
        raise NotFoundError(f"no thread {thread_id}")
    return thread


# The inbox's narrower views: the threads with a bounce or complaint, with a person's reply,
# waiting for someone to fix the customer's contact, or with a bounce review open.
THREAD_FILTERS = ("bounced", "replied", "fix_contact", "review")
REVIEW_OPEN = "open"
_NOT_NEWS = ("note", "review", "reviewed")
REVIEW_CLOSED = ("suppressed", "dismissed")


def list_threads(
    session: Session,
    *,
    tenant_id: int,
    status: ThreadStatus | None,
    only: str | None = None,
    limit: int | None = None,
    before: str | None = None,
) -> list[dict[str, Any]]:
    """The tenant's threads, newest activity first, each with its last event's summary.

    ``only`` narrows to one of ``THREAD_FILTERS``, in SQL. ``limit`` and ``before`` page
    through: each row carries its ``cursor``; pass the last one shown as ``before`` for the
    next page. Only the threads of the page have their timeline built, so a page costs the
    same however many threads the tenant has. A malformed cursor is a ValueError.
    """
    query = select(Thread).where(Thread.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Thread.status == status)
    if only is not None:
        query = query.where(_only(only))
    if before is not None:
        at, thread_id = parse_cursor(before)
        query = query.where(
            sa.or_(
                col(Thread.last_event_at) < at,
                sa.and_(col(Thread.last_event_at) == at, col(Thread.id) < thread_id),
            )
        )
    query = query.order_by(col(Thread.last_event_at).desc(), col(Thread.id).desc())
    if limit is not None:
        query = query.limit(limit)
    rows = []
    for thread in session.exec(query).all():
        timeline = build_timeline(session, thread)
        # A review is a task on the bounce beside it (shown by ``reviews``), not news of its own.
        last = next((e for e in reversed(timeline) if e.type not in _NOT_NEWS), None)
        rows.append(
            {
                **_thread_fields(session, thread),
                "last_event": last.summary if last else "",
                "last_event_at": (last.at if last else thread.last_event_at).isoformat(),
                "cursor": f"{thread.last_event_at.isoformat()}~{thread.id}",
            }
        )
    return rows


def parse_cursor(cursor: str) -> tuple[datetime, int]:
    """A row's ``cursor`` back into (last_event_at, id); ValueError for anything else."""
    at, sep, raw_id = cursor.rpartition("~")
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or not raw_id.isdigit() or len(raw_id) > 18:
        raise ValueError(f"not a thread cursor: {cursor[:80]!r}")
    return when, int(raw_id)


def _only(name: str) -> sa.ColumnElement[bool]:
    """The SQL condition of an inbox filter; the same rows the timeline would show."""
    if name == "fix_contact":
        return col(Thread.task) == "fix_contact"
    if name not in THREAD_FILTERS:
        raise ValueError(f"unknown thread filter {name!r}: one of {', '.join(THREAD_FILTERS)}")
    about = sa.and_(
        col(Message.tenant_id) == col(Thread.tenant_id), _document_sql() == col(Thread.document)
    )
    if name == "review":
        return sa.exists(
            sa.select(1)
            .select_from(DeliveryEvent)
            .join(Message, col(DeliveryEvent.message_id) == col(Message.id))
            .where(about, col(DeliveryEvent.review) == REVIEW_OPEN)
        )
    processed = col(InboundMail.status) == InboundStatus.PROCESSED
    if name == "replied":
        return sa.exists(
            sa.select(1)
            .select_from(InboundMail)
            .join(Message, col(InboundMail.message_id) == col(Message.id))
            .where(about, processed, col(InboundMail.kind).in_(REPLY_KINDS))
        )
    return sa.exists(
        sa.select(1)
        .select_from(DeliveryEvent)
        .join(Message, col(DeliveryEvent.message_id) == col(Message.id))
        .join(InboundMail, col(DeliveryEvent.inbound_id) == col(InboundMail.id))
        .where(
            about,
            processed,
            col(InboundMail.kind).not_in(REPLY_KINDS),
            col(DeliveryEvent.kind).in_((Kind.BOUNCE.value, Kind.COMPLAINT.value)),
        )
    )


def _document_sql() -> sa.ColumnElement[str]:
    """``document_key`` in SQL: the key of the thread a message belongs to."""
    return sa.case(
        (
            col(Message.invoice_id).is_not(None),
            sa.literal("invoice:") + sa.cast(col(Message.invoice_id), sa.String),
        ),
        (
            col(Message.customer_id).is_not(None),
            sa.literal("customer:") + sa.cast(col(Message.customer_id), sa.String),
        ),
        else_=sa.literal("message:") + sa.cast(col(Message.id), sa.String),
    )


def show_thread(session: Session, thread: Thread) -> dict[str, Any]:
    """A thread's fields and its ordered timeline."""
    return {
        **_thread_fields(session, thread),
        "timeline": [e.as_dict() for e in build_timeline(session, thread)],
    }


def _thread_fields(session: Session, thread: Thread) -> dict[str, Any]:
    customer = session.get(Customer, thread.customer_id) if thread.customer_id else None
    messages = thread_messages(session, thread)
    return {
        "id": thread.id,
        "customer": customer.external_id if customer else None,
        "customer_name": customer.name if customer else None,
        "document": _thread_label(session, thread, messages),
        "key": thread.document,
        "status": thread.status.value,
        "assignee": thread.assignee,
        "task": thread.task,
        "reviews": len(open_reviews(session, thread, messages=messages)),
        "updated_at": thread.updated_at.isoformat(),
    }


def thread_messages(session: Session, thread: Thread) -> list[Message]:
    """The outbound emails about the thread's document, oldest first."""
    kind, _, raw_id = thread.document.partition(":")
    query = select(Message).where(Message.tenant_id == thread.tenant_id)
    if kind == "invoice":
        query = query.where(Message.invoice_id == int(raw_id))
    elif kind == "customer":
        query = query.where(Message.customer_id == int(raw_id), col(Message.invoice_id).is_(None))
    else:
        query = query.where(Message.id == int(raw_id))
    return list(session.exec(query.order_by(col(Message.created_at), col(Message.id))).all())


def _thread_label(session: Session, thread: Thread, messages: list[Message]) -> str:
    """What the clerk knows the thread by: an invoice thread is its invoice's number even when
    its latest email is a receipt or a thank-you about it, whose context names no invoice."""
    kind, _, raw_id = thread.document.partition(":")
    if kind == "invoice":
        invoice = session.get(Invoice, int(raw_id))
        if invoice is not None:
            return invoice.number
    return _document_label(messages[-1]) if messages else thread.document


def _document_label(message: Message) -> str:
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
                summary=f"{_document_label(m)} {m.kind} {m.status.value}",
                detail=m.skip_reason or m.last_error or "",
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


def _unverified_entries(inbound: InboundMail, message: Message) -> list[Entry]:
    """A report that names this email only in headers anyone can copy (no VERP token proved
    it): one entry per address it names, for the clerk to judge; it suppressed nothing."""
    report = parse(inbound.raw)
    label = _document_label(message)
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
    label = _document_label(message)
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
    )


def _evidence_text(event: DeliveryEvent) -> str:
    """What decided the review, as recorded when it was opened (or the event's own fields)."""
    try:
        return Evidence(**(event.evidence or {})).describe()
    except TypeError:  # recorded by another version of the decision: its fields as stored
        return f"status {event.status or 'none'}; diagnostic: {event.diagnostic}"


def open_reviews(
    session: Session, thread: Thread, *, messages: list[Message] | None = None
) -> list[DeliveryEvent]:
    """The thread's bounce reviews still open, oldest first: while any is, it needs a person."""
    ids = [m.id for m in (thread_messages(session, thread) if messages is None else messages)]
    return list(
        session.exec(
            select(DeliveryEvent)
            .where(col(DeliveryEvent.message_id).in_(ids), DeliveryEvent.review == REVIEW_OPEN)
            .order_by(col(DeliveryEvent.created_at), col(DeliveryEvent.id))
        ).all()
    )


def close_reviews(session: Session, thread: Thread, address: str, *, outcome: str) -> int:
    """Close the thread's open reviews about ``address`` as ``outcome`` (suppressed or
    dismissed); returns how many were open. The caller notes who did it and commits."""
    if outcome not in REVIEW_CLOSED:
        raise ValueError(f"a review closes as one of {', '.join(REVIEW_CLOSED)}")
    wanted = address.strip().lower()
    closed = 0
    for event in open_reviews(session, thread):
        if event.address == wanted:
            event.review = outcome
            session.add(event)
            closed += 1
    session.flush()
    return closed


def unverified_addresses(session: Session, thread: Thread) -> set[str]:
    """The addresses the thread's unverified reports name (what a clerk may suppress from it)."""
    return {
        e.address for e in build_timeline(session, thread) if e.type == "unverified" and e.address
    }


def _attempt_entry(attempt: DeliveryAttempt, message: Message) -> Entry:
    label = _document_label(message)
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
        )
    return Entry(
        at=attempt.finished_at,
        type="attempt",
        summary=f"{label} {message.kind} attempt {attempt.number} {attempt.outcome.value}{code}",
        detail=attempt.response or "",
        status=attempt.outcome.value,
    )


_VERBS = {"bounce": "bounced", "delayed": "delayed", "delivered": "delivered"}


def _event_entry(event: DeliveryEvent, message: Message) -> Entry:
    label = _document_label(message)
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
        summary=f"{_document_label(message)}: {what}",
        detail=event.user_agent,
        status=event.action,
    )


def _reply_entry(inbound: InboundMail, message: Message) -> Entry:
    sender, subject = _from_and_subject(inbound.raw)
    what = "auto-reply" if inbound.kind == Kind.AUTO_REPLY.value else "reply"
    return Entry(
        at=inbound.received_at,
        type="reply",
        summary=f"{_document_label(message)}: {what} from {sender or '?'}: {subject}",
        detail=reply_text(inbound.raw),
        address=sender or None,
    )


REPLY_TEXT_CHARS = 4000


def reply_text(raw: bytes) -> str:
    """What the person wrote, as plain text: the text part, else the HTML part's text (an
    HTML body is never shown as HTML: no script from mail may run in the inbox)."""
    try:
        parsed = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(parsed, EmailMessage)
        part = parsed.get_body(preferencelist=("plain", "html"))
        if part is None:
            return ""
        content = part.get_content()
    except Exception:  # malformed MIME from a stranger: show nothing rather than fail
        return ""
    if not isinstance(content, str):
        return ""
    if part.get_content_subtype() == "html":
        content = str(get_text(content))
    return content.strip()[:REPLY_TEXT_CHARS]


def _from_and_subject(raw: bytes) -> tuple[str, str]:
    headers = BytesHeaderParser().parsebytes(raw)
    return _header(headers.get("From")), _header(headers.get("Subject"))


def _header(value: object) -> str:
    if value is None:
        return ""
    try:
        text = str(make_header(decode_header(str(value))))
    except (email.errors.HeaderParseError, UnicodeError, LookupError, ValueError):
        text = str(value)
    return " ".join(text.split())[:300]


def list_unmatched(
    session: Session, *, tenant_id: int | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Inbound mail no outbound email of ours matched, newest first: all of it, or only what
    arrived at tenant ``tenant_id``'s addresses."""
    query = select(InboundMail).where(InboundMail.status == InboundStatus.UNMATCHED)
    if tenant_id is not None:
        query = query.where(InboundMail.tenant_id == tenant_id)
    rows = session.exec(
        query.order_by(col(InboundMail.received_at).desc(), col(InboundMail.id).desc()).limit(limit)
    ).all()
    result = []
    for row in rows:
        sender, subject = _from_and_subject(row.raw)
        result.append(
            {
                "id": row.id,
                "received_at": row.received_at.isoformat(),
                "source": row.source,
                "kind": row.kind,
                "from": sender,
                "subject": subject,
                "why": row.error,
                "tenant_id": row.tenant_id,
            }
        )
    return result


def add_note(
    session: Session, thread: Thread, *, text: str, author: str, now: datetime
) -> ThreadNote:
    """Leave a note on a thread. The caller commits."""
    note = ThreadNote(thread_id=thread.id or 0, author=author[:200], text=text, created_at=now)
    thread.updated_at = now
    session.add_all([note, thread])
    session.flush()
    return note
