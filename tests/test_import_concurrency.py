"""A big ``dunmail import`` beside a running engine: short batches keep logins, link opens and
inbound mail answering on SQLite; one import per tenant (the second exits 3 in one line, or
waits); a killed import keeps its batches and a re-run completes it with no email twice; the
engine leaves a tenant's half-imported ledger alone; the exit-code table of the README for
``import``, ``tick``, ``deliver`` and ``send``.

Imports run as real processes (``python -m dunmail.cli import``), against the same database file
as the engine side in this process (the web app over httpx, the inbound SMTP server on loopback).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from dunmail.app import Services, build_services
from dunmail.config import load_config
from mailer.clock import FixedClock
from mailer.db import make_engine, session_scope
from mailer.ledger.importlock import ImportLocks, tenants_importing
from mailer.ledger.models import Customer, Event, ImportLock, Invoice, Payment, Tenant
from mailer.outbound.links import issue_link
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.models import Message
from tests.conftest import DEMO_DOC, NO_PDFS, START
from tests.test_cli import _env, dunmail, write_config

AT = START.isoformat()
PASSWORD = "correct horse battery staple"
REPLY = (
    b"From: Jane <jane@globex.example>\r\nTo: Acme <ar-inbox@acme.example>\r\n"
    b"Subject: Re: Invoice INV-1042\r\nMessage-ID: <r{n}@globex.example>\r\n\r\nPaid today.\r\n"
)


def big_document(customers: int, *, prefix: str = "C") -> dict[str, Any]:
    """``customers`` with one contact and one open invoice each; every tenth invoice paid in
    full by a payment received the day before ``AT`` (so it asks for a receipt: an event)."""
    received = (START.date() - timedelta(days=1)).isoformat()
    line = {"description": "Support hours", "quantity": "2", "unit_price": "95.00"}
    return {
        "customers": [
            {
                "id": f"{prefix}-{c:06d}",
                "name": f"Customer {c} Ltd",
                "locale": "en",
                "time_zone": "UTC",
                "contacts": [{"email": f"ap@{prefix.lower()}{c}.example", "roles": ["ap"]}],
            }
            for c in range(customers)
        ],
        "invoices": [
            {
                "id": f"{prefix}i-{c:06d}",
                "number": f"{prefix}-INV-{c:06d}",
                "customer": f"{prefix}-{c:06d}",
                "currency": "EUR",
                "issued_at": "2026-02-20",
                "due_at": "2026-03-20",
                "status": "open",
                "lines": [line],
            }
            for c in range(customers)
        ],
        "payments": [
            {
                "id": f"{prefix}p-{c:06d}",
                "customer": f"{prefix}-{c:06d}",
                "amount": "190.00",
                "currency": "EUR",
                "received_at": received,
                "invoices": [{"invoice": f"{prefix}i-{c:06d}", "amount": "190.00"}],
            }
            for c in range(0, customers, 10)
        ],
    }


def engine_config(tmp_path: Path, db_url: str, **database: object) -> Path:
    """The config both sides read: one relay tenant ("acme") with an AR inbox for replies."""
    path = tmp_path / "config.toml"
    no_pdfs = "".join(f"[tenants.acme.emails.{kind}]\nattach_pdf = false\n" for kind in NO_PDFS)
    extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in database.items())
    path.write_text(f"""
