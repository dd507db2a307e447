"""A 40,000-customer ``dunmail import`` on SQLite beside a running engine: latency of /healthz,
link opens, sign-ins and inbound mail stored while it runs, with the batched import and (with
``--one-transaction``) with batches so large that the import is one long write transaction, as
it was before issue 14.

    PYTHONPATH=. .venv/bin/python -m bench.import_concurrency --customers 40000

The import is its own process (``python -m dunmail.cli import``), as cron starts it; the engine
side is this process: the web app over httpx (in-process ASGI) and the inbound SMTP server on
loopback, both on the same SQLite file. Each probe round is one of each operation, then a pause
of ``--interval`` seconds. The document and the probe are tests/test_import_concurrency.py's.
Writes ``bench/results/import_concurrency.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.test_import_concurrency import (
    Probe,
    big_document,
    engine_config,
    engine_side,
    probe_once,
    probe_while,
    start_import,
    write_document,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OPERATIONS = ("healthz", "link open", "login", "inbound store")
BOUND_MS = 2000.0  # the test's bound (tests/test_import_concurrency.py's BOUND)


async def run(customers: int, *, interval: float, **database: object) -> dict[str, Any]:
    """One import of ``customers`` (and their invoices and payments) under probing."""
    with tempfile.TemporaryDirectory(prefix="dunmail-import-bench-") as tmp:
        workdir = Path(tmp)
        config = engine_config(workdir, f"sqlite:///{workdir / 'dunmail.db'}", **database)
        document = write_document(workdir, "big.json", big_document(customers))
        async with engine_side(config) as side:
            await probe_once(side, Probe(), 0)  # warm
            began = time.monotonic()
            importing = start_import(config, document)
            probe = await probe_while(side, lambda: importing.poll() is None, interval=interval)
            seconds = time.monotonic() - began
            out, err = importing.communicate()
        return {
            "customers": customers,
            "settings": database,
            "import_seconds": round(seconds, 1),
            "exit": importing.returncode,
            "summary": out.strip(),
            "stderr_tail": err.strip().splitlines()[-3:],
            "failures": probe.failures[:20],
            "failure_count": len(probe.failures),
            "operations": probe.figures(),
        }


def build_table(runs: list[dict[str, Any]]) -> list[dict[str, str]]:
    rows = []
    for r in runs:
        how = "one transaction" if r["settings"].get("import_batch_seconds") == 60 else "batched"
        ops = r["operations"]
        measured = "; ".join(
            f"{name} p50 {ops[name]['p50_ms']:,.0f} / p99 {ops[name]['p99_ms']:,.0f} / max "
            f"{ops[name]['max_ms']:,.0f} ms"
            for name in OPERATIONS
            if name in ops
        )
        worst = max((o["max_ms"] for o in ops.values()), default=0.0)
        met = r["failure_count"] == 0 and r["exit"] == 0 and worst < BOUND_MS
        rows.append(
            {
                "what": f"import of {r['customers']:,} customers on SQLite ({how}) beside the "
                "engine",
                "measured": measured,
                "target": f"no failure, every answer within {BOUND_MS / 1000:g} s "
                f"({'met' if met else 'NOT met'})",
                "notes": f"import {r['import_seconds']:,.0f} s, exit {r['exit']}; "
                f"{r['failure_count']} failed operations; settings {r['settings'] or 'defaults'}; "
                f"{sum(o['count'] for o in ops.values())} operations probed",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=40_000)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--one-transaction", action="store_true", help="also run it unbatched")
    parser.add_argument("--batch-records", type=int)
    parser.add_argument("--batch-seconds", type=float)
    parser.add_argument("--pause-ratio", type=float)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"import_concurrency.py: ignoring {' '.join(unknown)}")
    settings = {
        key: value
        for key, value in (
            ("import_batch_records", args.batch_records),
            ("import_batch_seconds", args.batch_seconds),
            ("import_pause_ratio", args.pause_ratio),
        )
        if value is not None
    }
    variants: list[dict[str, object]] = [settings]
    if args.one_transaction:
        variants.append(
            {"import_batch_records": 100_000, "import_batch_seconds": 60, "import_pause_ratio": 0}
        )
    runs = []
    for variant in variants:
        print(f"import_concurrency: {args.customers:,} customers, settings {variant or 'defaults'}")
        runs.append(asyncio.run(run(args.customers, interval=args.interval, **variant)))
        print(json.dumps(runs[-1]["operations"]), f"import {runs[-1]['import_seconds']} s")
    table = build_table(runs)
    result = {"python": platform.python_version(), "runs": runs, "table": table}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "import_concurrency.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print()
    for row in table:
        print("| " + " | ".join(row.values()) + " |")
    return 0 if all(r["failure_count"] == 0 and r["exit"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
