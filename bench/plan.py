"""Dunning scheduler: one pass over a large ledger, with reminders due and with nothing due.

    PYTHONPATH=. python bench/plan.py [--sizes 10000 100000 1000000] [--db sqlite postgresql]
                                      [--runs 1] [--empty-runs 7] [--quick] [--profile]

For each size (open invoices, 20 per customer, one contact per customer) and database (a SQLite
file; a private PostgreSQL schema at ``$DUNMAIL_BENCH_POSTGRES`` when one answers):

* build: the tenant through ``build_services`` (which also creates the schema), then customers,
  contacts and invoices in bulk (PostgreSQL ``COPY``; SQLite ``executemany`` on the driver),
  then ``VACUUM ANALYZE`` on PostgreSQL (what autovacuum does after a load; SQLite gets none, as in
  production, unless ``--analyze``). Every invoice is open, already sent, with a balance. Its
  dunning state (step, repeats, last reminder, ``next_action_at``) is what the passes before
  would have left at the end of the previous business day: ``scheduler.cadence.evaluate`` is run
  at each of its due times, once per due date. Due dates run from 60 days before the measured
  day to 29 days after it (30-day terms: every invoice was issued and sent before), with the
  tenant's default "standard" cadence; ``--due-share`` (1.5 %) of the invoices have a step or a
  repeat on the measured day, the others wait for a later day (or have finished their cadence).
* measure, in a fresh ``spawn``ed process, so the build does not count in its memory:
  ``build_services``, one warm-up pass at the previous pass's instant (nothing is due then: it
  opens the connection and compiles the claim), then ``services.dunning.invoices.run_pass(now)`` at
  Wednesday 2026-03-11 10:00 UTC (customers in UTC: inside the 08:00-18:00 window), which must
  evaluate and queue exactly the invoices due, one email each, without errors; then
  ``--empty-runs`` passes at the same instant, with nothing left due (median). Peak RSS is the
  process's ``ru_maxrss`` after those passes (imports and ``build_services`` included).
  ``--runs N`` repeats the due pass (the due invoices and the outbox are put back in between)
  and reports the median.

The issue's targets (issue 4), at 1,000,000 invoices over 50,000 customers: the due pass within
10 s on PostgreSQL and 20 s on SQLite, the pass with nothing due within 100 ms, peak RSS within
300 MB; and how the time grows from 10 k to 100 k to 1 M invoices. ``--profile`` runs the due
pass of the largest size once more under cProfile on each database (after the timed runs, so
the figures are not affected), counts the SQL statements it sends, and saves
``bench/results/plan-<db>.prof``. Results go to stdout and ``bench/results/plan.json`` (a
``table`` for bench/run_all.py). Arguments this script does not know are ignored with a note.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import multiprocessing
import os
import platform
import pstats
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from enum import Enum
from itertools import islice
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from bench import _hotspots
from bench._workload import TENANT, database, make_config, postgres_reason
from dunmail.app import Services, build_services
from mailer.clock import FixedClock
from mailer.ledger.models import Customer, Invoice, InvoiceStatus
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.models import Message, MessageRecipient
from scheduler.cadence import DunningState, InvoiceFacts, Rules, evaluate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}

NOW = datetime(2026, 3, 11, 10, 0, tzinfo=UTC)  # a Wednesday, inside the 08:00-18:00 window
LAST_PASS = datetime(2026, 3, 10, 18, 0, tzinfo=UTC)  # the previous pass: Tuesday's closing
SIZES = (10_000, 100_000, 1_000_000)
INVOICES_PER_CUSTOMER = 20  # 1,000,000 invoices over 50,000 customers
DUE_SHARE = 0.015  # invoices with a cadence step (or a repeat) on the measured day
TERMS_DAYS = 30  # issued 30 days before the due date, and sent that morning at 09:00
# Due dates from 60 days before the measured day to 29 days after (issued by the day before).
DUE_DAYS = range(-60, TERMS_DAYS)
AMOUNTS = tuple(4_900 + 1_250 * k for k in range(97))  # minor units: distinct balances

TARGET_SIZE = 1_000_000
TARGET_PASS_SECONDS = {"postgresql": 10.0, "sqlite": 20.0}
TARGET_EMPTY_MS = 100.0
TARGET_RSS_MB = 300.0

PASS_STAGES = (
    ("claim (select due ... for update)", "scheduler/dunning.py", "_claim"),
    ("decide (the batches)", "scheduler/dunning.py", "_decide"),
    ("  customers by id (query per batch)", "scheduler/dunning.py", "customers_by_id"),
    ("  active holds (query per batch)", "scheduler/dunning.py", "active_holds"),
    ("  evaluate (pure cadence)", "scheduler/cadence.py", "evaluate"),
    ("  Triggers.enqueue_batch", "scheduler/triggers.py", "enqueue_batch"),
    ("    contacts (query per batch)", "mailer/ledger/queries.py", "contacts_by_customer"),
    ("    invoice_context", "mailer/content/context.py", "invoice_context"),
    ("    Queue.enqueue_many (executemany inserts)", "mailer/outbound/queue.py", "enqueue_many"),
    ("  state update (executemany)", "scheduler/dunning.py", "_update_invoices"),
    ("commits (batch commit)", "sqlalchemy/orm/session.py", "commit"),
)
DRIVER_STAGES = {
    "postgresql": ("driver: psycopg execute", "psycopg/cursor.py", "execute"),
    "sqlite": ("driver: sqlite3 execute", "~", "<method 'execute' of 'sqlite3.Cursor' objects>"),
}


# --- the ledger ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """The invoices of one due date: their dates and the state the passes before left."""

    due_at: datetime
    issued_at: datetime
    sent_at: datetime
    step: int
    repeats: int
    last_dunned_at: datetime | None
    next_action_at: datetime | None
    kind_now: str | None  # what a pass at NOW queues for them

    @property
    def due(self) -> bool:
        return self.next_action_at is not None and self.next_action_at <= NOW


def utc_rules(services: Services) -> Rules:
    """The bench tenant's rules for a customer in UTC with the default cadence."""
    tenant_id = services.tenants.id(TENANT)
    probe = Customer(tenant_id=tenant_id, external_id="probe", name="probe", time_zone="UTC")
    return services.dunning.rules.rules_for(tenant_id, probe)