env = "dev"
[database]
url = "{db_url}"
{extra}
[relay]
host = "127.0.0.1"
port = {_closed_port()}
domain = "acme.example"
[tenants.acme]
name = "Acme Supplies"
email = "ar@acme.example"
reply_to = "ar-inbox@acme.example"
[[tenants.acme.dkim]]
domain = "acme.example"
selector = "s1"
key_file = "{tmp_path / "keys" / "s1.pem"}"
{no_pdfs}""")
    return path


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_import(config: Path, document: Path, *args: str) -> subprocess.Popen[str]:
    """``dunmail import DOCUMENT`` as its own process, as cron or an operator starts it."""
    command = [sys.executable, "-m", "dunmail.cli", "import", str(document), "--config"]
    return subprocess.Popen(
        [*command, str(config), "--at", AT, *args],
        cwd=config.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def write_document(tmp_path: Path, name: str, doc: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def said(stderr: str) -> list[str]:
    """What a command said on stderr, without the log lines of its start-up (a config warning
    such as DKIM alignment is logged, not said)."""
    log_line = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) ")
    return [line for line in stderr.strip().splitlines() if not log_line.match(line)]


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def count(engine: sa.Engine, table: Any) -> int:
    with Session(engine) as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


def lock_held(engine: sa.Engine) -> bool:
    return count(engine, ImportLock) > 0


# -- the engine side: the web app, the inbound server, and what a probe measures -------------


@dataclass
class Probe:
    """Latencies (seconds) per operation, and every failure as "operation: what"."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, name: str, seconds: float) -> None:
        self.latencies.setdefault(name, []).append(seconds)

    def worst(self) -> float:
        return max((max(v) for v in self.latencies.values() if v), default=0.0)

    def figures(self) -> dict[str, dict[str, float]]:
        """p50, p99 and max in milliseconds, and how many, per operation."""
        out = {}
        for name, values in self.latencies.items():
            ordered = sorted(values)
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            out[name] = {
                "count": len(values),
                "p50_ms": round(statistics.median(ordered) * 1000, 1),
                "p99_ms": round(p99 * 1000, 1),
                "max_ms": round(ordered[-1] * 1000, 1),
            }
        return out


@dataclass
class EngineSide:
    services: Services
    app: Any
    smtp_port: int
    link: str  # a view link to INV-1042
    user: str


@asynccontextmanager
async def engine_side(config_path: Path) -> AsyncIterator[EngineSide]:
    """The running engine's answering parts over the config's database: the web app (in this
    process, through httpx) and the inbound SMTP server on a loopback port; DEMO_DOC imported,
    a user to sign in and a link to open."""
    from bounce.inbound_smtp import build_inbound_addresses, start_inbound
    from dunmail.web.app import create_app
    from dunmail.web.users import create_user
    from mailer.config import InboundConfig

    # Its own build: the engine's side, beside import processes on the same config file.
    services = build_services(load_config(config_path), FixedClock(START), MemoryTransport())
    assert services.ledger.import_document(DEMO_DOC, tenant="acme").errors == []
    tenant_id = services.tenants.id("acme")
    with session_scope(services.engine) as session:
        create_user(
            session,
            tenant_id=tenant_id,
            email="clerk@acme.example",
            name="Clerk",
            password=PASSWORD,
            now=START,
        )
        invoice = session.exec(select(Invoice).where(col(Invoice.number) == "INV-1042")).one()
        link = issue_link(
            "view",
            tenant_id,
            f"invoice:{invoice.id}",
            invoice.version,
            key=services.links.signing,
            expires_at=START + timedelta(days=30),
        )
    inbound = InboundConfig.model_validate({"port": 0, "hostname": "mx.test"})
    addresses = build_inbound_addresses(services.config.tenants, services.config.relay)
    server = await start_inbound(inbound, addresses, services.inbound.receive)
    try:
        port = int(server.sockets[0].getsockname()[1])
        yield EngineSide(services, create_app(services), port, link, "clerk@acme.example")
    finally:
        server.close()
        await server.wait_closed()
        await services.close()


