"""A day of AR work replayed from the CLI with ``--at``, into a real SMTP server; and two
``dunmail tick`` processes on one PostgreSQL sending 500 reminders exactly once."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import _PG_SKIP, DEMO_DOC
from tests.test_cli import Sink, _env, dunmail, start_sink, write_config


@pytest.fixture
def sink(tmp_path: Path) -> Sink:
    server = start_sink(tmp_path)
    yield server  # type: ignore[misc]
    server.stop()


def _import(config: Path, doc: dict[str, object], at: str) -> None:
    path = config.parent / "doc.json"
    path.write_text(json.dumps(doc))
    result = dunmail(config, "import", str(path), "--at", at)
    assert result.returncode == 0, result.stderr


def test_a_day_of_dunning_replayed_from_the_cli(tmp_path: Path, db_url: str, sink: Sink) -> None:
    if db_url.startswith("sqlite") and _PG_SKIP is None:
        pytest.skip("the CLI replay runs once, on PostgreSQL; test_dunning runs each rule on both")
    config = write_config(tmp_path, db_url, sink.port)
    doc = copy.deepcopy(DEMO_DOC)
    second = {**doc["invoices"][0], "id": "i-2", "number": "INV-2"}  # type: ignore[index]
    doc["invoices"] = [doc["invoices"][0], second]  # type: ignore[index]
    _import(config, doc, "2026-03-02T09:00:00+00:00")

    # Minute 3: INV-2 goes out by hand from the ERP, so only INV-1042 is auto-sent.
    marked = dunmail(config, "mark-sent", "--invoice", "INV-2", "--at", "2026-03-02T09:03:00Z")
    assert marked.returncode == 0, marked.stderr
    plan = dunmail(config, "plan", "--at", "2026-03-02T09:06:00Z", "--json")
    assert plan.returncode == 0, plan.stderr
    decisions = {e["document"]: e for e in json.loads(plan.stdout)}
    assert decisions["INV-1042"]["send"] == "new_invoice"
    assert decisions["INV-1042"]["to"] == ["billing@globex.example", "ap@globex.example"]
    assert decisions["INV-2"]["send"] is None

    tick = dunmail(config, "tick", "--at", "2026-03-02T09:06:00Z")
    assert tick.returncode == 0, tick.stderr
    assert "queued 1 new_invoice" in tick.stdout and "sent 1" in tick.stdout
    # one email, one copy in its own envelope to each of billing@ and ap@
    assert list(Counter(sink.accepted()).values()) == [2]

    # A dispute on INV-2 until 3 April; INV-1042 is chased on 1 April, INV-2 is not.
    held = dunmail(
        config, "hold", "place", "--invoice", "INV-2", "--reason", "dispute",
        "--until", "2026-04-03", "--at", "2026-03-20T10:00:00Z",
    )  # fmt: skip
    assert held.returncode == 0, held.stderr
    assert "until 2026-04-03" in held.stdout
    listed = dunmail(config, "hold", "list", "--json", "--at", "2026-03-21T00:00:00Z")
    assert [h["invoice"] for h in json.loads(listed.stdout)] == ["INV-2"]
    why = dunmail(config, "plan", "--customer", "C-1", "--at", "2026-04-01T08:00:00Z", "--json")
    reasons = {e["document"]: e["why"] for e in json.loads(why.stdout)}
    assert reasons["INV-2"].startswith("on hold (dispute) until 2026-04-03")

    tick = dunmail(config, "tick", "--at", "2026-04-01T08:00:00Z")
    assert "queued 1 late_payment_reminder" in tick.stdout, tick.stdout
    tick = dunmail(config, "tick", "--at", "2026-04-03T08:00:00Z")
    assert "queued 1 late_payment_reminder" in tick.stdout, tick.stdout  # INV-2 resumes
    copies = Counter(sink.accepted())
    assert len(copies) == 3 and set(copies.values()) <= {1, 2}, copies  # a copy per recipient

    outbox = json.loads(dunmail(config, "outbox", "--json").stdout)
    assert Counter((r["kind"], r["document"], r["status"]) for r in outbox) == Counter(
        {
            ("new_invoice", "INV-1042", "sent"): 1,
            ("late_payment_reminder", "INV-1042", "sent"): 1,
            ("late_payment_reminder", "INV-2", "sent"): 1,
        }
    )

    bad = dunmail(config, "hold", "place", "--reason", "dispute", "--at", "2026-04-03T09:00:00Z")
    assert bad.returncode == 2 and "one invoice (--invoice) or one customer" in bad.stderr
    bad = dunmail(config, "tick", "--at", "yesterday")
    assert bad.returncode == 2 and "--at 'yesterday' is not an ISO 8601 time" in bad.stderr


def _reminders_only(
    tmp_path: Path, db_url: str, sink: Sink, *, invoices: int, customers: int, extra: str = ""
) -> Path:
    """A config and ledger of ``invoices`` open invoices that already went out from the ERP
    (new-invoice emails off), all due 2026-03-31: at 2026-04-01 08:00 each owes one reminder."""
    config = write_config(tmp_path, db_url, sink.port)
    section = "[tenants.acme.emails.new_invoice]\n"
    assert section in config.read_text()
    config.write_text(config.read_text().replace(section, section + "enabled = false\n") + extra)
    people = [
        {"id": f"C-{c}", "name": f"Customer {c}", "contacts": [{"email": f"ap@c{c}.example"}]}
        for c in range(customers)
    ]
    rows = [
        {
            "id": f"i-{n}",
            "number": f"INV-{n}",
            "customer": f"C-{n % customers}",
            "currency": "EUR",
            "issued_at": "2026-03-01",
            "due_at": "2026-03-31",
            "status": "open",
            "lines": [{"description": "Support", "quantity": "1", "unit_price": "120.00"}],
        }
        for n in range(invoices)
    ]
    _import(config, {"customers": people, "invoices": rows}, "2026-03-02T09:00:00Z")
    return config


@pytest.mark.slow
def test_two_tick_processes_on_postgresql_send_500_reminders_exactly_once(
    tmp_path: Path, db_url: str, sink: Sink
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SKIP LOCKED sharing is PostgreSQL's; SQLite serialises writers")
    # 500 reminders are three claims of the dunning pass (delivery.batch_size, 200): the two
    # processes, released together, each take one before either could take the last.
    invoices = 500
    config = _reminders_only(tmp_path, db_url, sink, invoices=invoices, customers=100)

    at = "2026-04-01T08:00:00Z"  # due + 1: the late-payment step for all of them
    command = [sys.executable, "-m", "dunmail.cli", "tick", "--config", str(config), "--at", at]
    # A start gate: the table is locked until both processes wait on it, so a slow start of
    # one (imports on a loaded machine) cannot leave all the work to the other.
    gate = sa.create_engine(db_url)
    with gate.connect() as held, gate.connect() as watch:
        held.execute(sa.text("LOCK TABLE invoice IN EXCLUSIVE MODE"))
        workers = [
            subprocess.Popen(
                command, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True,
            )
            for _ in range(2)
        ]  # fmt: skip
        waiting = sa.text(
            "select count(distinct pid) from pg_locks "
            "where relation = 'invoice'::regclass and not granted"
        )
        deadline = time.monotonic() + 120
        while watch.execute(waiting).scalar() != 2:
            assert time.monotonic() < deadline, "the two processes never reached the table"
            assert all(w.poll() is None for w in workers), "a process ended before the gate"
            time.sleep(0.05)
        held.rollback()  # both released at once
    gate.dispose()
    outputs = [w.communicate(timeout=240) for w in workers]
    for worker, (_, errors) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, errors
    queued = [int(out.split("queued ")[1].split()[0]) for out, _ in outputs]
    assert sum(queued) == invoices
    assert all(q > 0 for q in queued), f"one process did all the work: {queued}"

    accepted = sink.accepted()
    assert len(accepted) == invoices and len(set(accepted)) == invoices
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            per_invoice = conn.execute(
                sa.text("select invoice_id, count(*), min(status) from message group by invoice_id")
            ).all()
    finally:
        engine.dispose()
    assert len(per_invoice) == invoices
    assert {(count, status) for _, count, status in per_invoice} == {(1, "sent")}


def _count(db_url: str, sql: str) -> int:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar() or 0)
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_tick_killed_mid_pass_loses_nothing_and_queues_nothing_twice(
    tmp_path: Path, db_url: str, sink: Sink
) -> None:
    """SIGKILL ``dunmail tick`` between two committed batches of its dunning pass (of 20
    invoices each: 300 invoices are fifteen batches, and the kill follows the first commit)."""
    invoices = 300
    config = _reminders_only(
        tmp_path, db_url, sink, invoices=invoices, customers=50,
        extra="[delivery]\nbatch_size = 20\n",
    )  # fmt: skip
    at = "2026-04-01T08:00:00Z"
    worker = subprocess.Popen(
        [sys.executable, "-m", "dunmail.cli", "tick", "--config", str(config), "--at", at],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while (queued := _count(db_url, "select count(*) from message")) == 0:
            assert time.monotonic() < deadline and worker.poll() is None, "no batch committed"
            time.sleep(0.01)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    at_kill = _count(db_url, "select count(*) from message")
    assert 0 < queued <= at_kill < invoices, "the kill did not land mid-pass"
    # Each committed batch holds its emails and the invoices' new state together.
    assert at_kill == _count(db_url, "select count(*) from invoice where dunning_step > 0")

    # The next tick, after the dead worker's leases, finishes the job: each invoice once.
    later = "2026-04-01T08:06:00Z"
    result = dunmail(config, "tick", "--at", later)
    assert result.returncode == 0, result.stderr
    assert _count(db_url, "select count(*) from message") == invoices
    assert _count(db_url, "select count(distinct invoice_id) from message") == invoices
    assert _count(db_url, "select count(*) from message where status = 'sent'") == invoices
    accepted = sink.accepted()
    assert len(accepted) == len(set(accepted)) == invoices