def profiles(rules: Rules) -> list[Profile]:
    """One profile per due date in DUE_DAYS around NOW, its state settled at LAST_PASS."""
    out = []
    for offset in DUE_DAYS:
        due_at = datetime.combine(NOW.date() + timedelta(days=offset), clock_time(), tzinfo=UTC)
        issued_at = due_at - timedelta(days=TERMS_DAYS)
        sent_at = issued_at + timedelta(hours=9)
        facts = InvoiceFacts(
            number="profile",
            status=InvoiceStatus.OPEN,
            balance_minor=AMOUNTS[0],
            currency="EUR",
            issued_at=issued_at,
            due_at=due_at,
            updated_at=issued_at,
            chase=True,
            state=DunningState(sent_at=sent_at),
        )
        # The pass that sent the invoice set its next time, and every pass after it ran on
        # time: the invoice was looked at exactly at each next_at.
        first = evaluate(facts, rules, sent_at)
        state, next_at = first.state, first.next_at
        while next_at is not None and next_at <= LAST_PASS:
            result = evaluate(replace(facts, state=state), rules, next_at)
            state, next_at = result.state, result.next_at
        now_result = evaluate(replace(facts, state=state), rules, NOW)
        out.append(
            Profile(
                due_at=due_at,
                issued_at=issued_at,
                sent_at=sent_at,
                step=state.step,
                repeats=state.repeats,
                last_dunned_at=state.last_dunned_at,
                next_action_at=next_at,
                kind_now=now_result.action.kind if now_result.action else None,
            )
        )
    return out