async def probe_once(side: EngineSide, probe: Probe, n: int) -> None:
    """One of each: /healthz, a link open (a write: the click), a sign-in (writes: the
    throttle's count, the session) and a reply stored by the inbound server (a write)."""
    transport = httpx.ASGITransport(app=side.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://engine.test") as client:

        async def timed(name: str, call: Callable[[], Any]) -> None:
            began = time.perf_counter()
            try:
                failure = await call()
            except Exception as exc:  # the probe's finding: what failed and how
                failure = f"{type(exc).__name__}: {exc}"
            probe.add(name, time.perf_counter() - began)
            if failure:
                probe.failures.append(f"{name}: {failure}")

        async def health() -> str | None:
            answer = await client.get("/healthz")
            return None if answer.status_code == 200 else f"{answer.status_code}"

        async def link() -> str | None:
            answer = await client.get(f"/l/{side.link}")
            return None if answer.status_code == 200 else f"{answer.status_code}"

        async def login() -> str | None:
            form = await client.get("/login")
            csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            data = {"email": side.user, "password": PASSWORD, "csrf": csrf, "next": "/inbox"}
            answer = await client.post("/login", data=data)
            client.cookies.clear()
            return None if answer.status_code in (200, 303) else f"{answer.status_code}"

        async def inbound() -> str | None:
            raw = REPLY.replace(b"{n}", str(n).encode())
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=side.smtp_port, timeout=60) as s:
                await s.sendmail("jane@globex.example", ["ar-inbox@acme.example"], raw)
            return None

        await timed("healthz", health)
        await timed("link open", link)
        await timed("login", login)
        await timed("inbound store", inbound)


async def probe_while(
    side: EngineSide, running: Callable[[], bool], *, interval: float = 0.02
) -> Probe:
    """Probe the engine side over and over while ``running()``, ``interval`` s apart."""
    probe = Probe()
    n = 0
    while running():
        n += 1
        await probe_once(side, probe, n)
        await asyncio.sleep(interval)
    return probe


# -- the tests -----------------------------------------------------------------------------------


BOUND = 2.0  # seconds: no operation of the engine may wait longer while an import runs
CUSTOMERS = 250  # with an invoice each, and a payment for one in ten: seconds of import


async def test_the_engine_keeps_answering_while_a_big_import_runs(tmp_path: Path) -> None:
    """On SQLite, where a writer holds the one write lock for its whole transaction: the
    import used to be one transaction, so every write of the engine waited for all of it."""
    config = engine_config(tmp_path, f"sqlite:///{tmp_path / 'dunmail.db'}")
    document = write_document(tmp_path, "big.json", big_document(CUSTOMERS))
    async with engine_side(config) as side:
        await probe_once(side, Probe(), 0)  # warm: templates, argon2, the SMTP session
        began = time.monotonic()
        importing = start_import(config, document)
        seen: set[int] = set()  # the customers the engine saw, round after round

        def running() -> bool:
            seen.add(count(side.services.engine, Customer))
            return importing.poll() is None

        probe = await probe_while(side, running)
        took = time.monotonic() - began
        out, err = importing.communicate()
        assert importing.returncode == 0, err
        assert f"customers {CUSTOMERS} created" in out
        assert count(side.services.engine, Customer) == CUSTOMERS + 1
    print(f"import of {CUSTOMERS} customers: {took:.1f} s; engine side: {probe.figures()}")
    assert probe.failures == []
    assert sum(len(v) for v in probe.latencies.values()) >= 8
    # The engine saw the batches land one after another, not the whole file at the end.
    assert len({n for n in seen if 1 < n < CUSTOMERS + 1}) >= 2, sorted(seen)
    # One transaction kept every write waiting for most of the import; batches, for one batch.
    assert probe.worst() < min(BOUND, took / 2), (took, probe.figures())


