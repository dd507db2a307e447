"""The set-based paths of the outbox: enqueue (one and many) and recording a batch of results.

Both run on SQLite and PostgreSQL (the ``db_url`` fixture); each asserts rows, never timing.
"""

from __future__ import annotations

import random
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from dunmail.app import Services
from mailer.config import DeliveryConfig
from mailer.outbound.models import DeliveryAttempt, Message, MessageRecipient
from mailer.outbound.record import Attempt, Recording
from mailer.outbound.requests import Claimed, EnqueueRequest, PassReport
from mailer.outbound.transport import RecipientResult, SendResult


def _request(
    tenant_id: int, n: int, recipients: tuple[str, ...] = ("b@x.test", "a@x.test")
) -> EnqueueRequest:
    return EnqueueRequest(
        tenant_id=tenant_id,
        kind="invoice_reminder",
        recipients=list(recipients),
        context={"n": n},
        document=f"invoice:{n}",
        version=1,
        occasion="step 1",
    )


def test_enqueue_many_one_message_per_key(services: Services) -> None:
    tenant_id = services.tenants.id("acme")
    now = services.clock.now()
    queue = services.sending.queue
    with Session(services.engine) as session:
        first = queue.enqueue(session, _request(tenant_id, 0), now=now)
        assert first.id is not None and first.attempts == 0
        # Duplicates inside the batch (same key, recipients in another order and case) and
        # against the row already there.
        batch = [_request(tenant_id, n % 5) for n in range(12)]
        batch.append(_request(tenant_id, 3, ("A@x.test", "b@x.test")))
        queue.enqueue_many(session, batch, now=now)
        queue.enqueue_many(session, batch, now=now)
        again = queue.enqueue(session, _request(tenant_id, 0), now=now)
        assert again.id == first.id
        session.commit()
    with Session(services.engine) as session:
        messages = session.exec(select(Message).order_by(col(Message.id))).all()
        assert len(messages) == 5
        assert len({m.idempotency_key for m in messages}) == 5
        assert [m.context for m in messages] == [{"n": n} for n in range(5)]
        recipients = session.exec(select(MessageRecipient)).all()
        assert sorted((r.message_id, r.address) for r in recipients) == sorted(
            (m.id, a) for m in messages for a in ("a@x.test", "b@x.test")
        )
        assert {r.status.value for r in recipients} == {"pending"}


def test_enqueue_returns_the_row_as_stored(services: Services) -> None:
    tenant_id = services.tenants.id("acme")
    now = services.clock.now()
    with Session(services.engine) as session:
        made = services.sending.queue.enqueue(session, _request(tenant_id, 7), now=now)
        made.last_error = "changed after enqueue"  # the caller's session still owns it
        session.commit()
        uid = made.uid
    with Session(services.engine) as session:
        stored = session.exec(select(Message).where(col(Message.uid) == uid)).one()
        assert stored.last_error == "changed after enqueue"
        assert stored.status.value == "queued" and stored.attempts == 0
        assert stored.claimed_by is None and stored.manual is False


def _ok(address: str) -> RecipientResult:
    return RecipientResult(address, 250, "2.1.5 ok")


def test_record_batch_of_mixed_results(services: Services) -> None:
    tenant_id = services.tenants.id("acme")
    now = services.clock.now()
    with Session(services.engine, expire_on_commit=False) as session:
        services.sending.queue.enqueue_many(
            session, [_request(tenant_id, n) for n in range(4)], now=now
        )
        session.commit()
        messages = session.exec(select(Message).order_by(col(Message.id))).all()
        session.execute(sa.update(Message).values(claimed_by="w1", claimed_until=now))
        session.commit()
    endpoint = "smtp.test:25"
    both = ("a@x.test", "b@x.test")
    results: list[SendResult | None] = [
        SendResult((_ok("a@x.test"), _ok("b@x.test")), 250, "2.0.0 queued", endpoint),
        SendResult(
            (_ok("a@x.test"), RecipientResult("b@x.test", 451, "4.2.0 later")),
            250,
            "2.0.0 queued",
            endpoint,
        ),
        SendResult(
            tuple(RecipientResult(a, 550, "5.1.1 no such user") for a in both),
            None,
            "5.1.1 no such user",
            endpoint,
        ),
        None,  # throttled: not an attempt
    ]
    attempts = []
    for message, result in zip(messages, results, strict=True):
        claimed = Claimed(
            id=message.id or 0,
            uid=message.uid,
            tenant_id=tenant_id,
            kind=message.kind,
            context=message.context,
            created_at=now,
            attempts=0,
            recipients=both,
            previously_accepted=0,
        )
        attempts.append(
            Attempt(
                claimed=claimed,
                started_at=now,
                finished_at=now + timedelta(seconds=1),
                endpoint=endpoint,
                result=result,
                throttled_until=now + timedelta(minutes=5) if result is None else None,
            )
        )
    recording = Recording(
        services.engine,
        policy=DeliveryConfig(),
        worker_id="w1",
        rng=random.Random(1),
        webhooks=None,
    )
    report = PassReport()
    recording.record(attempts, report)
    with Session(services.engine) as session:
        rows = session.exec(select(Message).order_by(col(Message.id))).all()
        got = [(m.status.value, m.attempts, m.claimed_by, m.finished_at is not None) for m in rows]
        assert got == [
            ("sent", 1, None, True),
            ("deferred", 1, None, False),
            ("failed", 1, None, True),
            ("queued", 0, None, False),
        ]
        assert rows[3].next_attempt_at == now + timedelta(minutes=5)
        recipients = {
            (r.message_id, r.address): (r.status.value, r.code)
            for r in session.exec(select(MessageRecipient))
        }
        ids = [m.id for m in rows]
        assert recipients == {
            (ids[0], "a@x.test"): ("accepted", 250),
            (ids[0], "b@x.test"): ("accepted", 250),
            (ids[1], "a@x.test"): ("accepted", 250),
            (ids[1], "b@x.test"): ("deferred", 451),
            (ids[2], "a@x.test"): ("rejected", 550),
            (ids[2], "b@x.test"): ("rejected", 550),
            (ids[3], "a@x.test"): ("pending", None),
            (ids[3], "b@x.test"): ("pending", None),
        }
        logged = session.exec(select(DeliveryAttempt).order_by(col(DeliveryAttempt.id))).all()
        assert [(a.message_id, a.number, a.code) for a in logged] == [
            (ids[0], 1, 250),
            (ids[1], 1, 250),
            (ids[2], 1, 550),
        ]
    assert (report.sent, report.failed) == (1, 1)