@dataclass(frozen=True)
class Layout:
    """Which profile each invoice gets: ``wanted`` of ``size`` due, spread evenly."""

    size: int
    due_share: float
    profiles: tuple[Profile, ...]

    @property
    def customers(self) -> int:
        return max(1, self.size // INVOICES_PER_CUSTOMER)

    @property
    def wanted(self) -> int:
        return round(self.size * self.due_share)

    def __iter__(self) -> Iterator[tuple[int, Profile]]:
        due = [p for p in self.profiles if p.due]
        quiet = [p for p in self.profiles if not p.due]
        if not due or not quiet:
            raise SystemExit("the profiles need due and not-due dates: check NOW and the cadence")
        d = q = 0
        for i in range(self.size):
            if (i + 1) * self.wanted // self.size != i * self.wanted // self.size:
                yield i, due[d % len(due)]
                d += 1
            else:
                yield i, quiet[q % len(quiet)]
                q += 1

    def due_invoices(self) -> Iterator[tuple[int, Profile]]:
        """(invoice id, profile) of every invoice due at NOW."""
        return ((i + 1, p) for i, p in self if p.due)

    def kinds_due(self) -> Counter[str]:
        return Counter(p.kind_now or "none" for _, p in self.due_invoices())

    def waiting(self) -> tuple[int, int]:
        """Invoices not due: (with a later next_action_at, with none: cadence finished)."""
        later = sum(1 for _, p in self if not p.due and p.next_action_at is not None)
        return later, self.size - self.wanted - later


# The columns the bench fills, in the order its row tuples have them. Any other column of the
# table is filled with its scalar default or NULL (see ``_columns``), so a new optional column
# does not break the build; a new required one stops it with its name.
CUSTOMER_COLUMNS = tuple(
    "id tenant_id external_id name locale time_zone chase cadence created_at updated_at".split()
)
CONTACT_COLUMNS = tuple("id tenant_id customer_id email name roles send_invoices".split())
INVOICE_COLUMNS = tuple(
    """id tenant_id customer_id external_id number version content_hash currency total_minor
    tax_minor balance_minor status issued_at due_at sent_at next_action_at dunning_step
    dunning_repeats last_dunned_at lines created_at updated_at""".split()
)


def _columns(table: str, given: Sequence[str]) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """``table``'s columns to write, ``given`` first, and the values the others all get."""
    columns = SQLModel.metadata.tables[table].columns
    if missing := [name for name in given if name not in columns]:
        raise SystemExit(f"bench/plan.py: {table} has no column {', '.join(missing)} any more")
    names, tail = list(given), []
    for column in columns:
        if column.name in given:
            continue
        if column.default is not None and getattr(column.default, "is_scalar", False):
            value = getattr(column.default, "arg", None)
        elif column.nullable:
            value = None
        elif column.server_default is not None:
            continue  # the database fills it
        else:
            raise SystemExit(f"bench/plan.py: fill the new required column {table}.{column.name}")
        names.append(column.name)
        tail.append(value.value if isinstance(value, Enum) else value)
    return tuple(names), tuple(tail)


def _storage(engine: Engine) -> Callable[[datetime | None], Any]:
    """A datetime as the database stores it: SQLite gets the text SQLAlchemy would bind
    (so our rows compare with the pass's bound ``now``), PostgreSQL the aware value (COPY)."""
    if engine.dialect.name != "sqlite":
        return lambda value: value
    column_type = Invoice.__table__.c.next_action_at.type  # type: ignore[attr-defined]
    process = column_type.dialect_impl(engine.dialect).bind_processor(engine.dialect)
    return lambda value: None if value is None else process(value)


def _amount_lines() -> list[tuple[int, str, str]]:
    """(amount, lines JSON, content hash) for each amount: one line, as the importer stores it."""
    out = []
    for amount in AMOUNTS:
        lines = json.dumps(
            [
                {
                    "description": "Support and hosting, monthly",
                    "quantity": "1",
                    "unit_price_minor": amount,
                    "tax_rate": None,
                    "net_minor": amount,
                    "tax_minor": 0,
                    "total_minor": amount,
                }
            ]
        )
        out.append((amount, lines, hashlib.sha256(lines.encode()).hexdigest()))
    return out


def invoice_rows(layout: Layout, tenant_id: int, stamp: Callable[[Any], Any]) -> Iterator[tuple]:
    """Every invoice row, in INVOICE_COLUMNS order, storage-ready."""
    amounts = _amount_lines()
    stored = {
        id(p): (
            stamp(p.issued_at),
            stamp(p.due_at),
            stamp(p.sent_at),
            stamp(p.next_action_at),
            p.step,
            p.repeats,
            stamp(p.last_dunned_at),
        )
        for p in layout.profiles
    }
    customers = layout.customers
    for i, profile in layout:
        issued, due, sent, next_at, step, repeats, last = stored[id(profile)]
        amount, lines, content_hash = amounts[i % len(amounts)]
        yield (
            i + 1,
            tenant_id,
            i % customers + 1,
            f"i-{i:07d}",
            f"INV-{i:07d}",
            1,
            content_hash,
            "EUR",
            amount,
            0,
            amount,
            InvoiceStatus.OPEN.value,
            issued,
            due,
            sent,
            next_at,
            step,
            repeats,
            last,
            lines,
            issued,
            issued,
        )


def customer_rows(count: int, tenant_id: int, stamp: Callable[[Any], Any]) -> Iterator[tuple]:
    created = stamp(NOW - timedelta(days=400))
    values = {
        "tenant_id": tenant_id,
        "locale": "en",
        "time_zone": "UTC",
        "chase": True,
        "cadence": None,
        "created_at": created,
        "updated_at": created,
    }
    for c in range(count):
        values |= {"id": c + 1, "external_id": f"C-{c:05d}", "name": f"Customer {c:05d} Ltd"}
        yield tuple(values[name] for name in CUSTOMER_COLUMNS)


def contact_rows(count: int, tenant_id: int) -> Iterator[tuple]:
    values: dict[str, Any] = {
        "tenant_id": tenant_id,
        "name": "Accounts payable",
        "roles": json.dumps(["ap"]),
        "send_invoices": True,
    }
    for c in range(count):
        values |= {"id": c + 1, "customer_id": c + 1, "email": f"ap@customer{c:05d}.example"}
        yield tuple(values[name] for name in CONTACT_COLUMNS)


def bulk_insert(
    conn: sa.Connection, table: str, given: Sequence[str], rows: Iterable[tuple]
) -> None:
    """Stream ``rows`` (values for ``given`` columns) into ``table``, the table's other columns
    at their defaults: COPY on PostgreSQL, the driver's executemany on SQLite."""
    columns, tail = _columns(table, given)
    if tail:
        rows = (row + tail for row in rows)
    names = ", ".join(f'"{c}"' for c in columns)
    driver = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        with driver.cursor() as cursor:  # type: ignore[union-attr]
            with cursor.copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row)
        return
    marks = ", ".join("?" for _ in columns)
    cursor = driver.cursor()  # type: ignore[union-attr]
    try:
        rows = iter(rows)
        while chunk := list(islice(rows, 50_000)):
            cursor.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({marks})', chunk)
    finally:
        cursor.close()


