"""Fairness: the largest allowed document, its worker's memory, another tenant's reminder latency.

    python -m bench.fairness [--lines 1000] [--slow-lines 1000] [--rounds 3]

* largest: one warm worker process (``PDFRenderer(workers=1)``) renders a ``--lines``-line
  invoice (``[pdf] max_lines``' default): seconds, pages, and the worker's resident memory
  before, after and at its peak (``/proc/PID/status`` VmRSS and VmHWM). Then a document past
  ``max_pages`` (twice the lines), refused after layout: seconds until the refusal.
* latency: two tenants, SQLite in a temporary directory, an in-memory transport, two PDF
  workers and the engine's loop (a delivery pass every ``poll_seconds``, as ``dunmail run``
  does). Tenant "slow" has a ``--slow-lines``-line invoice email queued; once its render has
  started, tenant "quick" queues a reminder every 0.5 s. Each reminder's latency is the time
  from its enqueue until it is sent; measured once with passes that wait for every PDF (the
  behaviour before ``[pdf] pass_wait_seconds``) and once with the default wait.

Results go to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from dunmail.app import Services, build_services
from dunmail.config import Config
from mailer.clock import SystemClock
from mailer.content.pdf_pool import PDFRenderer
from mailer.content.pdf_samples import sample_pdf_context
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.models import Message, MessageStatus

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
POLL = 0.5


def _status_kb(pid: int) -> dict[str, int]:
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


async def largest(lines: int) -> None:
    renderer = PDFRenderer(workers=1, render_seconds=3600, max_pages=50)
    try:
        [pid] = await renderer.start()
        before = _status_kb(pid)
        started = time.perf_counter()
        rendered = await renderer.render("invoice", sample_pdf_context("invoice", lines=lines))
        took = time.perf_counter() - started
        after = _status_kb(pid)
        print(f"largest: {lines} lines -> {rendered.pages} pages in {took:.1f} s")
        print(
            f"  worker RSS {before['VmRSS'] // 1024} MB before, {after['VmRSS'] // 1024} MB "
            f"after, peak {after['VmHWM'] // 1024} MB"
        )
        started = time.perf_counter()
        try:
            await renderer.render("invoice", sample_pdf_context("invoice", lines=lines * 2))
        except Exception as exc:  # the page limit: the refusal is what is measured
            print(f"  {lines * 2} lines refused after {time.perf_counter() - started:.1f} s: {exc}")
        else:
            print(f"  {lines * 2} lines rendered: under max_pages")
        print(f"  worker RSS peak {_status_kb(pid)['VmHWM'] // 1024} MB")
    finally:
        await renderer.close()


def _config(workdir: Path, wait: float) -> Config:
    def tenant(slug: str) -> dict[str, Any]:
        return {
            "name": f"{slug.title()} Ltd",
            "email": f"ar@{slug}.example",
            "dunning": {"window": "00:00-24:00", "business_days": WEEKDAYS},
            "dkim": [
                {
                    "domain": f"{slug}.example",
                    "selector": "s1",
                    "key_file": str(workdir / f"{slug}.pem"),
                }
            ],
        }

    return Config(
        env="dev",
        database={"url": f"sqlite:///{workdir / 'bench.db'}"},
        relay={"host": "127.0.0.1", "port": 25, "domain": "relay.example"},
        delivery={"poll_seconds": POLL},
        pdf={"workers": 2, "pass_wait_seconds": wait, "render_seconds": 600},
        tenants={"slow": tenant("slow"), "quick": tenant("quick")},
    )


def _document(prefix: str, count: int, lines: int) -> dict[str, Any]:
    customer = {
        "id": "C-1",
        "name": "Globex",
        "time_zone": "UTC",
        "contacts": [{"email": "ap@globex.example", "name": "AP", "roles": ["ap"]}],
    }
    invoices = [
        {
            "id": f"{prefix}-{i}",
            "number": f"{prefix}-{i}",
            "customer": "C-1",
            "currency": "EUR",
            "issued_at": "2026-01-01",
            "due_at": "2026-01-31",
            "lines": [
                {"description": f"Item {j}", "quantity": "1", "unit_price": "1.00"}
                for j in range(lines)
            ],
        }
        for i in range(count)
    ]
    return {"customers": [customer], "invoices": invoices}


def _sent(services: Services, ids: list[int]) -> set[int]:
    with Session(services.engine) as session:
        rows = session.exec(select(Message).where(col(Message.id).in_(ids))).all()
        return {m.id or 0 for m in rows if m.status is MessageStatus.SENT}


async def latency(slow_lines: int, rounds: int, *, wait: float | None) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        services = build_services(_config(workdir, wait or 0), SystemClock(), MemoryTransport())
        try:
            await services.pdfs.start()
            if wait is None and services.pdfs.passes is not None:
                services.pdfs.passes.pass_wait = None  # every pass waits for its PDFs
            services.ledger.import_document(_document("SLOW", 1, slow_lines), tenant="slow")
            services.ledger.import_document(_document("Q", rounds, 2), tenant="quick")
            services.sending.enqueue_invoice_email(
                "SLOW-0", kind="new_invoice", tenant="slow", manual=True
            )
            stop = asyncio.Event()

            async def engine() -> None:  # dunmail run's loop: a pass, then the next interval
                while not stop.is_set():
                    await services.sending.deliver()
                    await asyncio.sleep(POLL)

            loop = asyncio.create_task(engine())
            await asyncio.sleep(1.0)  # the slow render is under way
            queued: dict[int, float] = {}
            for i in range(rounds):
                message = services.sending.enqueue_invoice_email(
                    f"Q-{i}", kind="invoice_reminder", tenant="quick", manual=False
                )
                assert message is not None and message.id is not None
                queued[message.id] = time.perf_counter()
                await asyncio.sleep(0.5)
            latencies: dict[int, float] = {}
            deadline = time.perf_counter() + 900
            while len(latencies) < len(queued) and time.perf_counter() < deadline:
                for found in _sent(services, list(queued)):
                    latencies.setdefault(found, time.perf_counter() - queued[found])
                await asyncio.sleep(0.05)
            stop.set()
            await loop
            return sorted(latencies.values())
        finally:
            await services.close()


async def run(args: argparse.Namespace) -> None:
    await largest(args.lines)
    for label, wait in (("passes wait for every PDF", None), ("pass_wait_seconds = 2", 2.0)):
        found = await latency(args.slow_lines, args.rounds, wait=wait)
        print(
            f"latency ({label}): quick tenant's reminders during a {args.slow_lines}-line "
            f"render: median {statistics.median(found):.2f} s, worst {max(found):.2f} s"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--slow-lines", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args, unknown = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.ERROR)  # not the demo tenants' DKIM alignment warnings
    if unknown:
        print(f"fairness.py: ignoring {' '.join(unknown)}")
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
