"""SERVICE: what a delivery attempt did, written down: the message's state, each recipient's,
the attempt row and the message webhooks, all in the transaction that releases the claim.
The dispatcher (mailer/outbound/dispatch.py) makes the attempts; this records them."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col

from mailer.config import DeliveryConfig
from mailer.db import session_scope
from mailer.outbound.delivery import Decision, decide
from mailer.outbound.models import DeliveryAttempt, Message, MessageRecipient, MessageStatus
from mailer.outbound.requests import Claimed, PassReport
from mailer.outbound.transport import SendResult
from mailer.outbound.webhooks import Webhooks

log = logging.getLogger(__name__)


@dataclass
class Attempt:
    """One try at sending a claimed message, as the dispatcher hands it to be recorded."""

    claimed: Claimed
    started_at: datetime
    finished_at: datetime
    endpoint: str
    result: SendResult | None = None
    error: BaseException | None = None
    throttled_until: datetime | None = None
    pdf_sha256: str | None = None
    pdf_note: str | None = None  # why the kind's PDF is not attached (Assembled.pdf_note)


class Recording:
    """Writes a batch of attempts' results and releases their claims, in one transaction."""

    def __init__(
        self,
        engine: Engine,
        *,
        policy: DeliveryConfig,
        worker_id: str,
        rng: random.Random,
        webhooks: Webhooks | None,
    ) -> None:
        self._engine = engine
        self._policy = policy
        self._worker_id = worker_id
        self._rng = rng
        self._webhooks = webhooks

    def record(self, attempts: Sequence[Attempt], report: PassReport) -> None:
        """Write results and release the claims of a batch, all in one transaction.

        Rows are read with two IN queries and written with three executemany statements:
        going through the ORM unit of work here once cost a fifth of the engine's time.
        """
        ids = [a.claimed.id for a in attempts]
        message_rows: list[dict[str, Any]] = []
        recipient_rows: list[dict[str, Any]] = []
        attempt_rows: list[dict[str, Any]] = []
        with session_scope(self._engine) as session:
            current = {
                row.id: row
                for row in session.execute(
                    sa.select(
                        col(Message.id),
                        col(Message.attempts),
                        col(Message.claimed_by),
                        col(Message.status),
                        col(Message.next_attempt_at),
                        col(Message.pdf_sha256),
                    ).where(col(Message.id).in_(ids))
                )
            }
            recipient_ids = {
                (row.message_id, row.address): row.id
                for row in session.execute(
                    sa.select(
                        col(MessageRecipient.id),
                        col(MessageRecipient.message_id),
                        col(MessageRecipient.address),
                    ).where(col(MessageRecipient.message_id).in_(ids))
                )
            }
            for attempt in attempts:
                row = current.get(attempt.claimed.id)
                if row is None:
                    continue
                if row.claimed_by != self._worker_id:
                    log.warning(
                        "message %s: lease lost before its result was recorded", attempt.claimed.uid
                    )
                decision = self._decide(attempt, attempts=row.attempts)
                report.count(decision)
                message_rows.append(_message_row(row, attempt, decision))
                if decision is None:
                    continue
                attempt_rows.append(_attempt_row(attempt, decision, number=row.attempts + 1))
                if self._webhooks is not None and decision.status in (
                    MessageStatus.SENT,
                    MessageStatus.FAILED,
                ):
                    claimed = attempt.claimed
                    data = event_data(
                        claimed.uid, claimed.kind, claimed.context, decision.status.value
                    )
                    data["recipients"] = [
                        {"address": u.address, "status": u.status.value, "code": u.code}
                        for u in decision.recipients
                    ]
                    self._webhooks.emit(
                        session,
                        tenant_id=claimed.tenant_id,
                        event=f"message.{decision.status.value}",
                        data=data,
                        now=attempt.finished_at,
                    )
                for update in decision.recipients:
                    rid = recipient_ids.get((attempt.claimed.id, update.address))
                    if rid is not None:
                        recipient_rows.append(
                            {
                                "id": rid,
                                "status": update.status,
                                "code": update.code,
                                "response": update.response[:1000],
                                "updated_at": attempt.finished_at,
                            }
                        )
            connection = session.connection()
            _update_by_id(connection, _table(Message), message_rows)
            _update_by_id(connection, _table(MessageRecipient), recipient_rows)
            if attempt_rows:
                connection.execute(sa.insert(_table(DeliveryAttempt)), attempt_rows)

    def _decide(self, attempt: Attempt, *, attempts: int) -> Decision | None:
        """The decision for one attempt; None when it was throttled and never tried."""
        if attempt.throttled_until is not None:
            return None
        claimed = attempt.claimed
        decision = decide(
            recipients=claimed.recipients,
            previously_accepted=claimed.previously_accepted,
            attempts=attempts + 1,
            created_at=claimed.created_at,
            now=attempt.finished_at,
            result=attempt.result,
            error=attempt.error,
            policy=self._policy,
            rng=self._rng,
            copies=claimed.copies,
        )
        log.info(
            "message %s attempt %d: %s (%s)",
            claimed.uid,
            attempts + 1,
            decision.outcome.value,
            decision.code,
        )
        return decision