def build_ledger(url: str, workdir: Path, layout: Layout, *, analyze: bool) -> float:
    """Create the schema and tenant, load the ledger in bulk; the seconds it took."""
    started = time.perf_counter()
    services = build_services(
        make_config(workdir, url, None), FixedClock(LAST_PASS), MemoryTransport(), pdfs=False
    )
    engine = services.engine
    try:
        tenant_id = services.tenants.id(TENANT)
        stamp = _storage(engine)
        with engine.begin() as conn:
            bulk_insert(
                conn,
                "customer",
                CUSTOMER_COLUMNS,
                customer_rows(layout.customers, tenant_id, stamp),
            )
            bulk_insert(conn, "contact", CONTACT_COLUMNS, contact_rows(layout.customers, tenant_id))
            bulk_insert(conn, "invoice", INVOICE_COLUMNS, invoice_rows(layout, tenant_id, stamp))
            if engine.dialect.name == "postgresql":
                for table in ("customer", "contact", "invoice"):  # ids were given: move on
                    conn.execute(
                        sa.text(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f'(SELECT max(id) FROM "{table}"))'
                        )
                    )
        if engine.dialect.name == "postgresql":
            # What autovacuum does to a freshly loaded table, done now so it does not run
            # during the timed pass: statistics, visibility map and hint bits.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE customer, contact, invoice"))
        elif analyze:
            with engine.begin() as conn:  # in a transaction: the SQLite engine always opens one
                conn.execute(sa.text("ANALYZE"))
    finally:
        engine.dispose()
    return time.perf_counter() - started


# --- the measurement (in its own process) -------------------------------------------------------