def test_a_second_import_exits_3_in_one_line_or_waits_for_the_first(
    tmp_path: Path, db_url: str
) -> None:
    config = engine_config(tmp_path, db_url)
    assert dunmail(config, "init").returncode == 0
    engine = make_engine(db_url)
    first = start_import(config, write_document(tmp_path, "a.json", big_document(300)))
    try:
        wait_for(lambda: lock_held(engine), timeout=60, what="the first import's lock")
        small = write_document(tmp_path, "b.json", big_document(3, prefix="B"))
        second = dunmail(config, "import", str(small), "--at", AT, isolated=True)
        assert second.returncode == 3, second.stderr
        lines = said(second.stderr)
        assert len(lines) == 1 and "another import for this tenant is running" in lines[0]
        assert "pid" in lines[0] and "Traceback" not in second.stderr
        waiting = start_import(config, small, "--wait", "120")
        out, err = waiting.communicate(timeout=180)
        assert waiting.returncode == 0, err
        # The first import holds its lock until its last batch is committed, so when the
        # waiting one is done all 300 of the first's customers are in. (Whether the first
        # process has exited yet is a matter of interpreter shutdown, not of the lock.)
        assert count(engine, Customer) == 303, "the waiting import ran beside the first one"
        assert "customers 3 created" in out
    finally:
        first.wait(timeout=180)
    assert first.returncode == 0
    assert count(engine, Customer) == 303 and not lock_held(engine)
    engine.dispose()


def test_a_killed_import_keeps_its_batches_and_a_rerun_completes_it_with_nothing_twice(
    tmp_path: Path, db_url: str
) -> None:
    customers = 300
    doc = big_document(customers)
    config = engine_config(tmp_path, db_url)
    assert dunmail(config, "init").returncode == 0
    engine = make_engine(db_url)
    document = write_document(tmp_path, "big.json", doc)
    killed = start_import(config, document)
    wait_for(
        lambda: count(engine, Payment) == 0 and count(engine, Invoice) > 100,
        timeout=120,
        what="some invoice batches committed",
    )
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    kept = count(engine, Invoice)
    assert 0 < kept <= customers and lock_held(engine)  # the dead import's lock is left
    assert count(engine, Customer) == customers  # the customers' batches all came first
    with Session(engine) as session:  # a dead process of this host holds the engine back no more
        assert tenants_importing(session) == set()

    # The same file again: its process is gone, so the lock is taken over at once.
    again = dunmail(config, "import", str(document), "--at", AT, isolated=True)
    assert again.returncode == 0, again.stderr
    assert f"invoices {customers - kept} created" in again.stdout
    assert not lock_held(engine)

    # Exactly what one clean import gives: every record once, every receipt asked for once.
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    clean_url = f"sqlite:///{clean_dir / 'clean.db'}"
    clean_config = engine_config(clean_dir, clean_url)
    assert dunmail(clean_config, "import", str(document), "--at", AT).returncode == 0
    clean = make_engine(clean_url)
    for table in (Customer, Invoice, Payment, Event):
        assert count(engine, table) == count(clean, table), table.__name__

    def events(e: sa.Engine) -> list[tuple[str, str]]:
        with Session(e) as session:
            return sorted((r.kind, r.key) for r in session.exec(select(Event)).all())

    assert events(engine) == events(clean) and len(events(engine)) == customers // 10
    # Nothing twice once the engine sends: one receipt per payment in the outbox.
    tick = dunmail(config, "tick", "--at", (START + timedelta(minutes=10)).isoformat())
    assert tick.returncode in (0, 5), tick.stderr
    with Session(engine) as session:
        receipts = session.exec(
            select(Message.customer_id).where(col(Message.kind) == "payment_receipt")
        ).all()
    assert len(receipts) == len(set(receipts)) == customers // 10
    engine.dispose()
    clean.dispose()


async def test_the_engine_leaves_a_tenant_alone_while_its_import_holds_the_lock(
    tmp_path: Path, db_url: str
) -> None:
    """An invoice in, its payment in a later batch: the dunning pass must not chase the
    invoice in between. It waits for the import; delivery and other tenants do not."""
    clock = FixedClock(START)
    config = load_config(engine_config(tmp_path, db_url))
    # Its own build: the engine, from the config file an import process shares with it.
    services = build_services(config, clock, MemoryTransport())
    try:
        assert services.ledger.import_document(DEMO_DOC, tenant="acme").errors == []
        clock.advance(timedelta(minutes=10))  # past the grace period: INV-1042 is due
        locks = ImportLocks(services.engine)
        with locks.held(services.tenants.id("acme")):
            dunning, _ = await services.dunning.tick()
            assert dunning.total_queued == 0
        dunning, _ = await services.dunning.tick()
        assert dunning.total_queued == 1
    finally:
        await services.close()


