"""SERVICE: the AR inbox's threads, one per customer document, and what they store themselves.

A thread stores only its own state (status, assignee, task, notes). What happened (the emails
sent, each delivery attempt, the bounces, complaints and replies) is read from the ledger rows
each time (bounce/timeline.py), so the inbox can never disagree with the outbox or the inbound
store. This module finds or creates a message's thread, reopens it when news arrives, and
keeps the one mapping between a thread and the emails about its document.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bounce.report import Kind
from mailer.errors import NotFoundError
from mailer.inbox_models import Thread, ThreadNote, ThreadStatus
from mailer.outbound.models import Message

# What a thread must see again even after it was resolved (the issue's "a bounce or reply
# reopens a resolved thread"); a delay notice or a delivery report does not.
REOPENING_KINDS = (Kind.BOUNCE, Kind.COMPLAINT, Kind.AUTO_REPLY, Kind.NOT_BOUNCE)


def document_key(message: Message) -> str:
    """The document a message is about: its invoice, else its customer, else itself."""
    if message.invoice_id is not None:
        return f"invoice:{message.invoice_id}"
    if message.customer_id is not None:
        return f"customer:{message.customer_id}"
    return f"message:{message.id}"


def document_sql() -> sa.ColumnElement[str]:
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


def add_note(
    session: Session, thread: Thread, *, text: str, author: str, now: datetime
) -> ThreadNote:
    """Leave a note on a thread. The caller commits."""
    note = ThreadNote(thread_id=thread.id or 0, author=author[:200], text=text, created_at=now)
    thread.updated_at = now
    session.add_all([note, thread])
    session.flush()
    return note