def _table(model: type[Any]) -> sa.Table:
    table: sa.Table = model.__table__
    return table


def _update_by_id(connection: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """``UPDATE table SET ... WHERE id = ?`` as one executemany per set of columns written.

    SQLAlchemy Core rather than the ORM's bulk update by primary key: the ORM's path sorted and
    re-processed every row of every batch, half of what recording a result cost.
    """
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        columns = tuple(sorted(k for k in row if k != "id"))
        groups.setdefault(columns, []).append({"row_id": row["id"], **{k: row[k] for k in columns}})
    for columns, batch in groups.items():
        statement = (
            sa.update(table)
            .where(table.c.id == sa.bindparam("row_id"))
            .values({name: sa.bindparam(name) for name in columns})
        )
        connection.execute(statement, batch)


def _message_row(current: Any, attempt: Attempt, decision: Decision | None) -> dict[str, Any]:
    """The message's new columns; every row has the same keys so they batch as executemany."""
    row: dict[str, Any] = {
        "id": current.id,
        "claimed_until": None,
        "claimed_by": None,
        "status": current.status,
        "attempts": current.attempts,
        "next_attempt_at": current.next_attempt_at,
        "finished_at": None,
        "last_error": None,
        "pdf_sha256": attempt.pdf_sha256 or current.pdf_sha256,
    }
    if decision is None:  # throttled: not an attempt, just later
        row["next_attempt_at"] = attempt.throttled_until
        row.pop("finished_at")
        row.pop("last_error")
        return row
    row["status"] = decision.status
    row["attempts"] = current.attempts + 1
    if decision.next_attempt_at is not None:
        row["next_attempt_at"] = decision.next_attempt_at
    if decision.finished:
        row["finished_at"] = attempt.finished_at
    if decision.code is None or decision.code >= 400 or attempt.error is not None:
        row["last_error"] = (f"{decision.code or ''} {decision.response}").strip()[:1000]
    elif attempt.pdf_note is not None:
        row["last_error"] = attempt.pdf_note[:1000]  # sent, but without its PDF: say why
    return row


def _attempt_row(attempt: Attempt, decision: Decision, *, number: int) -> dict[str, Any]:
    return {
        "message_id": attempt.claimed.id,
        "number": number,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
        "endpoint": attempt.endpoint,
        "outcome": decision.outcome,
        "code": decision.code,
        "response": decision.response[:1000] or None,
        "recipients": [
            {"address": u.address, "status": u.status.value, "code": u.code, "response": u.response}
            for u in decision.recipients
        ],
    }


def event_data(uid: str, kind: str, context: Mapping[str, Any], status: str) -> dict[str, Any]:
    """A message webhook's ``data``: which email, about which document, and how it ended."""
    invoice = context.get("invoice")
    customer = context.get("customer")
    return {
        "message": uid,
        "kind": kind,
        "status": status,
        "invoice": invoice.get("number") if isinstance(invoice, Mapping) else None,
        "customer": customer.get("id") if isinstance(customer, Mapping) else None,
    }


LINGER_SECONDS = 0.01  # how long a result may wait for others to share its transaction
MAX_BATCH = 200


class Recorder:
    """Commits attempt results as they finish, batching what arrives within ``LINGER_SECONDS``
    of the first (at most ``MAX_BATCH``).

    Recording each result soon after its 250 keeps the crash window (sent but not recorded)
    to about ten milliseconds plus one commit. Without the linger a busy pass committed every
    two or three results, and those transactions were a quarter of its CPU.
    """

    def __init__(
        self,
        record: Callable[[Sequence[Attempt], PassReport], None],
        report: PassReport,
        *,
        done: Callable[[Iterable[int]], None] = lambda ids: None,
    ) -> None:
        self._record = record
        self._report = report
        self._done = done  # told the ids of each committed batch
        self._queue: asyncio.Queue[Attempt | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def put(self, attempt: Awaitable[Attempt]) -> None:
        self._queue.put_nowait(await attempt)

    async def _run(self) -> None:
        done = False
        while not done:
            batch = [await self._queue.get()]
            if batch[0] is not None:
                await asyncio.sleep(LINGER_SECONDS)
            while not self._queue.empty() and len(batch) < MAX_BATCH:
                batch.append(self._queue.get_nowait())
                if batch[-1] is None:
                    break
            done = batch[-1] is None
            items = [a for a in batch if a is not None]
            if items:
                await asyncio.to_thread(self._record, items, self._report)
                self._done(a.claimed.id for a in items)

    async def close(self) -> None:
        self._queue.put_nowait(None)
        await self._task
