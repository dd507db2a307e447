"""Send throughput: the whole outbox pipeline beside a raw aiosmtplib loop, into one loopback sink.

    PYTHONPATH=. python bench/send.py [--messages 2000] [--runs 3] [--sink auto] [--profile]

Each run sends ``--messages`` reminder-sized emails (text + HTML, DKIM rsa-sha256, no PDF) twice:

* raw: prebuilt messages sent by 16 workers, each with its own ``aiosmtplib.SMTP`` connected
  once; connecting is not timed. This is the ceiling for a Python SMTP client on this machine.
* pipeline: a fresh database (a SQLite file; a private PostgreSQL schema too when one answers at
  ``$DUNMAIL_BENCH_POSTGRES``) with one relay tenant pointing at the sink. Enqueue (one
  transaction, ``Outbox.enqueue`` per invoice) and one ``Services.deliver()`` pass are timed
  apart: claim, render, compose, DKIM, send over the pooled ``SMTPTransport`` (16 connections),
  record. Rate limits are set far above what can be reached: this measures throughput, not pacing.

The sink is Postfix's C ``smtp-sink`` when installed (Debian package ``postfix``), else an aiosmtpd
sink; either runs in its own process. Medians go to stdout as a markdown table and, with every
run's figures, to ``bench/results/send.json``. ``--profile`` runs one more SQLite pipeline under
cProfile and prints where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import platform
import pstats
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import aiosmtplib
import sqlalchemy as sa
from sqlmodel import col, select

from dunmail.app import Services, build_services
from dunmail.config import Config
from mailer.clock import SystemClock
from mailer.config import DKIMAlgorithm
from mailer.context import invoice_context
from mailer.db import session_scope
from mailer.dkim import generate_key
from mailer.ledger import invoice_contacts
from mailer.models import Customer, Invoice, Message, MessageStatus, Tenant
from mailer.outbox import EnqueueRequest
from mailer.transport import MemoryTransport

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PG_ADMIN_URL = os.environ.get(
    "DUNMAIL_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SMTP_SINK = "/usr/sbin/smtp-sink"
CONNECTIONS = 16
TARGET_RATIO = 0.40  # the pipeline's deliver rate, as a share of the raw rate
TENANT = "bench"
UNLIMITED = 100_000_000  # messages a minute: far above anything reachable, so nothing throttles
_COUNTER = re.compile(rb"mesg=(\d+)")

P = ParamSpec("P")
T = TypeVar("T")


# --- the workload ------------------------------------------------------------------------------


def make_document(invoices: int, customers: int) -> dict[str, Any]:
    """An ERP import: ``customers`` with one contact each (own domain), ``invoices`` over them."""
    today = date.today()
    issued, due = (today - timedelta(days=10)).isoformat(), (today + timedelta(days=20)).isoformat()
    lines = [
        {"description": "Support hours, March", "quantity": "12", "unit_price": "95.00"},
        {"description": "Hosting, standard plan", "quantity": "1", "unit_price": "249.00"},
        {"description": "Travel expenses", "quantity": "1", "unit_price": "86.40"},
    ]
    return {
        "customers": [
            {
                "id": f"C-{c:04d}",
                "name": f"Customer {c:04d} Trading Ltd",
                "locale": "en",
                "time_zone": "UTC",
                "contacts": [
                    {"email": f"ap@customer{c:04d}.example", "name": "Accounts", "roles": ["ap"]}
                ],
            }
            for c in range(customers)
        ],
        "invoices": [
            {
                "id": f"i-{i:06d}",
                "number": f"INV-{i:06d}",
                "customer": f"C-{i % customers:04d}",
                "currency": "EUR",
                "issued_at": issued,
                "due_at": due,
                "status": "open",
                "lines": lines,
            }
            for i in range(invoices)
        ],
    }


def make_config(workdir: Path, db_url: str, *, host: str, port: int) -> Config:
    """One relay tenant at the sink, DKIM rsa-sha256, 16 connections, no effective rate limit."""
    return Config(
        env="dev",
        database={"url": db_url},
        relay={
            "host": host,
            "port": port,
            "domain": "relay.example",
            "max_connections": CONNECTIONS,
            "local_hostname": "bench.localhost",
        },
        delivery={"batch_size": 500, "domain_rate_per_minute": UNLIMITED},
        tenants={
            TENANT: {
                "name": "Bench Supplies Ltd",
                "email": "ar@bench.example",
                "rate_per_minute": UNLIMITED,
                "dkim": [
                    {
                        "domain": "bench.example",
                        "selector": "s1",
                        "key_file": str(workdir / "dkim-s1.pem"),
                    }
                ],
            }
        },
    )


def enqueue_reminders(services: Services) -> int:
    """Enqueue an ``invoice_reminder`` for every invoice, in one transaction, as a tick would."""
    tenant_id = services.tenant_id(TENANT)
    now = services.clock.now()
    with session_scope(services.engine) as session:
        tenant = session.get(Tenant, tenant_id)
        if tenant is None:
            raise SystemExit("the bench tenant is missing")
        customers = {
            c.id: c
            for c in session.exec(select(Customer).where(col(Customer.tenant_id) == tenant_id))
        }
        invoices = session.exec(
            select(Invoice).where(col(Invoice.tenant_id) == tenant_id).order_by(col(Invoice.id))
        ).all()
        for invoice in invoices:
            customer = customers[invoice.customer_id]
            request = EnqueueRequest(
                tenant_id=tenant_id,
                kind="invoice_reminder",
                recipients=[c.email for c in invoice_contacts(session, invoice)],
                context=invoice_context(tenant=tenant, customer=customer, invoice=invoice, now=now),
                document=f"invoice:{invoice.id}",
                version=invoice.version,
                customer_id=customer.id,
                invoice_id=invoice.id,
            )
            services.outbox.enqueue(session, request, now=now)
        return len(invoices)


# --- databases ---------------------------------------------------------------------------------


def postgres_reason() -> str | None:
    """Why the PostgreSQL row cannot run, or None when it can."""
    try:
        engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # any failure means "not here"; the reason is reported
        return f"not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"
    return None


@contextmanager
def database(backend: str, workdir: Path) -> Iterator[str]:
    """A fresh, empty database URL: a new SQLite file, or a private PostgreSQL schema."""
    if backend == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="db-", dir=workdir))
        yield f"sqlite:///{folder / 'bench.db'}"
        return
    schema = f"bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(PG_ADMIN_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# --- the measurements --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One reminder as the pipeline sends it: DKIM-signed bytes, VERP sender, uid in them."""

    data: bytes
    sender: str
    uid: str