# -- the exit-code table -------------------------------------------------------------------------


@pytest.fixture
def unavailable(tmp_path: Path) -> Path:
    """A config whose database does not answer (PostgreSQL on a port nobody listens on)."""
    return write_config(tmp_path, f"postgresql://dunmail@127.0.0.1:{_closed_port()}/x", 25)


@pytest.mark.parametrize(
    "command",
    [
        ["import", "doc.json"],
        ["tick"],
        ["deliver"],
        ["send", "--invoice", "INV-1042"],
    ],
    ids=["import", "tick", "deliver", "send"],
)
def test_a_database_that_does_not_answer_is_one_line_and_exit_3(
    unavailable: Path, command: list[str]
) -> None:
    (unavailable.parent / "doc.json").write_text(json.dumps(DEMO_DOC))
    result = dunmail(unavailable, *command, "--at", AT)
    assert result.returncode == 3, result.stdout + result.stderr
    lines = said(result.stderr)
    assert len(lines) == 1 and "the database is busy or unavailable" in lines[0], lines
    assert "Traceback" not in result.stderr


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Path]:
    """A SQLite ledger with DEMO_DOC, its relay on a port nobody listens on."""
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'd.db'}", _closed_port())
    (tmp_path / "doc.json").write_text(json.dumps(DEMO_DOC))
    assert dunmail(config, "import", "doc.json", "--at", AT).returncode == 0
    yield config


def test_the_exit_code_table(ledger: Path, tmp_path: Path) -> None:
    """The README's table, command by command: 0 done, 1 import with invalid records, 2 bad
    usage, config or input, 3 busy or I/O, 4 a manual send failed for good (tests/
    test_send_any_kind.py), 5 nothing could be delivered yet."""
    later = (START + timedelta(minutes=10)).isoformat()
    next_day = (START + timedelta(days=1)).isoformat()
    bad = {"invoices": [{"id": "x", "number": "X", "customer": "nobody"}]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    (tmp_path / "broken.json").write_text("{")
    expected = {
        ("import", "doc.json"): 0,
        ("import", "bad.json"): 1,
        ("import", "broken.json"): 2,
        ("import", "missing.json"): 3,
        ("import", "doc.json", "--tenant", "nobody"): 2,
        ("import", "doc.json", "--wait", "-1"): 2,
        ("tick", "--at", "not a time"): 2,
        ("deliver", "--at", "not a time"): 2,
        ("send", "--invoice", "INV-404"): 2,
        ("send", "--nonsense"): 2,
        # The relay does not answer: queued, retried later (send's 5: tests/test_cli.py).
        ("tick", "--at", later): 5,
        ("deliver", "--at", next_day): 5,
    }
    got = {}
    for args, _ in expected.items():
        at = () if "--at" in args else ("--at", AT)
        result = dunmail(ledger, *args, *at)
        got[args] = result.returncode
        if result.returncode:  # (tests/test_cli.py's in_process shows exit 0 as a traceback)
            assert "Traceback" not in result.stderr, (args, result.stderr)
    assert got == expected

    # A tenant's import running: the next one is busy, 3, whatever the command line.
    engine = make_engine(f"sqlite:///{tmp_path / 'd.db'}")
    with Session(engine) as session:
        tenant_id = session.exec(select(Tenant.id)).one()
    assert tenant_id is not None
    with ImportLocks(engine).held(tenant_id):
        busy = dunmail(ledger, "import", "doc.json", "--at", AT)
        assert busy.returncode == 3 and len(said(busy.stderr)) == 1
    engine.dispose()
    assert dunmail(ledger, "import", "doc.json", "--at", AT).returncode == 0