@dataclass(frozen=True)
class Job:
    backend: str
    url: str
    workdir: str
    size: int
    due_share: float
    runs: int
    empty_runs: int
    profile: bool
    top: int


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _count(engine: Engine, table: type[Any]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _reset(engine: Engine, layout: Layout) -> None:
    """Put the due invoices back as the build left them and empty the outbox (untimed)."""
    table = Invoice.__table__  # type: ignore[attr-defined]
    update = (
        sa.update(table)
        .where(table.c.id == sa.bindparam("b_id"))
        .values(
            next_action_at=sa.bindparam("b_next"),
            dunning_step=sa.bindparam("b_step"),
            dunning_repeats=sa.bindparam("b_repeats"),
            last_dunned_at=sa.bindparam("b_last"),
        )
    )
    rows = [
        {
            "b_id": invoice_id,
            "b_next": p.next_action_at,
            "b_step": p.step,
            "b_repeats": p.repeats,
            "b_last": p.last_dunned_at,
        }
        for invoice_id, p in layout.due_invoices()
    ]
    with engine.begin() as conn:
        conn.execute(sa.delete(MessageRecipient.__table__))  # type: ignore[attr-defined]
        conn.execute(sa.delete(Message.__table__))  # type: ignore[attr-defined]
        if rows:
            conn.execute(update, rows)


def measure(job: Job) -> dict[str, Any]:
    """Build the services, warm up, time the due pass and the empty passes; check the result."""
    for name in [n for n in os.environ if re.match(r"DUNMAIL_(?!BENCH_)", n, re.IGNORECASE)]:
        del os.environ[name]
    clock = FixedClock(NOW)
    config = make_config(Path(job.workdir), job.url, None)
    services = build_services(config, clock, MemoryTransport(), migrate=False, pdfs=False)
    dunning = services.dunning.invoices
    layout = Layout(job.size, job.due_share, tuple(profiles(utc_rules(services))))
    expected = layout.kinds_due()
    rss_ready = _rss_mb()
    out: dict[str, Any] = {"rss_ready_mb": round(rss_ready, 1)}
    try:
        warm = dunning.run_pass(LAST_PASS)
        if warm.evaluated:
            raise SystemExit(f"{job.backend}: {warm.evaluated} invoices due before the pass")
        seconds: list[float] = []
        cpu: list[float] = []
        for run in range(job.runs):
            if run:
                _reset(services.engine, layout)
            started, cpu_started = time.perf_counter(), time.process_time()
            report = dunning.run_pass(NOW)
            seconds.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
            queued = _count(services.engine, Message)
            if (
                report.evaluated != layout.wanted
                or dict(report.queued) != dict(expected)
                or report.errors
                or queued != layout.wanted
            ):
                raise SystemExit(
                    f"{job.backend}, {job.size:,}: evaluated {report.evaluated} of "
                    f"{layout.wanted} due, queued {dict(report.queued)} (expected "
                    f"{dict(expected)}), {queued} outbox rows, errors {report.errors[:3]}"
                )
        empty = []
        for _ in range(job.empty_runs):
            started = time.perf_counter()
            nothing = dunning.run_pass(NOW)
            empty.append(time.perf_counter() - started)
            if nothing.evaluated:
                raise SystemExit(f"{job.backend}: {nothing.evaluated} still due after the pass")
        out |= {
            "pass_seconds": [round(s, 4) for s in seconds],
            "pass_cpu_seconds": [round(s, 4) for s in cpu],
            "empty_seconds": [round(s, 5) for s in empty],
            "evaluated": report.evaluated,
            "queued": dict(report.queued),
            "rss_peak_mb": round(_rss_mb(), 1),
        }
        if job.profile:
            out["profile"] = _profile_pass(services, layout, job)
    finally:
        services.engine.dispose()
    return out


def _profile_pass(services: Services, layout: Layout, job: Job) -> dict[str, Any]:
    """The due pass once more under cProfile, counting the statements sent."""
    _reset(services.engine, layout)
    statements: Counter[str] = Counter()

    def count(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        statements[_statement_kind(statement) + (" (executemany)" if many else "")] += 1

    sa.event.listen(services.engine, "before_cursor_execute", count)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    try:
        report = services.dunning.invoices.run_pass(NOW)
    finally:
        profiler.disable()
        sa.event.remove(services.engine, "before_cursor_execute", count)
    seconds = time.perf_counter() - started
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"plan-{job.backend}.prof"
    profiler.dump_stats(path)
    summary = _hotspots.summarise(
        pstats.Stats(profiler),
        stages=(*PASS_STAGES, DRIVER_STAGES[job.backend]),
        messages=max(1, report.evaluated),
        top=job.top,
        root=ROOT,
    )
    total = sum(statements.values())
    return {
        "size": job.size,
        "evaluated": report.evaluated,
        "wall_seconds": round(seconds, 3),
        "statements": total,
        "statements_per_due_invoice": round(total / max(1, report.evaluated), 2),
        "statement_kinds": dict(statements.most_common(12)),
        "stats_file": str(path.relative_to(ROOT)),
        **summary,
    }


def _statement_kind(statement: str) -> str:
    """``SELECT ... FROM contact``, ``INSERT INTO message``, ``SAVEPOINT``: a statement's kind."""
    words = statement.split()
    if words[0].upper() == "SELECT" and (tables := re.search(r"\bFROM\s+(\S+)", statement)):
        return f"SELECT ... FROM {tables[1]}"
    take = 3 if words[0].upper() in ("INSERT", "RELEASE") else 2
    return re.sub(r"_?\d+$", "", " ".join(words[:take]))


def run_measurement(job: Job) -> dict[str, Any]:
    """``measure`` in a fresh spawned process, so its RSS is the pass's own."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(measure, job).result()


# --- report -------------------------------------------------------------------------------------


def _size(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000} M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000} k"
    return f"{n:,}"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def build_table(result: dict[str, Any]) -> list[dict[str, str]]:
    """The README rows (what, measured, target, notes) from the result figures."""
    rows: list[dict[str, str]] = []
    share = f"{result['due_share']:.1%}"
    for backend, data in result["databases"].items():
        label = LABELS[backend]
        if "skipped" in data:
            rows.append(
                {
                    "what": f"dunning pass, {label}",
                    "measured": "not run",
                    "target": "-",
                    "notes": data["skipped"],
                }
            )
            continue
        sizes = data["sizes"]
        largest = sizes[-1]
        at_target = largest["invoices"] >= TARGET_SIZE
        for s in sizes[:-1]:
            rows.append(
                {
                    "what": f"dunning pass, {label}, {_size(s['invoices'])} invoices",
                    "measured": f"{s['pass_seconds']:.2f} s",
                    "target": "-",
                    "notes": f"{s['due']:,} due, {s['queued']:,} queued "
                    f"({s['emails_per_second']:,.0f} emails/s); nothing due "
                    f"{s['empty_ms']:.1f} ms; peak RSS {s['rss_peak_mb']:.0f} MB",
                }
            )
        n = largest["invoices"]
        limit = TARGET_PASS_SECONDS[backend]
        where = f"{_size(n)} invoices over {largest['customers']:,} customers"
        if at_target:
            pass_target = f"<= {limit:.0f} s ({verdict(largest['pass_met'])})"
            empty_target = f"<= {TARGET_EMPTY_MS:.0f} ms ({verdict(largest['empty_met'])})"
            rss_target = f"<= {TARGET_RSS_MB:.0f} MB ({verdict(largest['rss_met'])})"
        else:
            pass_target = f"- (<= {limit:.0f} s at {_size(TARGET_SIZE)}; not run)"
            empty_target = f"- (<= {TARGET_EMPTY_MS:.0f} ms at {_size(TARGET_SIZE)}; not run)"
            rss_target = f"- (<= {TARGET_RSS_MB:.0f} MB at {_size(TARGET_SIZE)}; not run)"
        runs = len(largest["runs"]["pass_seconds"])
        if backend == "postgresql":
            stats = "VACUUM ANALYZEd after the load, as autovacuum would"
        else:
            stats = "ANALYZEd" if result["sqlite_analyzed"] else "no ANALYZE, as in production"
        median_of = f"median of {runs}" if runs > 1 else "one pass"
        rows += [
            {
                "what": f"dunning pass, {label}, {_size(n)} invoices, {share} due",
                "measured": f"{largest['pass_seconds']:.2f} s",
                "target": pass_target,
                "notes": f"{where}; {largest['due']:,} due, {largest['queued']:,} emails queued "
                f"({largest['emails_per_second']:,.0f}/s); {largest['pass_cpu_seconds']:.1f} s "
                f"CPU in the engine process; {median_of}; ledger built in "
                f"{largest['build_seconds']:.1f} s, {stats}",
            },
            {
                "what": f"dunning pass, {label}, {_size(n)} invoices, nothing due",
                "measured": f"{largest['empty_ms']:.1f} ms",
                "target": empty_target,
                "notes": f"same instant, right after the due pass; median of "
                f"{len(largest['runs']['empty_seconds'])}",
            },
            {
                "what": f"dunning pass peak RSS, {label}, {_size(n)} invoices",
                "measured": f"{largest['rss_peak_mb']:.0f} MB",
                "target": rss_target,
                "notes": f"ru_maxrss of a fresh process (imports and build_services: "
                f"{largest['rss_ready_mb']:.0f} MB) after the due and empty passes",
            },
        ]
        if len(sizes) > 1:
            steps = " -> ".join(_size(s["invoices"]) for s in sizes)
            times = " -> ".join(f"{s['pass_seconds']:.2f} s" for s in sizes)
            factors = ", ".join(
                f"x{b['pass_seconds'] / a['pass_seconds']:.1f}"
                for a, b in zip(sizes, sizes[1:], strict=False)
            )
            empties = " -> ".join(f"{s['empty_ms']:.1f}" for s in sizes)
            rows.append(
                {
                    "what": f"dunning pass growth, {label}, {steps}",
                    "measured": f"{times} ({factors})",
                    "target": "-",
                    "notes": f"due invoices grow with the ledger ({share}), so linear is "
                    f"x10 a step; nothing due: {empties} ms",
                }
            )
    return rows


def markdown(rows: list[dict[str, str]]) -> str:
    lines = ["| what | measured | target | notes |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['what']} | {r['measured']} | {r['target']} | {r['notes']} |" for r in rows]
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------


def run_size(
    backend: str, size: int, args: argparse.Namespace, workdir: Path, profile: bool
) -> dict[str, Any]:
    """Build one ledger, measure it in a fresh process, drop it."""
    with database(backend, workdir) as url:
        try:
            # The profiles need the tenant's rules; a throwaway SQLite database gives them.
            layout = Layout(size, args.due_share, tuple(_profiles_for(workdir)))
            print(
                f"{backend}, {size:,} invoices over {layout.customers:,} customers: building ...",
                flush=True,
            )
            build = build_ledger(url, workdir, layout, analyze=args.analyze)
            later, finished = layout.waiting()
            print(
                f"  built in {build:.1f} s: {layout.wanted:,} due at {NOW:%a %Y-%m-%d %H:%M} "
                f"UTC, {later:,} due later, {finished:,} with their cadence finished",
                flush=True,
            )
            job = Job(
                backend=backend,
                url=url,
                workdir=str(workdir),
                size=size,
                due_share=args.due_share,
                runs=args.runs,
                empty_runs=args.empty_runs,
                profile=profile,
                top=args.top,
            )
            got = run_measurement(job)
        finally:
            if backend == "sqlite":
                shutil.rmtree(Path(url.removeprefix("sqlite:///")).parent, ignore_errors=True)
    pass_seconds = statistics.median(got["pass_seconds"])
    cpu_seconds = statistics.median(got["pass_cpu_seconds"])
    empty_ms = statistics.median(got["empty_seconds"]) * 1000
    queued = sum(got["queued"].values())
    row = {
        "invoices": size,
        "customers": layout.customers,
        "due": got["evaluated"],
        "queued": queued,
        "queued_by_kind": got["queued"],
        "not_due_later": later,
        "cadence_finished": finished,
        "build_seconds": round(build, 2),
        "pass_seconds": round(pass_seconds, 4),
        "pass_cpu_seconds": round(cpu_seconds, 4),
        "emails_per_second": round(queued / pass_seconds, 1),
        "empty_ms": round(empty_ms, 2),
        "rss_ready_mb": got["rss_ready_mb"],
        "rss_peak_mb": got["rss_peak_mb"],
        "runs": {
            "pass_seconds": got["pass_seconds"],
            "pass_cpu_seconds": got["pass_cpu_seconds"],
            "empty_seconds": got["empty_seconds"],
        },
    }
    print(
        f"  due pass {pass_seconds:.2f} s ({cpu_seconds:.2f} s CPU here; {queued:,} emails, "
        f"{queued / pass_seconds:,.0f}/s); "
        f"nothing due {empty_ms:.1f} ms; peak RSS {got['rss_peak_mb']:.0f} MB "
        f"({got['rss_ready_mb']:.0f} MB before the passes)",
        flush=True,
    )
    if "profile" in got:
        row["profile"] = got["profile"]
    return row


_PROFILES: list[Profile] = []


def _profiles_for(workdir: Path) -> list[Profile]:
    """The due-date profiles, from the bench tenant's rules (computed once)."""
    if not _PROFILES:
        url = f"sqlite:///{workdir / 'rules.db'}"
        services = build_services(
            make_config(workdir, url, None), FixedClock(NOW), MemoryTransport(), pdfs=False
        )
        try:
            _PROFILES.extend(profiles(utc_rules(services)))
        finally:
            services.engine.dispose()
    return _PROFILES


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=list(SIZES), help="invoices per ledger"
    )
    parser.add_argument(
        "--db", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"]
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10,000 invoices only")
    parser.add_argument("--runs", type=int, default=1, help="due passes per ledger (median)")
    parser.add_argument(
        "--empty-runs", type=int, default=7, help="passes with nothing due (median)"
    )
    parser.add_argument(
        "--due-share", type=float, default=DUE_SHARE, help="share of invoices due at the instant"
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile the largest due pass on each database"
    )
    parser.add_argument(
        "--analyze", action="store_true", help="ANALYZE SQLite too (PostgreSQL always is)"
    )
    parser.add_argument("--top", type=int, default=25, help="functions listed by --profile")
    parser.add_argument("--output", type=Path, default=RESULTS / "plan.json")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"plan.py: ignoring {' '.join(unknown)}")
    if args.quick:
        args.sizes = [SIZES[0]]
    args.sizes = sorted(set(args.sizes))
    if min(args.sizes) < INVOICES_PER_CUSTOMER or args.runs < 1 or args.empty_runs < 1:
        raise SystemExit(
            f"--sizes must be at least {INVOICES_PER_CUSTOMER}, --runs and --empty-runs at least 1"
        )
    if not 0 < args.due_share < 1:
        raise SystemExit("--due-share is a fraction between 0 and 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Config reads DUNMAIL_* overrides from the environment; the bench must not pick any up.
    for name in [n for n in os.environ if re.match(r"DUNMAIL_(?!BENCH_)", n, re.IGNORECASE)]:
        del os.environ[name]
    backends = list(dict.fromkeys(args.db))
    databases: dict[str, dict[str, Any]] = {}
    if "postgresql" in backends and (reason := postgres_reason()) is not None:
        backends.remove("postgresql")
        databases["postgresql"] = {"skipped": reason}
        print(f"PostgreSQL skipped: {reason}", flush=True)
    print(
        f"plan: dunning pass at {NOW:%a %Y-%m-%d %H:%M} UTC over "
        f"{', '.join(map(_size, args.sizes))} invoices ({args.due_share:.1%} due), "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="dunmail-bench-") as tmp:
        workdir = Path(tmp)
        for backend in backends:
            sizes = [
                run_size(backend, size, args, workdir, args.profile and size == args.sizes[-1])
                for size in args.sizes
            ]
            largest = sizes[-1]
            largest["pass_met"] = largest["pass_seconds"] <= TARGET_PASS_SECONDS[backend]
            largest["empty_met"] = largest["empty_ms"] <= TARGET_EMPTY_MS
            largest["rss_met"] = largest["rss_peak_mb"] <= TARGET_RSS_MB
            databases[backend] = {"sizes": sizes}
    result: dict[str, Any] = {
        "benchmark": "plan",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "now": NOW.isoformat(),
        "last_pass": LAST_PASS.isoformat(),
        "due_share": args.due_share,
        "sqlite_analyzed": args.analyze,
        "invoices_per_customer": INVOICES_PER_CUSTOMER,
        "targets": {
            "invoices": TARGET_SIZE,
            "pass_seconds": TARGET_PASS_SECONDS,
            "empty_ms": TARGET_EMPTY_MS,
            "rss_mb": TARGET_RSS_MB,
        },
        "databases": {b: databases[b] for b in args.db if b in databases},
    }
    judged = [
        d["sizes"][-1]
        for d in databases.values()
        if "sizes" in d and d["sizes"][-1]["invoices"] >= TARGET_SIZE
    ]
    result["target_met"] = bool(judged) and all(
        s["pass_met"] and s["empty_met"] and s["rss_met"] for s in judged
    )
    result["table"] = build_table(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print()
    print(markdown(result["table"]))
    for backend, data in result["databases"].items():
        for s in data.get("sizes", []):
            if "profile" in s:
                p = s["profile"]
                title = (
                    f"\nprofile: due pass, {LABELS[backend]}, {s['invoices']:,} invoices, "
                    f"{p['evaluated']:,} due; {p['statements']:,} SQL statements "
                    f"({p['statements_per_due_invoice']} per due invoice); us/msg = per due invoice"
                )
                print(_hotspots.render(title, p))
                print(
                    "  statements: "
                    + "; ".join(f"{n:,} {k}" for k, n in p["statement_kinds"].items())
                )
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
