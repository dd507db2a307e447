"""The shared throttle: what one take costs, on SQLite and PostgreSQL.

    PYTHONPATH=. python -m bench.throttle [--takes 2000] [--postgres URL]

Each take has the dispatcher's shape: the tenant's and the recipient domain's keys metered, the
relay's key checked for a back-off (mailer/outbound/dispatch.py). Figures are per take, CPU time
of this process (``time.process_time``: the driver and SQLAlchemy, not the PostgreSQL server's
own work) and wall time (which does include the server and the round trips):

* shared, conforming: ``SharedThrottle.delay`` that takes (one transaction: a pause check and
  one upsert per key);
* shared, refused by the database: the bucket is empty and this process has not heard yet;
* shared, refused from memory: the same, once the database has said how long to wait.

PostgreSQL runs in a private schema dropped afterwards; without a reachable server its rows say
why. Results go to stdout and ``bench/results/throttle.json`` (a ``table`` for bench/run_all.py).
Arguments this script does not know are ignored with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mailer.db import create_schema, make_engine
from mailer.outbound.throttle import SharedThrottle

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PG_URL = os.environ.get(
    "DUNMAIL_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
KEYS = ["tenant:1", "domain:example.com"]
CLOSED = ["endpoint:relay.example:25"]
STEP = timedelta(microseconds=1)  # each take a microsecond after the last: time moves on


def _per_take(work: Callable[[int], object], takes: int) -> dict[str, float]:
    """Microseconds of CPU and of wall time per call of ``work(n)``, best of three rounds."""
    best_cpu = best_wall = float("inf")
    for _ in range(3):
        cpu, wall = time.process_time(), time.perf_counter()
        for n in range(takes):
            work(n)
        best_cpu = min(best_cpu, (time.process_time() - cpu) / takes * 1e6)
        best_wall = min(best_wall, (time.perf_counter() - wall) / takes * 1e6)
    return {"cpu_us": round(best_cpu, 1), "wall_us": round(best_wall, 1)}


def shared(url: str, takes: int) -> dict[str, dict[str, float]]:
    engine = make_engine(url)
    try:
        create_schema(engine)
        fast = SharedThrottle(engine, lambda key: 10**9)
        conforming = _per_take(lambda n: fast.delay(KEYS, T0 + n * STEP, closed=CLOSED), takes)
        slow_keys = ["tenant:2", "domain:slow.example"]
        SharedThrottle(engine, lambda key: 1, burst_for=lambda key: 1).delay(slow_keys, T0)

        def refused_by_database(n: int) -> None:
            fresh = SharedThrottle(engine, lambda key: 1, burst_for=lambda key: 1)
            if fresh.delay(slow_keys, T0 + n * STEP, closed=CLOSED) <= timedelta(0):
                raise RuntimeError("an empty bucket gave a take")

        by_database = _per_take(refused_by_database, takes)
        known = SharedThrottle(engine, lambda key: 1, burst_for=lambda key: 1)
        known.delay(slow_keys, T0, closed=CLOSED)
        from_memory = _per_take(
            lambda n: known.delay(slow_keys, T0 + n * STEP, closed=CLOSED), takes
        )
    finally:
        engine.dispose()
    return {"conforming": conforming, "refused_db": by_database, "refused_memory": from_memory}


def postgres(takes: int, admin_url: str) -> dict[str, Any]:
    try:
        admin = sa.create_engine(admin_url, connect_args={"connect_timeout": 3})
        with admin.begin() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # any failure means "not here"; the row says why
        return {"skipped": f"PostgreSQL not reachable at {admin_url}: {type(exc).__name__}"}
    schema = f"bench_{secrets.token_hex(6)}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        return shared(f"{admin_url}?options=-csearch_path%3D{schema}", takes)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def build_table(r: dict[str, Any]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for db in ("sqlite", "postgresql"):
        figures = r[db]
        if "skipped" in figures:
            rows.append(
                {"what": f"shared throttle take, {db}", "measured": "not run", "target": "-",
                 "notes": figures["skipped"]}
            )  # fmt: skip
            continue
        for case, label in (
            ("conforming", "taken"),
            ("refused_db", "refused by the database"),
            ("refused_memory", "refused from memory"),
        ):
            f = figures[case]
            rows.append(
                {
                    "what": f"shared throttle take, {db}, {label}",
                    "measured": f"{f['cpu_us']:.0f} µs CPU, {f['wall_us']:.0f} µs wall",
                    "target": "-",
                    "notes": "tenant + domain metered, relay pause checked; one transaction; "
                    f"best of 3 x {r['takes']}",
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--takes", type=int, default=2000)
    parser.add_argument("--postgres", default=PG_URL)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"throttle.py: ignoring {' '.join(unknown)}")
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = shared(f"sqlite:///{Path(tmp) / 'throttle.db'}", args.takes)
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "takes": args.takes,
        "sqlite": sqlite,
        "postgresql": postgres(args.takes, args.postgres),
    }
    result["table"] = build_table(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "throttle.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for row in result["table"]:
        print("| " + " | ".join(row.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
