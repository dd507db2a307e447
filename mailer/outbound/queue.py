"""SERVICE: the durable queue of outgoing mail: enqueue once, in the caller's transaction.

An email is written together with the state change that caused it (or not at all), under an
idempotency key (tenant, kind, document, version, recipients, occasion), so asking again for
the same email is the one message already there. Delivering it is the dispatcher's part
(mailer/outbound/dispatch.py).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import instance_dict, manager_of_class
from sqlmodel import Session, select

from mailer.content.render import Renderer
from mailer.errors import MailerError
from mailer.outbound.copies import plan_recipients
from mailer.outbound.models import (
    Message,
    MessageRecipient,
    MessageStatus,
    RecipientRole,
    RecipientStatus,
)
from mailer.outbound.requests import EnqueueRequest, idempotency_key
from mailer.tenants import Tenants

_MESSAGES: sa.Table = Message.__table__  # type: ignore[attr-defined]
_RECIPIENTS: sa.Table = MessageRecipient.__table__  # type: ignore[attr-defined]

_manager = manager_of_class(Message)
_NO_VALUES = {c.key: None for c in _MESSAGES.columns}
_INSERTS = {
    is_pg: (pg_insert if is_pg else sqlite_insert)(_MESSAGES).on_conflict_do_nothing(
        index_elements=["tenant_id", "idempotency_key"]
    )
    for is_pg in (False, True)
}


class Queue:
    """Put emails in the outbox and find them there; nothing is sent here."""

    def __init__(self, renderer: Renderer, *, tenants: Tenants | None = None) -> None:
        """``renderer`` tells each message's language from its context, stored with it;
        ``tenants`` gives each tenant's AR copies (cc, bcc) of each kind, which every email
        gets as recipients of their own (mailer/outbound/copies.py). Read once per tenant and
        kind: the configuration does not change while the engine runs."""
        self._renderer = renderer
        self._tenants = tenants
        self._copies: dict[tuple[int, str], tuple[tuple[str, ...], tuple[str, ...]]] = {}

    def enqueue(self, session: Session, request: EnqueueRequest, *, now: datetime) -> Message:
        """Add ``request`` unless the same email is already there; return the one message.

        Runs inside the caller's transaction so an email is enqueued together with the state
        change that caused it (or not at all).
        """
        key = idempotency_key(request)
        addresses = self._recipients(request)
        if not addresses:
            raise MailerError(f"{request.kind} for {request.document}: no recipients")
        if session.new:  # a message added through the ORM must be there to conflict with
            session.flush()
        row = self._row(request, key, now)
        # Core, no look-up first and no savepoint: the unique (tenant, key) index answers
        # whether the email is new (ON CONFLICT DO NOTHING returns no id when it is not).
        connection = session.connection()
        inserted = connection.execute(
            self._insert(session).returning(_MESSAGES.c.id), row
        ).scalar_one_or_none()
        if inserted is None:
            # Already there, or another process enqueued it a moment ago (its commit waited for).
            found = self._find(session, request.tenant_id, key)
            if found is None:
                raise MailerError(f"{request.kind} for {request.document}: enqueue conflicted")
            return found
        connection.execute(
            sa.insert(_RECIPIENTS),
            [
                {
                    "message_id": inserted,
                    "address": a,
                    "status": RecipientStatus.PENDING,
                    "role": role,
                }
                for a, role in addresses
            ],
        )
        # The row as written, handed to the session as if just loaded: no flush, no query.
        # Built as a query's result is (no per-field validation or instrumented setattr):
        # every column in place, so nothing is expired and nothing loads again.
        message = _manager.new_instance()
        instance_dict(message).update(_NO_VALUES, id=inserted, **row)
        make_transient_to_detached(message)
        session.add(message)
        return message

    def _recipients(self, request: EnqueueRequest) -> list[tuple[str, RecipientRole]]:
        """The customer's addresses, then the tenant's copies of this kind (none without)."""
        if self._tenants is None or not request.recipients:
            return plan_recipients(request.recipients)
        key = (request.tenant_id, request.kind)
        copies = self._copies.get(key)
        if copies is None:
            copies = self._tenants.config(request.tenant_id)[1].copies(request.kind)
            self._copies[key] = copies
        return plan_recipients(request.recipients, *copies)

    def _row(self, r: EnqueueRequest, key: str, now: datetime) -> dict[str, Any]:
        """The message's columns as :meth:`enqueue` and :meth:`enqueue_many` insert them."""
        return {
            "uid": secrets.token_hex(10),
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

    @staticmethod
    def _insert(session: Session) -> Any:
        """INSERT of a message that does nothing when its (tenant, key) is already there."""
        return _INSERTS[session.get_bind().dialect.name == "postgresql"]

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
            row = self._row(r, key, now)
            rows.append(row)
            recipient_rows.extend(
                {"uid": row["uid"], "address": a, "role": role.value}
                for a, role in self._recipients(r)
            )
        if not rows:
            return
        insert = self._insert(session)
        message_table, recipient_table = _MESSAGES, _RECIPIENTS
        # Plain executemany, no RETURNING: the driver prepares each statement once, where a
        # multi-row VALUES with RETURNING is re-parsed for every page (3x slower on
        # PostgreSQL). Each recipient row finds its message by the message's uid; the rows of
        # a message that was already there find nothing and insert nothing.
        recipients_by_uid = sa.insert(recipient_table).from_select(
            ["message_id", "address", "status", "role"],
            sa.select(
                message_table.c.id,
                sa.bindparam("address", type_=sa.String()),
                sa.literal(RecipientStatus.PENDING.value),
                sa.bindparam("role", type_=sa.String()),
            ).where(message_table.c.uid == sa.bindparam("uid")),
        )
        # Core on the session's connection: the ORM would treat a list of rows as its own
        # bulk insert and refuse an INSERT ... SELECT.
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            _insert_as_json(connection, rows, recipient_rows)
            return
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


# PostgreSQL: a batch is one statement over one JSON parameter (parsed and planned once, no
# round trip per row), where an executemany sends and executes every row on its own. ``json``
# (not ``jsonb``) keeps each context's text, key order included; ``ord`` keeps the list order,
# so ids are given in the order the rows came, as the executemany gives them.
_MESSAGE_COLUMNS = (
    ("uid", "text"),
    ("tenant_id", "integer"),
    ("customer_id", "integer"),
    ("invoice_id", "integer"),
    ("kind", "text"),
    ("document_version", "integer"),
    ("idempotency_key", "text"),
    ("status", "text"),
    ("context", "json"),
    ("created_at", "timestamptz"),
    ("next_attempt_at", "timestamptz"),
    ("attempts", "integer"),
    ("manual", "boolean"),
    ("occasion", "text"),
    ("language", "text"),
)
_PG_MESSAGES = sa.text(
    f"INSERT INTO message ({', '.join(n for n, _ in _MESSAGE_COLUMNS)}) "
    f"SELECT {', '.join('r.' + n for n, _ in _MESSAGE_COLUMNS)} "
    "FROM json_to_recordset(CAST(:rows AS json)) AS r("
    f"{', '.join(f'{n} {t}' for n, t in _MESSAGE_COLUMNS)}, ord integer) "
    "ORDER BY r.ord ON CONFLICT (tenant_id, idempotency_key) DO NOTHING"
)
_PG_RECIPIENTS = sa.text(
    "INSERT INTO messagerecipient (message_id, address, status, role) "
    "SELECT m.id, r.address, :status, r.role "
    "FROM json_to_recordset(CAST(:rows AS json)) "
    "AS r(uid text, address text, role text, ord integer) "
    "JOIN message m ON m.uid = r.uid ORDER BY r.ord"
)


def _insert_as_json(
    connection: sa.Connection, rows: list[dict[str, Any]], recipient_rows: list[dict[str, str]]
) -> None:
    """:meth:`Queue.enqueue_many`'s two inserts on PostgreSQL, the same rows and values."""
    payload = [
        {
            **row,
            "status": row["status"].value,
            "created_at": row["created_at"].isoformat(),
            "next_attempt_at": row["next_attempt_at"].isoformat(),
            "ord": n,
        }
        for n, row in enumerate(rows)
    ]
    connection.execute(_PG_MESSAGES, {"rows": json.dumps(payload)})
    connection.execute(
        _PG_RECIPIENTS,
        {
            "rows": json.dumps([{**r, "ord": n} for n, r in enumerate(recipient_rows)]),
            "status": RecipientStatus.PENDING.value,
        },
    )
