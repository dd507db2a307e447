"""Enqueue alone: CPU and wall time per message of ``Queue.enqueue`` and ``Queue.enqueue_many``.

    PYTHONPATH=. python -m bench.enqueue [--messages 5000] [--db sqlite postgresql]

The requests (reminder-sized contexts, two recipients each, no customer or invoice rows) are
built before the clock starts, so only the queue is measured: ``enqueue`` once per request in
one transaction (as bench/send.py's enqueue does, minus its ledger reads), then, on a fresh
outbox, ``enqueue_many`` in batches of 500 (as a dunning pass does), each committed. Figures
go to stdout as ``| what | measured | target | notes |`` rows; nothing is written elsewhere.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session

from bench._workload import TENANT, database, make_config, postgres_reason
from dunmail.app import build_services
from mailer.clock import FixedClock
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.models import Message, MessageRecipient
from mailer.outbound.requests import EnqueueRequest

BATCH = 500


def _requests(tenant_id: int, n: int) -> list[EnqueueRequest]:
    context = {
        "invoice": {"number": "INV-0", "amount": "1,234.00 EUR", "due": "2026-03-01"},
        "customer": {"id": "C-1", "name": "Globex Corporation"},
        "lines": [{"text": f"line {i}", "amount": "10.00"} for i in range(5)],
    }
    return [
        EnqueueRequest(
            tenant_id=tenant_id,
            kind="invoice_reminder",
            recipients=[f"ap{i}@globex.example", "finance@globex.example"],
            context={**context, "n": i},
            document=f"invoice:{i}",
            version=1,
            occasion="step 1",
        )
        for i in range(n)
    ]


def _measure(run: Callable[[], None]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(backend: str, messages: int, workdir: Path) -> list[str]:
    rows = []
    with database(backend, workdir) as url:
        services = build_services(
            make_config(workdir, url, None),
            FixedClock(datetime(2026, 3, 11, 10, tzinfo=UTC)),
            MemoryTransport(),
        )
        queue, now = services.sending.queue, services.clock.now()
        requests = _requests(services.tenants.id(TENANT), messages)

        def one_by_one() -> None:
            with Session(services.engine) as session:
                for r in requests:
                    queue.enqueue(session, r, now=now)
                session.commit()

        def batched() -> None:
            for start in range(0, messages, BATCH):
                with Session(services.engine) as session:
                    queue.enqueue_many(session, requests[start : start + BATCH], now=now)
                    session.commit()

        for name, run in (("Queue.enqueue", one_by_one), ("Queue.enqueue_many", batched)):
            with services.engine.begin() as conn:
                conn.execute(sa.delete(MessageRecipient.__table__))  # type: ignore[attr-defined]
                conn.execute(sa.delete(Message.__table__))  # type: ignore[attr-defined]
            wall, cpu = _measure(run)
            rows.append(
                f"| {name}, {backend} | {messages / wall:,.0f} msg/s | >= 5,000 msg/s | "
                f"{messages:,} messages, {cpu / messages * 1e6:,.0f} us CPU/msg in this process |"
            )
        services.engine.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgresql"])
    args = parser.parse_args()
    print("| what | measured | target | notes |\n| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.db:
            if backend == "postgresql" and (reason := postgres_reason()) is not None:
                print(f"| {backend} | skipped | | {reason} |")
                continue
            for row in measure(backend, args.messages, Path(tmp)):
                print(row, flush=True)


if __name__ == "__main__":
    main()
