"""Crash safety: SIGKILL a real ``dunmail run`` again and again; nothing lost, duplicates explained.

    python -m bench.crash [--messages 10000] [--kills 20] [--seed 7] [--only sqlite] [--keep]

For each database (a SQLite file, and a private schema on PostgreSQL at
``$DUNMAIL_BENCH_POSTGRES`` when it answers):

1. A recording SMTP server (``python -m tests.smtpd --record``) starts in its own process; it
   appends each accepted Message-ID to a file, flushed *before* its 250 reply goes out.
2. ``--messages`` invoices are imported (marked as already sent, so the dunning pass queues
   nothing of its own) and one ``invoice_reminder`` per invoice is enqueued in one transaction.
3. ``dunmail run`` starts as a real process. It is SIGKILLed ``--kills`` times and restarted each
   time. Kill moments are random but seeded: kill *i* fires once the server has accepted
   ``target[i]`` messages in all (a sorted sample of the queue, so every kill lands while mail
   is flowing) plus a random 0-``--jitter`` seconds, so it falls anywhere in the pipeline: mid
   claim, mid DATA, between a 250 and its commit. With chance ``--startup-share`` (0.2), or when
   its target is already passed as the process starts, a kill instead comes a random 0.05 to
   ``--startup-kill`` (2) seconds after the start: during imports, migration, the dunning pass
   or the first claim.
4. After the last restart the engine drains the queue (no queued rows left, or ``--timeout``)
   and is stopped with SIGTERM, which must exit 0.

Figures (from the database's ``message`` rows and the server's record):

* lost: a row whose Message-ID ``<uid@domain>`` was never accepted and that is not ``failed``.
  Must be 0.
* duplicates: Message-IDs accepted more than once. Each must be *explained*: every acceptance
  but the last fell in an engine life that ended in SIGKILL (so the 250 came before a commit
  that never happened), no life accepted it twice, and the row records exactly one attempt,
  ``sent``. The record holds Message-IDs, so a duplicate carries the same one by construction;
  that no message went out under two IDs is checked by matching the distinct IDs accepted one
  to one with the rows.

The lease is short (``--lease``, the minimum 5 s) so that rows held by a killed engine are
retried seconds later rather than after the default 300 s. Results go to stdout and
``bench/results/crash.json`` (a ``table`` for bench/run_all.py, plus every kill). The short
version runs in CI as ``tests/test_crash.py``. Arguments this script does not know are ignored.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from bench._workload import database, postgres_reason

# Run as a script, this file's folder is sys.path[0], where bench/bounce.py would shadow the
# bounce package the engine imports: take the folder off the path (as bench/bounce.py does).
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOMAIN = "crash.example"  # the tenant's DKIM domain: Message-IDs are <uid@crash.example>
TENANT = "bench"  # bench/_workload.py enqueues for this tenant
UNLIMITED = 100_000_000  # messages a minute: far above reach, so nothing is throttled


# --- the processes -----------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """The environment for our child processes: no stray DUNMAIL_* settings, the repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUNMAIL_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


