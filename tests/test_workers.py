"""Several workers on one database share the work: every message exactly once; rate limits."""

from __future__ import annotations

import asyncio
import email
from collections import Counter
from datetime import timedelta
from email import policy
from pathlib import Path

import pytest
from sqlmodel import Session, select

from dunmail.app import Services, build_services
from mailer.clock import FixedClock
from mailer.outbound.models import Message, MessageStatus
from mailer.outbound.requests import EnqueueRequest
from tests.conftest import make_config
from tests.smtpd import RecordingServer
from tests.test_outbox import _context


def _build(
    tmp_path: Path,
    db_url: str,
    clock: FixedClock,
    smtpd: RecordingServer,
    relay: dict[str, object] | None = None,
    **tenant: object,
) -> Services:
    tenants = {"acme": {"name": "Acme Supplies", "email": "ar@acme.example", **tenant}}
    config = make_config(
        tmp_path,
        db_url,
        relay={"host": smtpd.host, "port": smtpd.port, **(relay or {})},
        tenants=tenants,
        delivery={"batch_size": 25},
    )
    # Its own build: the tests here run two or more Services (workers) on one database.
    return build_services(config, clock)


def _enqueue(services: Services, count: int) -> None:
    tenant_id = services.tenants.id(None)
    with Session(services.engine) as session:
        for n in range(count):
            services.sending.queue.enqueue(
                session,
                EnqueueRequest(
                    tenant_id=tenant_id,
                    kind="invoice_reminder",
                    recipients=[f"ap{n}@x{n % 7}.test"],
                    context=_context(),
                    document=f"invoice:{n}",
                    version=1,
                ),
                now=services.clock.now(),
            )
        session.commit()


def _statuses(services: Services) -> Counter[str]:
    with Session(services.engine) as session:
        return Counter(m.status.value for m in session.exec(select(Message)).all())


async def test_two_workers_claim_disjoint_rows(
    tmp_path: Path, db_url: str, clock: FixedClock, smtpd: RecordingServer
) -> None:
    one = _build(tmp_path, db_url, clock, smtpd)
    two = _build(tmp_path, db_url, clock, smtpd)
    try:
        _enqueue(one, 60)
        claims = await asyncio.gather(
            *(
                asyncio.to_thread(worker.sending.dispatcher.claim_due, clock.now(), limit=40)
                for worker in (one, two)
            )
        )
        ids = [[c.id for c in batch] for batch in claims]
        assert not set(ids[0]) & set(ids[1])
        assert sorted(ids[0] + ids[1]) == list(range(1, 61))
    finally:
        await one.close()
        await two.close()


async def test_two_concurrent_passes_send_each_message_once(
    tmp_path: Path, db_url: str, clock: FixedClock, smtpd: RecordingServer
) -> None:
    one = _build(tmp_path, db_url, clock, smtpd)
    two = _build(tmp_path, db_url, clock, smtpd)
    try:
        _enqueue(one, 200)
        reports = await asyncio.gather(one.sending.deliver(), two.sending.deliver())
    finally:
        await one.close()
        await two.close()
    ids = Counter(
        email.message_from_bytes(e.content, policy=policy.default)["Message-ID"]
        for e in smtpd.envelopes
    )
    assert len(ids) == 200 and max(ids.values()) == 1
    assert sum(r.sent for r in reports) == 200
    assert _statuses(one) == {"sent": 200}


async def test_tenant_rate_limit_defers_without_spending_attempts(
    tmp_path: Path, db_url: str, clock: FixedClock, smtpd: RecordingServer
) -> None:
    services = _build(tmp_path, db_url, clock, smtpd, rate_per_minute=3)
    try:
        _enqueue(services, 5)
        report = await services.sending.deliver()
        assert (report.sent, report.throttled) == (3, 2)
        with Session(services.engine) as session:
            waiting = [
                m for m in session.exec(select(Message)).all() if m.status is MessageStatus.QUEUED
            ]
        assert len(waiting) == 2 and all(m.attempts == 0 for m in waiting)
        assert all(m.next_attempt_at > clock.now() for m in waiting)
        clock.advance(timedelta(minutes=1))
        assert (await services.sending.deliver()).sent == 2
    finally:
        await services.close()
    assert len(smtpd.envelopes) == 5


async def test_a_421_pauses_the_server_for_the_rest_of_the_pass(
    tmp_path: Path, db_url: str, clock: FixedClock, smtpd: RecordingServer
) -> None:
    services = _build(tmp_path, db_url, clock, smtpd)
    smtpd.script(greeting="421 4.7.0 Too many connections, slow down")
    try:
        _enqueue(services, 30)
        first = await services.sending.deliver()
        # Once the server said 421, the rest of the batch waits instead of hammering it.
        assert first.attempted < 30 and first.throttled > 0
        assert smtpd.envelopes == []
        smtpd.script(greeting=None)
        clock.advance(timedelta(hours=5))
        await services.sending.deliver()
    finally:
        await services.close()
    assert _statuses(services) == {"sent": 30}


def _claimed(services: Services) -> bool:
    with Session(services.engine) as session:
        return any(m.claimed_until is not None for m in session.exec(select(Message)))


def _renewed(services: Services) -> bool:
    """Whether some claim runs past the (advanced) clock again."""
    now = services.clock.now()
    with Session(services.engine) as session:
        held = [m.claimed_until for m in session.exec(select(Message)) if m.claimed_until]
    return any(until > now for until in held)


@pytest.mark.smtpd_options(data_delay=0.5)
async def test_a_batch_slower_than_its_lease_keeps_its_claims(
    tmp_path: Path, db_url: str, clock: FixedClock, smtpd: RecordingServer
) -> None:
    """Worker one's batch outlasts the lease (the clock jumps past it mid-batch): it renews
    its claims, so worker two, claiming then, finds nothing and nothing is sent twice."""
    one = _build(tmp_path, db_url, clock, smtpd, relay={"max_connections": 1})  # 8 x 0.5 s
    two = _build(tmp_path, db_url, clock, smtpd)
    # A 3 s lease (below what config allows), so the heartbeat renews every second.
    one.sending.dispatcher._policy = one.sending.dispatcher._policy.model_copy(
        update={"lease_seconds": 3}
    )
    try:
        _enqueue(one, 8)
        first = asyncio.create_task(one.sending.dispatcher.deliver_due())
        while not await asyncio.to_thread(_claimed, one):  # worker one holds the batch
            await asyncio.sleep(0.05)
        clock.advance(timedelta(seconds=10))  # every claim of worker one has now lapsed ...
        deadline = asyncio.get_running_loop().time() + 5
        while not await asyncio.to_thread(_renewed, one):  # ... until its heartbeat renews them
            assert asyncio.get_running_loop().time() < deadline, "no lease was renewed"
            await asyncio.sleep(0.05)
        stolen = await asyncio.to_thread(two.sending.dispatcher.claim_due, clock.now(), limit=25)
        await first
        assert stolen == []
        ids = Counter(email.message_from_bytes(e.content)["Message-ID"] for e in smtpd.envelopes)
        assert len(ids) == 8 and set(ids.values()) == {1}
        assert _statuses(one) == Counter({"sent": 8})
    finally:
        await one.close()
        await two.close()
