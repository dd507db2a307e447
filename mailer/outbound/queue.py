"""SERVICE: the durable queue of outgoing mail: enqueue once, in the caller's transaction.

An email is written together with the state change that caused it (or not at all), under an
idempotency key (tenant, kind, document, version, recipients, occasion), so asking again for
the same email is the one message already there. Delivering it is the dispatcher's part
(mailer/outbound/dispatch.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from mailer.address import parse_addr_spec
from mailer.content.render import Renderer
from mailer.errors import MailerError
from mailer.outbound.models import Message, MessageRecipient, MessageStatus, RecipientStatus
from mailer.outbound.requests import EnqueueRequest, idempotency_key


class Queue:
    """Put emails in the outbox and find them there; nothing is sent here."""

    def __init__(self, renderer: Renderer) -> None:
        """``renderer`` tells each message's language from its context, stored with it."""
        self._renderer = renderer

    def enqueue(self, session: Session, request: EnqueueRequest, *, now: datetime) -> Message:
        """Add ``request`` unless the same email is already there; return the one message.

        Runs inside the caller's transaction so an email is enqueued together with the state
        change that caused it (or not at all).
        """
        key = idempotency_key(request)
        existing = self._find(session, request.tenant_id, key)
        if existing is not None:
            return existing
        addresses = sorted({parse_addr_spec(a) for a in request.recipients})
        if not addresses:
            raise MailerError(f"{request.kind} for {request.document}: no recipients")
        message = Message(
            uid=secrets.token_hex(10),
            tenant_id=request.tenant_id,
            customer_id=request.customer_id,
            invoice_id=request.invoice_id,
            kind=request.kind,
            document_version=request.version,
            idempotency_key=key,
            context=dict(request.context),
            created_at=now,
            next_attempt_at=max(now, request.not_before or now),
            manual=request.manual,
            occasion=request.occasion,
            language=self._renderer.language_of(request.context),
        )
        try:
            with session.begin_nested():
                session.add(message)
                session.flush()
                session.add_all(
                    MessageRecipient(message_id=message.id or 0, address=a) for a in addresses
                )
                session.flush()
        except IntegrityError:
            # Another process enqueued the same email between our look-up and insert.
            found = self._find(session, request.tenant_id, key)
            if found is None:
                raise
            return found
        return message

    def enqueue_many(
        self, session: Session, requests: Sequence[EnqueueRequest], *, now: datetime
    ) -> None:
        """:meth:`enqueue` for a batch, in three statements instead of several per email (the
        scheduler queues thousands at a time).

        An email already in the outbox is left alone, as :meth:`enqueue` does: the insert
        skips a row whose (tenant, idempotency key) exists (``ON CONFLICT DO NOTHING``), even
        one another process inserted a moment ago, and its recipients with it.
        """
        rows: list[dict[str, Any]] = []
        recipient_rows: list[dict[str, str]] = []
        seen: set[str] = set()
        for r in requests:
            key = idempotency_key(r)
            if key in seen:
                continue
            seen.add(key)
            if not r.recipients:
                raise MailerError(f"{r.kind} for {r.document}: no recipients")
            uid = secrets.token_hex(10)
            rows.append(
                {
                    "uid": uid,
                    "tenant_id": r.tenant_id,
                    "customer_id": r.customer_id,
                    "invoice_id": r.invoice_id,
                    "kind": r.kind,
                    "document_version": r.version,
                    "idempotency_key": key,
                    "status": MessageStatus.QUEUED,
                    "context": dict(r.context),
                    "created_at": now,
                    "next_attempt_at": max(now, r.not_before or now),
                    "attempts": 0,
                    "manual": r.manual,
                    "occasion": r.occasion,
                    "language": self._renderer.language_of(r.context),
                }
            )
            recipient_rows.extend(
                {"uid": uid, "address": a}
                for a in sorted({parse_addr_spec(a) for a in r.recipients})
            )
        if not rows:
            return
        message_table = Message.__table__  # type: ignore[attr-defined]
        recipient_table = MessageRecipient.__table__  # type: ignore[attr-defined]
        insert = (pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert)(
            message_table
        ).on_conflict_do_nothing(index_elements=["tenant_id", "idempotency_key"])
        # Plain executemany, no RETURNING: the driver prepares each statement once, where a
        # multi-row VALUES with RETURNING is re-parsed for every page (3x slower on
        # PostgreSQL). Each recipient row finds its message by the message's uid; the rows of
        # a message that was already there find nothing and insert nothing.
        recipients_by_uid = sa.insert(recipient_table).from_select(
            ["message_id", "address", "status"],
            sa.select(
                message_table.c.id,
                sa.bindparam("address", type_=sa.String()),
                sa.literal(RecipientStatus.PENDING.value),
            ).where(message_table.c.uid == sa.bindparam("uid")),
        )
        # Core on the session's connection: the ORM would treat a list of rows as its own
        # bulk insert and refuse an INSERT ... SELECT.
        connection = session.connection()
        connection.execute(insert, rows)
        connection.execute(recipients_by_uid, recipient_rows)

    def find(self, session: Session, request: EnqueueRequest) -> Message | None:
        """The message ``request`` would be, if it is already in the outbox."""
        return self._find(session, request.tenant_id, idempotency_key(request))

    @staticmethod
    def _find(session: Session, tenant_id: int, key: str) -> Message | None:
        query = select(Message).where(
            Message.tenant_id == tenant_id, Message.idempotency_key == key
        )
        return session.exec(query).first()