async def build_sample(workdir: Path) -> Sample:
    """Send one reminder through the real pipeline into a MemoryTransport and keep the bytes."""
    memory = MemoryTransport()
    with database("sqlite", workdir) as url:
        services = build_services(
            make_config(workdir, url, host="127.0.0.1", port=25), SystemClock(), memory
        )
        try:
            services.import_document(make_document(1, 1), tenant=TENANT)
            enqueue_reminders(services)
            await services.deliver()
            with session_scope(services.engine) as session:
                uid = session.exec(select(Message.uid)).one()
        finally:
            await services.close()
    sent = memory.sent[0]
    return Sample(sent.data, sent.sender, uid)


def raw_messages(sample: Sample, count: int) -> list[tuple[str, str, bytes]]:
    """``count`` copies of the sample, each with its own uid (Message-ID, VERP, boundaries)."""
    out = []
    for i in range(count):
        uid = secrets.token_hex(len(sample.uid) // 2)
        rcpt = f"ap@customer{i % max(1, count // 10):04d}.example"
        data = sample.data.replace(sample.uid.encode(), uid.encode())
        out.append((sample.sender.replace(sample.uid, uid), rcpt, data))
    return out


async def measure_raw(sink: Sink, messages: list[tuple[str, str, bytes]]) -> float:
    """Seconds to send ``messages`` over 16 connected clients (connecting is not timed)."""
    clients = [
        aiosmtplib.SMTP(hostname=sink.host, port=sink.port, local_hostname="bench.localhost")
        for _ in range(CONNECTIONS)
    ]
    await asyncio.gather(*(c.connect() for c in clients))
    pending = iter(messages)

    async def worker(client: aiosmtplib.SMTP) -> None:
        for sender, rcpt, data in pending:  # one shared iterator: each message is taken once
            await client.sendmail(sender, [rcpt], data)

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(c.quit() for c in clients))
    return elapsed


