"""``Idempotency-Key`` for the JSON API's POSTs: the same key and request get the stored answer.

Two ways to keep the answer, chosen per route:

* **In the work's transaction** (:func:`replay` then :func:`store_answer` in one session): the
  upserts. The import and the record commit together, so a crash leaves neither or both; two
  concurrent requests with one key both run the import, the second's INSERT of the record
  hits the unique (tenant, key) constraint, its whole transaction (import included) rolls back
  and it answers with the first one's stored response.
* **Reserve, work, complete** (:func:`reserve`, :func:`complete`, :func:`release`): the routes
  whose work commits its own transaction or talks to a mail server (mark sent, holds, a send).
  The key is reserved first (``status_code`` 0, committed); a second request with the key
  while the work runs gets 409; the answer is stored when the work ends; a crash or a 5xx
  releases the reservation so the client may retry. A reservation older than
  :data:`RESERVATION_LEASE` (its worker died between work and record) may be taken over.

Answers with a 4xx status are stored too (the same request would fail the same way); 5xx are
not. Records are per tenant: two tenants may use the same key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from dunmail.web.models import IdempotencyRecord
from mailer.db import session_scope

IN_PROGRESS = 0  # status_code of a reserved key whose work has not finished
RESERVATION_LEASE = timedelta(minutes=5)


class IdempotencyError(Exception):
    """The key cannot be used for this request; ``status_code`` and ``detail`` say why."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


@dataclass(frozen=True)
class Answer:
    """A response to send (and, with a key, to keep)."""

    status_code: int
    body: Any
    replayed: bool = False


def request_hash(method: str, path: str, body: bytes) -> str:
    """sha256 of method, path and body; a JSON body is canonicalised first, so the same
    document with other whitespace or key order is the same request."""
    try:
        text = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    except (ValueError, UnicodeDecodeError):
        text = body.decode("latin-1")
    return hashlib.sha256(f"{method.upper()} {path}\n{text}".encode()).hexdigest()


def _find(session: Session, tenant_id: int, key: str) -> IdempotencyRecord | None:
    return session.exec(
        select(IdempotencyRecord).where(
            IdempotencyRecord.tenant_id == tenant_id, IdempotencyRecord.key == key
        )
    ).first()


def _answer(record: IdempotencyRecord, digest: str) -> Answer:
    if record.request_hash != digest:
        raise IdempotencyError(
            422,
            "this Idempotency-Key was already used with a different request; "
            "use a new key for a new request",
        )
    if record.status_code == IN_PROGRESS:
        raise IdempotencyError(409, "a request with this Idempotency-Key is still in progress")
    return Answer(record.status_code, json.loads(record.response), replayed=True)


def replay(session: Session, *, tenant_id: int, key: str, digest: str) -> Answer | None:
    """The stored answer for ``key``, None if the key is new; raises IdempotencyError when the
    key belongs to another request or is still being worked on."""
    record = _find(session, tenant_id, key)
    return None if record is None else _answer(record, digest)


def store_answer(
    session: Session, *, tenant_id: int, key: str, digest: str, answer: Answer, now: datetime
) -> None:
    """Record ``answer`` in the caller's transaction (flushes: a concurrent twin raises
    IntegrityError here, and the caller rolls back its work with it)."""
    session.add(
        IdempotencyRecord(
            tenant_id=tenant_id,
            key=key,
            request_hash=digest,
            status_code=answer.status_code,
            response=json.dumps(answer.body),
            created_at=now,
        )
    )
    session.flush()


def stored(engine: Engine, *, tenant_id: int, key: str, digest: str) -> Answer:
    """The answer a concurrent twin committed (after our INSERT lost the race)."""
    with Session(engine) as session:
        record = _find(session, tenant_id, key)
    if record is None:  # the twin rolled back after all: the client may simply retry
        raise IdempotencyError(409, "a request with this Idempotency-Key did not finish; retry")
    return _answer(record, digest)


def reserve(
    engine: Engine, *, tenant_id: int, key: str, digest: str, now: datetime
) -> Answer | None:
    """Claim ``key`` for this request (committed); returns the stored answer instead when the
    key was used before, and raises IdempotencyError on a mismatch or a live reservation."""
    try:
        with session_scope(engine) as session:
            record = _find(session, tenant_id, key)
            if record is None:
                store_answer(
                    session,
                    tenant_id=tenant_id,
                    key=key,
                    digest=digest,
                    answer=Answer(IN_PROGRESS, None),
                    now=now,
                )
                return None
            if (
                record.status_code == IN_PROGRESS
                and record.request_hash == digest
                and record.created_at < now - RESERVATION_LEASE
            ):
                record.created_at = now  # its worker died: this request takes over
                session.add(record)
                return None
            return _answer(record, digest)
    except IntegrityError:
        return stored(engine, tenant_id=tenant_id, key=key, digest=digest)


def complete(engine: Engine, *, tenant_id: int, key: str, answer: Answer) -> None:
    """Keep the answer of a reserved key (a 5xx releases the key instead)."""
    if answer.status_code >= 500:
        release(engine, tenant_id=tenant_id, key=key)
        return
    with session_scope(engine) as session:
        session.execute(
            sa.update(IdempotencyRecord)
            .where(
                col(IdempotencyRecord.tenant_id) == tenant_id,
                col(IdempotencyRecord.key) == key,
            )
            .values(status_code=answer.status_code, response=json.dumps(answer.body))
        )


def release(engine: Engine, *, tenant_id: int, key: str) -> None:
    """Forget a reservation whose work failed unexpectedly, so a retry does the work."""
    with session_scope(engine) as session:
        session.execute(
            sa.delete(IdempotencyRecord).where(
                col(IdempotencyRecord.tenant_id) == tenant_id,
                col(IdempotencyRecord.key) == key,
                col(IdempotencyRecord.status_code) == IN_PROGRESS,
            )
        )