@dataclass
class Recorder:
    """tests/smtpd.py in its own process, appending each accepted Message-ID to ``record``."""

    port: int
    record: Path
    process: subprocess.Popen[str]

    @classmethod
    def start(cls, workdir: Path) -> Recorder:
        record = workdir / "accepted.ids"
        command = [sys.executable, "-m", "tests.smtpd", "--port", "0", "--print-port"]
        process = subprocess.Popen(
            [*command, "--record", str(record)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        if process.stdout is None:
            raise RuntimeError("no pipe from the SMTP server")
        line = process.stdout.readline()
        if not line.strip().isdigit():
            process.kill()
            raise RuntimeError(f"the SMTP server did not start: {line!r}")
        return cls(int(line), record, process)

    def count(self) -> int:
        """Messages accepted so far (one line each, written before the 250)."""
        try:
            with self.record.open("rb") as f:
                return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 16), b""))
        except FileNotFoundError:
            return 0

    def accepted(self) -> list[str]:
        if not self.record.exists():
            return []
        return [line for line in self.record.read_text().splitlines() if line]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def write_config(workdir: Path, db_url: str, port: int, *, lease: int, batch: int) -> Path:
    """The engine's config file: one relay tenant at the server, DKIM, no PDFs, no web app."""
    from mailer.content.kinds import KINDS

    # Every PDF off, as bench/_workload.py does: then no PDF process pool starts with the engine.
    no_pdfs = "".join(
        f"[tenants.{TENANT}.emails.{kind}]\nattach_pdf = false\n"
        for kind, spec in KINDS.items()
        if spec.pdf is not None
    )
    path = workdir / "config.toml"
    path.write_text(
        f"""env = "dev"
[database]
url = "{db_url}"
[relay]
host = "127.0.0.1"
port = {port}
domain = "{DOMAIN}"  # From's domain too, so the tenant's key (d={DOMAIN}) aligns
max_connections = 8
local_hostname = "crash.localhost"
timeout_seconds = 10
[delivery]
batch_size = {batch}
lease_seconds = {lease}
poll_seconds = 0.5
domain_rate_per_minute = {UNLIMITED}
[web]
enabled = false
[inbound]
enabled = false
[capture]
enabled = false
[tenants.{TENANT}]
name = "Crash Test Supplies"
email = "ar@{DOMAIN}"
rate_per_minute = {UNLIMITED}
[tenants.{TENANT}.dunning]  # the queued reminders go at any hour, not in office hours only
window = "00:00-24:00"
business_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
{no_pdfs}[[tenants.{TENANT}.dkim]]
domain = "{DOMAIN}"
selector = "s1"
key_file = "{workdir / "dkim-s1.pem"}"
""",
        encoding="utf-8",
    )
    return path