@dataclass(frozen=True)
class PipelineRun:
    enqueue_seconds: float
    deliver_seconds: float
    sent_rows: int
    sink_received: int

    def as_dict(self, messages: int) -> dict[str, float]:
        return {
            "enqueue_seconds": round(self.enqueue_seconds, 4),
            "deliver_seconds": round(self.deliver_seconds, 4),
            "deliver_rate": round(messages / self.deliver_seconds, 1),
            "end_to_end_rate": round(messages / (self.enqueue_seconds + self.deliver_seconds), 1),
            "sent_rows": self.sent_rows,
            "sink_received": self.sink_received,
        }


async def measure_pipeline(
    backend: str,
    sink: Sink,
    workdir: Path,
    messages: int,
    *,
    around: Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]] | None = None,
) -> PipelineRun:
    """Import, then time enqueue and one deliver pass; check every row ended SENT."""
    with database(backend, workdir) as url:
        config = make_config(workdir, url, host=sink.host, port=sink.port)
        services = build_services(config, SystemClock())
        try:
            report = services.import_document(
                make_document(messages, max(1, messages // 10)), tenant=TENANT
            )
            if report.errors:
                raise SystemExit(f"import refused records: {report.errors[:3]}")
            before = sink.received()
            started = time.perf_counter()
            enqueued = enqueue_reminders(services)
            enqueued_at = time.perf_counter()
            if around is None:
                result = await services.deliver()
            else:
                result = await around(services.deliver)
            finished = time.perf_counter()
            if enqueued != messages or result.sent != messages:
                raise SystemExit(
                    f"{backend}: enqueued {enqueued}, sent {result.sent} of {messages} "
                    f"({result.deferred} deferred, {result.failed} failed, "
                    f"{result.throttled} throttled)"
                )
            with session_scope(services.engine) as session:
                sent_rows = session.exec(
                    select(sa.func.count())
                    .select_from(Message)
                    .where(col(Message.status) == MessageStatus.SENT)
                ).one()
        finally:
            await services.close()
    received = sink.wait_for(before + messages) - before
    if sent_rows != messages or received != messages:
        raise SystemExit(f"{backend}: {sent_rows} rows SENT, sink took {received} of {messages}")
    return PipelineRun(enqueued_at - started, finished - enqueued_at, sent_rows, received)


# --- report ------------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def summarise(
    args: argparse.Namespace,
    sink: Sink,
    sample: Sample,
    raw_seconds: list[float],
    pipelines: dict[str, list[PipelineRun]],
    skipped: dict[str, str],
) -> dict[str, Any]:
    """The JSON result, with the rows run_all.py puts in the README."""
    n = args.messages
    raw_rate = _median([n / s for s in raw_seconds])
    kb = len(sample.data) / 1024
    table = [
        {
            "what": "raw aiosmtplib, 16 connections",
            "measured": f"{raw_rate:,.0f} msg/s",
            "target": "-",
            "notes": f"{n:,} prebuilt {kb:.1f} KB messages into {sink.name}",
        }
    ]
    result: dict[str, Any] = {
        "benchmark": "send",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "sink": sink.name,
        "messages": n,
        "runs": args.runs,
        "message_bytes": len(sample.data),
        "connections": CONNECTIONS,
        "raw": {"rate": round(raw_rate, 1), "seconds": [round(s, 4) for s in raw_seconds]},
        "pipeline": {},
        "target_ratio": TARGET_RATIO,
    }
    met = True
    for backend, runs in pipelines.items():
        rows = [r.as_dict(n) for r in runs]
        deliver = _median([r["deliver_rate"] for r in rows])
        e2e = _median([r["end_to_end_rate"] for r in rows])
        enqueue = _median([r["enqueue_seconds"] for r in rows])
        ratio = deliver / raw_rate if raw_rate else 0.0
        verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
        met = met and ratio >= TARGET_RATIO
        result["pipeline"][backend] = {
            "deliver_rate": round(deliver, 1),
            "end_to_end_rate": round(e2e, 1),
            "enqueue_seconds": round(enqueue, 4),
            "ratio": round(ratio, 3),
            "runs": rows,
        }
        label = "SQLite" if backend == "sqlite" else "PostgreSQL"
        table += [
            {
                "what": f"pipeline deliver, {label}",
                "measured": f"{deliver:,.0f} msg/s ({ratio:.0%} of raw)",
                "target": f">= {TARGET_RATIO:.0%} of raw ({verdict})",
                "notes": "claim, render, compose, DKIM rsa-sha256, send, record; 16 connections",
            },
            {
                "what": f"pipeline end to end, {label}",
                "measured": f"{e2e:,.0f} msg/s",
                "target": "-",
                "notes": f"enqueue {n:,} in one transaction ({enqueue:.2f} s) + deliver",
            },
        ]
    for backend, reason in skipped.items():
        result["pipeline"][backend] = {"skipped": reason}
    result["target_met"] = met
    result["table"] = table
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = ["| what | measured | target | notes |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {r['what']} | {r['measured']} | {r['target']} | {r['notes']} |" for r in result["table"]
    ]
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    generate_key(workdir / "dkim-s1.pem", DKIMAlgorithm.RSA_SHA256)
    sample = await build_sample(workdir)
    messages = raw_messages(sample, args.messages)
    backends = ["sqlite"]
    skipped: dict[str, str] = {}
    if "postgresql" in args.db:
        reason = postgres_reason()
        if reason is None:
            backends.append("postgresql")
        else:
            skipped["postgresql"] = reason
            print(f"PostgreSQL row skipped: {reason}", flush=True)
    if "sqlite" not in args.db:
        backends.remove("sqlite")
    sink = Sink.start(args.sink, workdir)
    print(f"sink: {sink.name} on {sink.host}:{sink.port}; message {len(sample.data)} bytes")
    raw_seconds: list[float] = []
    pipelines: dict[str, list[PipelineRun]] = {b: [] for b in backends}
    try:
        for i in range(args.runs):  # interleaved, so drift in the machine hits every row alike
            before = sink.received()
            raw_seconds.append(await measure_raw(sink, messages))
            took = sink.wait_for(before + args.messages) - before
            if took != args.messages:
                raise SystemExit(f"raw: the sink took {took} of {args.messages}")
            line = f"run {i + 1}: raw {args.messages / raw_seconds[-1]:,.0f} msg/s"
            for backend in backends:
                one = await measure_pipeline(backend, sink, workdir, args.messages)
                pipelines[backend].append(one)
                line += (
                    f"; {backend} enqueue {one.enqueue_seconds:.2f} s, "
                    f"deliver {args.messages / one.deliver_seconds:,.0f} msg/s"
                )
            print(line, flush=True)
        result = summarise(args, sink, sample, raw_seconds, pipelines, skipped)
        if args.profile:
            result["profile"] = await profile_pipeline(sink, workdir, args.messages, args.top)
    finally:
        sink.stop()
    return result


def print_profile(profile: dict[str, Any]) -> None:
    print(f"\nprofile of one SQLite deliver pass ({profile['profiled_seconds']} s own time):")
    for area, share in profile["areas"].items():
        print(f"  {share:6.1%}  {area}")
    print("\n  own s    cum s     calls  function")
    for h in profile["hotspots"]:
        print(
            f"  {h['own_seconds']:6.3f}  {h['cumulative_seconds']:7.3f}  {h['calls']:8d}  "
            f"{h['function']}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="emails per measurement")
    parser.add_argument("--runs", type=int, default=3, help="measurements; medians are reported")
    parser.add_argument("--sink", choices=("auto", "smtp-sink", "aiosmtpd"), default="auto")
    parser.add_argument(
        "--db", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"]
    )
    parser.add_argument("--profile", action="store_true", help="also profile one SQLite pass")
    parser.add_argument("--top", type=int, default=25, help="hotspots listed by --profile")
    parser.add_argument("--output", type=Path, default=RESULTS / "send.json")
    parser.add_argument("--serve-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_sink is not None:
        asyncio.run(serve_sink(args.serve_sink))
        return 0
    if args.messages < 1 or args.runs < 1:
        raise SystemExit("--messages and --runs must be at least 1")
    # The Config reads DUNMAIL_* overrides from the environment; the bench wants none of them.
    for name in [n for n in os.environ if re.match(r"DUNMAIL_(?!BENCH_)", n, re.IGNORECASE)]:
        del os.environ[name]
    with tempfile.TemporaryDirectory(prefix="dunmail-bench-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    print()
    print(markdown(result))
    if "profile" in result:
        print_profile(result["profile"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
