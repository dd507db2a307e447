"""SERVICE: the AR inbox's reads: threads listed, filtered and paged, one thread shown, and the
inbound mail nothing of ours matched.

A page costs the same however many threads the tenant has: filters run in SQL, and only the
threads on the page have their timeline (bounce/timeline.py) built.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bounce.reply import REPLY_KINDS, from_and_subject
from bounce.report import Kind
from bounce.review import REVIEW_OPEN, open_reviews
from bounce.threads import document_sql, thread_messages
from bounce.timeline import build_timeline, document_label
from mailer.inbox_models import DeliveryEvent, InboundMail, InboundStatus, Thread, ThreadStatus
from mailer.ledger.models import Customer, Invoice
from mailer.outbound.models import Message

# The inbox's narrower views: the threads with a bounce or complaint, with a person's reply,
# waiting for someone to fix the customer's contact, or with a bounce review open.
THREAD_FILTERS = ("bounced", "replied", "fix_contact", "review")
# A review is a task on the bounce beside it, a note is the clerk's own: neither is news.
_NOT_NEWS = ("note", "review", "reviewed")


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
                "last": last.as_dict() if last else None,  # its fields, for the clerk's words
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
        col(Message.tenant_id) == col(Thread.tenant_id), document_sql() == col(Thread.document)
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


def _thread_label(session: Session, thread: Thread, messages: list[Message]) -> str:
    """What the clerk knows the thread by: an invoice thread is its invoice's number even when
    its latest email is a receipt or a thank-you about it, whose context names no invoice."""
    kind, _, raw_id = thread.document.partition(":")
    if kind == "invoice":
        invoice = session.get(Invoice, int(raw_id))
        if invoice is not None:
            return invoice.number
    return document_label(messages[-1]) if messages else thread.document


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
        sender, subject = from_and_subject(row.raw)
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