def enqueue(config_path: Path, messages: int) -> None:
    """Import ``messages`` invoices (already sent, so dunning adds nothing) and queue a reminder
    for each, through the engine's own services."""
    from bench._workload import enqueue_invoice_emails, make_document
    from dunmail.app import build_services
    from dunmail.config import load_config
    from mailer.clock import SystemClock
    from mailer.config import DKIMAlgorithm
    from mailer.ledger.models import Invoice
    from mailer.outbound.dkim import generate_key

    generate_key(config_path.parent / "dkim-s1.pem", DKIMAlgorithm.RSA_SHA256)
    services = build_services(load_config(config_path), SystemClock())
    try:
        services.ledger.import_document(
            make_document(messages, max(1, messages // 10)), tenant=TENANT
        )
        with services.engine.begin() as conn:  # as `dunmail mark-sent` does, for all at once
            conn.execute(sa.update(Invoice).values(sent_at=services.clock.now()))
        queued = enqueue_invoice_emails(services)
    finally:
        services.engine.dispose()
    if queued != messages:
        raise RuntimeError(f"queued {queued} reminders, wanted {messages}")


@dataclass
class Life:
    """One engine process: how it started and how it ended."""

    started: float  # seconds since the first start
    ended: float
    accepted_before: int  # lines in the record when it started
    accepted_after: int  # ... and once it was dead
    signal: str  # "SIGKILL" or "SIGTERM"
    moment: str  # what the kill was aimed at: "target N", "start-up", "drained"
    wall_started: float = 0.0  # time.time() at start and once dead, to place attempts in lives
    wall_ended: float = 0.0
    held: int = 0  # rows under a lease of a dead engine (this one or earlier) right after it
    exit_code: int | None = None
    leftovers: int = 0  # processes of its group still alive after it died (then killed)


def start_engine(config_path: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """``dunmail run`` in its own process group, so whatever it starts can be found after it."""
    return subprocess.Popen(
        [sys.executable, "-m", "dunmail.cli", "run", "--config", str(config_path)],
        cwd=config_path.parent,
        env=child_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (Linux /proc; empty elsewhere)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def reap_group(pgid: int, *, grace: float = 2.0) -> int:
    """Wait up to ``grace`` s for the dead engine's children to go; SIGKILL any left. How many
    were still there after the grace period (multiprocessing's resource tracker exits by itself
    once its parent is gone)."""
    deadline = time.monotonic() + grace
    while (members := _group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if members:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(members)


def _scalar(engine: sa.Engine, query: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(query)).scalar_one())


def _open_rows(engine: sa.Engine) -> int:
    return _scalar(engine, "SELECT count(*) FROM message WHERE status IN ('queued', 'sending')")


def _held_rows(engine: sa.Engine) -> int:
    """Rows under a lease and still open: right after a kill, what dead engines held."""
    return _scalar(
        engine,
        "SELECT count(*) FROM message WHERE claimed_by IS NOT NULL"
        " AND status IN ('queued', 'sending')",
    )


# --- one run -----------------------------------------------------------------------------------


@dataclass
class CrashResult:
    """The figures of one run on one database."""

    backend: str
    messages: int
    kills: int
    seed: int
    lost: int
    duplicates: int
    explained: int
    accepted: int  # lines in the record
    distinct_ids: int
    statuses: dict[str, int]
    kills_mid_send: int  # kills after the life had some mail accepted
    kills_in_startup: int
    held_after_kill: list[int]
    leftover_processes: int  # engine children still alive 2 s after a kill (then killed)
    lease_lost: int  # engine log lines saying a result was recorded after its lease ran out
    wall_seconds: float  # first start to final stop
    prepare_seconds: float
    drain_seconds: float  # last restart to queue empty
    lost_uids: list[str] = field(default_factory=list)
    unexplained: list[dict[str, Any]] = field(default_factory=list)
    duplicate_detail: list[dict[str, Any]] = field(default_factory=list)
    foreign_ids: list[str] = field(default_factory=list)  # accepted IDs matching no row
    lives: list[Life] = field(default_factory=list)
    stop_exit_code: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def run_crash(
    backend: str,
    db_url: str,
    workdir: Path,
    *,
    messages: int,
    kills: int,
    seed: int,
    lease: int = 5,
    batch: int = 100,
    jitter: float = 0.1,
    startup_kill: float = 2.0,
    startup_share: float = 0.2,
    timeout: float = 600.0,
) -> CrashResult:
    """Queue ``messages``, kill a real ``dunmail run`` ``kills`` times, drain, and count."""
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    # Kill i fires once target[i] messages are accepted in all: distinct, sorted, inside the run.
    low, high = max(1, messages // 50), max(2, messages * 19 // 20)
    targets = sorted(rng.sample(range(low, high), min(kills, high - low)))
    jitters = [rng.uniform(0.0, jitter) for _ in targets]
    startup = [rng.uniform(0.05, startup_kill) for _ in targets]
    in_startup = [rng.random() < startup_share for _ in targets]
    lives: list[Life] = []
    server = Recorder.start(workdir)
    engine = sa.create_engine(db_url)
    try:
        config_path = write_config(workdir, db_url, server.port, lease=lease, batch=batch)
        began = time.monotonic()
        enqueue(config_path, messages)
        prepare_seconds = time.monotonic() - began
        first = time.monotonic()
        deadline = first + timeout
        plan = zip(targets, jitters, startup, in_startup, strict=True)
        for n, (target, extra, early, aim_early) in enumerate(plan):
            with (workdir / f"engine-{n:02d}.log").open("wb") as log:
                before = server.count()
                started, wall_started = time.monotonic(), time.time()
                process = start_engine(config_path, log)
                try:
                    if aim_early or before >= target:
                        moment = f"start-up +{early:.2f} s"
                        time.sleep(early)
                    else:
                        moment = f"target {target}"
                        while server.count() < target:
                            if process.poll() is not None:
                                raise RuntimeError(f"engine {n} exited ({process.returncode})")
                            if time.monotonic() > deadline:
                                raise RuntimeError(f"kill {n}: target {target} never reached")
                            time.sleep(0.002)
                        time.sleep(extra)
                finally:  # the kill itself, and on any failure above: never leave it running
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                ended, wall_ended = time.monotonic(), time.time()
                lives.append(
                    Life(
                        started=round(started - first, 3),
                        ended=round(ended - first, 3),
                        accepted_before=before,
                        accepted_after=_settled(server),
                        signal="SIGKILL",
                        moment=moment,
                        wall_started=wall_started,
                        wall_ended=wall_ended,
                        held=_held_rows(engine),
                        exit_code=process.returncode,
                        leftovers=reap_group(process.pid),
                    )
                )
        # The last life: let it drain everything, then stop it the normal way.
        with (workdir / "engine-last.log").open("wb") as log:
            before = server.count()
            started, wall_started = time.monotonic(), time.time()
            process = start_engine(config_path, log)
            try:
                while _open_rows(engine) and time.monotonic() < deadline:
                    if process.poll() is not None:
                        raise RuntimeError(f"the last engine exited early ({process.returncode})")
                    time.sleep(0.1)
                drained = time.monotonic()
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        wall = time.monotonic() - first
        lives.append(
            Life(
                started=round(started - first, 3),
                ended=round(time.monotonic() - first, 3),
                accepted_before=before,
                accepted_after=server.count(),
                signal="SIGTERM",
                moment="drained",
                wall_started=wall_started,
                wall_ended=time.time(),
                exit_code=process.returncode,
                leftovers=reap_group(process.pid),
            )
        )
    finally:
        server.stop()
    try:
        result = _count(
            engine, server.accepted(), lives, backend=backend, messages=messages, seed=seed
        )
    finally:
        engine.dispose()
    result.wall_seconds = round(wall, 2)
    result.prepare_seconds = round(prepare_seconds, 2)
    result.drain_seconds = round(drained - started, 2)
    result.stop_exit_code = process.returncode
    result.lease_lost = sum(
        log.read_text(errors="replace").count("lease lost before its result was recorded")
        for log in workdir.glob("engine-*.log")
    )
    if process.returncode != 0:
        result.problems.append(f"SIGTERM stop exited {process.returncode}")
    if _open_rows_left(result):
        result.problems.append(f"not drained within {timeout:.0f} s: {result.statuses}")
    return result


def _open_rows_left(result: CrashResult) -> bool:
    return bool(result.statuses.get("queued", 0) + result.statuses.get("sending", 0))


def _settled(server: Any) -> int:
    """The server's acceptance count once it stops moving: a message whose last bytes left the
    engine just before the kill is still accepted (and recorded) a moment after it; counted
    at once, it would be put in the next life and its re-send look like one life's twin."""
    count, stable_since, deadline = server.count(), time.monotonic(), time.monotonic() + 3
    while time.monotonic() - stable_since < 0.3 and time.monotonic() < deadline:
        time.sleep(0.02)
        now = server.count()
        if now != count:
            count, stable_since = now, time.monotonic()
    return int(count)


def _count(
    engine: sa.Engine,
    accepted: list[str],
    lives: list[Life],
    *,
    backend: str,
    messages: int,
    seed: int,
) -> CrashResult:
    """Lost, duplicates and their explanation, from the rows and the server's record."""
    from sqlmodel import col

    from mailer.outbound.models import DeliveryAttempt, Message

    rows: dict[str, _Row] = {}
    with engine.connect() as conn:
        for uid, status in conn.execute(sa.select(col(Message.uid), col(Message.status))):
            rows[f"<{uid}@{DOMAIN}>"] = _Row(str(status))
        query = sa.select(col(Message.uid), col(DeliveryAttempt.started_at)).join(
            DeliveryAttempt, col(DeliveryAttempt.message_id) == col(Message.id)
        )
        for uid, started_at in conn.execute(query):
            rows[f"<{uid}@{DOMAIN}>"].tried_at.append(started_at.timestamp())
    statuses = Counter(r.status for r in rows.values())
    times = Counter(accepted)
    # Where each acceptance fell: the life whose [accepted_before, accepted_after) holds it.
    life_of = [0] * len(accepted)
    for index, life in enumerate(lives):
        for line in range(life.accepted_before, min(life.accepted_after, len(accepted))):
            life_of[line] = index
    positions: dict[str, list[int]] = {}
    for line, mid in enumerate(accepted):
        positions.setdefault(mid, []).append(line)

    lost = [mid for mid, r in rows.items() if mid not in times and r.status != "failed"]
    foreign = sorted(mid for mid in times if mid not in rows)
    duplicates: list[dict[str, Any]] = []
    unexplained: list[dict[str, Any]] = []
    for mid, count in sorted(times.items()):
        if count < 2:
            continue
        row = rows.get(mid)
        where = [life_of[p] for p in positions[mid]]
        killed_first = all(lives[i].signal == "SIGKILL" for i in where[:-1])
        detail: dict[str, Any] = {
            "message_id": mid,
            "accepted": count,
            "lives": where,
            "status": None if row is None else row.status,
            "attempts_recorded": None if row is None else len(row.tried_at),
        }
        duplicates.append(detail)
        last = lives[where[-1]]
        explained = (
            row is not None
            and killed_first
            and len(set(where)) == len(where)  # never twice from one life
            and row.status == "sent"
            # One attempt on record, made by the life of the last acceptance: the earlier
            # acceptances were never committed, because their engine died first.
            and len(row.tried_at) == 1
            and last.wall_started - 1 <= row.tried_at[0] <= last.wall_ended + 1
        )
        if not explained:
            unexplained.append(detail)
    kills = [life for life in lives if life.signal == "SIGKILL"]
    result = CrashResult(
        backend=backend,
        messages=messages,
        kills=len(kills),
        seed=seed,
        lost=len(lost),
        duplicates=len(duplicates),
        explained=len(duplicates) - len(unexplained),
        accepted=len(accepted),
        distinct_ids=len(times),
        statuses=dict(sorted(statuses.items())),
        kills_mid_send=sum(life.accepted_after > life.accepted_before for life in kills),
        kills_in_startup=sum(life.accepted_after == life.accepted_before for life in kills),
        held_after_kill=[life.held for life in kills],
        leftover_processes=sum(life.leftovers for life in lives),
        lease_lost=0,
        wall_seconds=0.0,
        prepare_seconds=0.0,
        drain_seconds=0.0,
        lost_uids=lost[:50],
        unexplained=unexplained[:50],
        duplicate_detail=duplicates[:200],
        foreign_ids=foreign[:50],
        lives=lives,
    )
    if len(rows) != messages:
        result.problems.append(f"{len(rows)} rows in the outbox, {messages} were queued")
    if lost:
        result.problems.append(f"{len(lost)} lost, e.g. {lost[:3]}")
    if unexplained:
        result.problems.append(f"{len(unexplained)} unexplained duplicates: {unexplained[:3]}")
    if foreign:
        result.problems.append(f"{len(foreign)} accepted Message-IDs match no row: {foreign[:3]}")
    # One Message-ID per row and no row under two IDs: distinct IDs map one to one onto the
    # rows that were accepted, and every sent row is among them.
    sent = statuses.get("sent", 0)
    if len(times) - len(foreign) != sent:
        result.problems.append(f"{len(times)} distinct Message-IDs accepted for {sent} sent rows")
    return result


@dataclass
class _Row:
    """A message as the database ends: its status and when each recorded attempt started."""

    status: str
    tried_at: list[float] = field(default_factory=list)


# --- databases ---------------------------------------------------------------------------------


# --- report ------------------------------------------------------------------------------------

NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def build_table(results: list[CrashResult], skipped: dict[str, str]) -> list[dict[str, str]]:
    """The README rows (what, measured, target, notes)."""
    table: list[dict[str, str]] = []
    for r in results:
        name = NAMES[r.backend]
        duplicates = (
            f"{r.duplicates} duplicates, {r.explained} explained"
            if r.duplicates
            else "0 duplicates"
        )
        table.append(
            {
                "what": f"crash safety, {name}: {r.kills} SIGKILLs of `dunmail run`",
                "measured": f"{r.lost} lost, {duplicates}",
                "target": "0 lost; duplicates only from a kill between 250 and commit, same "
                f"Message-ID ({'met' if r.ok else 'MISSED'})",
                "notes": f"{r.messages:,} queued reminders; {r.kills_mid_send} kills while mail "
                f"was flowing, {r.kills_in_startup} before any was; {r.accepted:,} accepted, "
                f"{r.distinct_ids:,} distinct Message-IDs; statuses {r.statuses}; "
                f"{r.wall_seconds:.0f} s from first start to drained; "
                f"{r.lease_lost} results recorded after their lease ran out; seed {r.seed}",
            }
        )
    for backend, reason in skipped.items():
        table.append(
            {
                "what": f"crash safety, {NAMES[backend]}",
                "measured": "skipped",
                "target": "-",
                "notes": reason,
            }
        )
    return table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--lease", type=int, default=5, help="delivery.lease_seconds (min 5)")
    parser.add_argument("--batch", type=int, default=100, help="delivery.batch_size")
    parser.add_argument("--jitter", type=float, default=0.1, help="seconds after a target")
    parser.add_argument("--startup-kill", type=float, default=2.0, help="max start-up kill delay")
    parser.add_argument(
        "--startup-share", type=float, default=0.2, help="chance a kill aims at start-up instead"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per database")
    parser.add_argument("--only", choices=tuple(NAMES), help="one database only")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (engine logs)")
    parser.add_argument("--output", type=Path, default=RESULTS / "crash.json")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"crash.py: ignoring {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backends = [args.only] if args.only else list(NAMES)
    results: list[CrashResult] = []
    skipped: dict[str, str] = {}
    with ExitStack() as stack:
        if args.keep:
            top = Path(tempfile.mkdtemp(prefix="dunmail-crash-"))
        else:
            top = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dunmail-crash-")))
        for backend in backends:
            if backend == "postgresql" and (reason := postgres_reason()):
                skipped[backend] = reason
                print(f"crash: PostgreSQL skipped: {reason}")
                continue
            workdir = top / backend
            workdir.mkdir()
            print(f"crash: {NAMES[backend]}, {args.messages:,} messages, {args.kills} kills")
            with database(backend, workdir) as url:
                result = run_crash(
                    backend,
                    url,
                    workdir,
                    messages=args.messages,
                    kills=args.kills,
                    seed=args.seed,
                    lease=args.lease,
                    batch=args.batch,
                    jitter=args.jitter,
                    startup_kill=args.startup_kill,
                    startup_share=args.startup_share,
                    timeout=args.timeout,
                )
            results.append(result)
            print(
                f"  lost {result.lost}, duplicates {result.duplicates} "
                f"({result.explained} explained), {result.kills} kills "
                f"({result.kills_mid_send} mid-send), wall {result.wall_seconds:.1f} s"
                + (f"; PROBLEMS: {result.problems}" if result.problems else "")
            )
        if args.keep:
            print(f"crash: engine logs kept in {top}")
    output: dict[str, Any] = {
        "python": platform.python_version(),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "runs": [asdict(r) for r in results],
        "skipped": skipped,
    }
    output["table"] = build_table(results, skipped)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(output, indent=2) + "\n", encoding="utf-8")
    print()
    for row in output["table"]:
        print("| " + " | ".join(row.values()) + " |")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
