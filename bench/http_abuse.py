"""HTTP abuse: /healthz and a customer's link page, timed while hostile clients post.

    python -m bench.http_abuse [--only sqlite] [--probe-ms 50]

Issue 14, finding 5: an unauthenticated 48 MB POST took 470 MB of memory, and six at once
stalled the event loop for 5.8 s. This runs a real ``dunmail run`` (the web app shares the
engine's event loop) with the default ``[web]`` limits, on a SQLite file and on PostgreSQL
(``$DUNMAIL_TEST_POSTGRES``, when it answers). A prober asks ``/healthz`` and opens a View link
(``/l/<token>``, a page rendered from the ledger) every ``--probe-ms``, while each scenario runs:

* ``idle``: nothing else;
* ``6 x 48 MB, no key``: six unauthenticated chunked POSTs to /api/v1/invoices at once;
* ``6 x 48 MB, valid key``: the same with a valid key (refused once past web.max_body_bytes);
* ``6 x 3.9 MB invoices``: six authenticated invoices just under web.max_body_bytes, 22,000
  lines each, parsed and validated to the last line, which is refused (422).

Figures per scenario: median, 95th percentile and worst latency of each probe during the
attack, the server's peak memory growth (``VmHWM``), what each attacker had written when the
server closed on it, and the answers. Results go to stdout and ``bench/results/http_abuse.json``
(a ``table`` for bench/run_all.py). Arguments this script does not know are ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench._workload import database, postgres_reason
from dunmail.config import load_config
from mailer.outbound.links import issue_link
from mailer.outbound.verp import derive_key
from tests.test_attacks_http import (
    ATTACK_BYTES,
    Server,
    attack_body,
    big_invoice,
    post_head,
    push,
    running_engine,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
INVOICE_LINES = 22_000
ATTACKERS = 6


async def _link(server: Server, workdir: Path, db_url: str) -> str:
    """A View link to a freshly imported invoice, signed as the engine signs them."""
    headers = {"Authorization": f"Bearer {server.key}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{server.port}/api/v1", headers=headers
    ) as api:
        customer = {"id": "C-1", "name": "Globex", "time_zone": "UTC"}
        customer["contacts"] = [{"email": "ap@globex.example", "roles": ["ap"]}]  # type: ignore[assignment]
        assert (await api.post("/customers", json=customer)).status_code == 200
        invoice = {
            "id": "i-1",
            "number": "INV-1",
            "customer": "C-1",
            "currency": "EUR",
            "issued_at": "2026-03-01",
            "due_at": "2026-03-31",
            "lines": [{"description": "Support", "quantity": "1", "unit_price": "120.00"}],
        }
        created = await api.post("/invoices", json=invoice)
        assert created.status_code == 200, created.text
    engine = sa.create_engine(db_url)
    with engine.connect() as connection:
        invoice_id, tenant_id = connection.execute(
            sa.text("SELECT id, tenant_id FROM invoice WHERE number = 'INV-1'")
        ).one()
    engine.dispose()
    config = load_config(workdir / "config.toml")
    key = derive_key(config.secret_key(), "links")
    expires = datetime.now(UTC) + timedelta(days=30)
    return "/l/" + issue_link(
        "view", tenant_id, f"invoice:{invoice_id}", 1, key=key, expires_at=expires
    )


async def _probe(base: str, link: str, every: float, stop: asyncio.Event) -> dict[str, Any]:
    """Latencies of /healthz and the link page until ``stop``; a failure is recorded, not
    raised (an answer that never comes is the figure)."""
    seen: dict[str, list[float]] = {"healthz": [], "link": []}
    failures: list[str] = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        while not stop.is_set():
            for name, path in (("healthz", "/healthz"), ("link", link)):
                started = time.perf_counter()
                try:
                    response = await client.get(path)
                    if response.status_code != 200:
                        failures.append(f"{name}: {response.status_code}")
                except httpx.HTTPError as exc:
                    failures.append(f"{name}: {type(exc).__name__}")
                seen[name].append(time.perf_counter() - started)
            await asyncio.sleep(every)
    return {"latencies": seen, "failures": failures}


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return {
        "count": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


async def _scenario(server: Server, name: str, link: str, every: float) -> dict[str, Any]:
    base = f"http://127.0.0.1:{server.port}"
    path = "/api/v1/invoices"
    stop = asyncio.Event()
    probing = asyncio.create_task(_probe(base, link, every, stop))
    await asyncio.sleep(0.5)
    before = server.peak_rss()
    started = time.perf_counter()
    answers: list[dict[str, Any]] = []
    if name == "idle":
        await asyncio.sleep(2.0)
    elif name.startswith("6 x 48 MB"):
        key = server.key if "valid key" in name else None
        pushed = await asyncio.gather(
            *(
                push(server.port, post_head(path, key=key), attack_body(), chunked=True)
                for _ in range(ATTACKERS)
            )
        )
        answers = [{"status": a.status, "server_took_bytes": a.total} for a in pushed]
    else:
        body = big_invoice(INVOICE_LINES)
        headers = {"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as api:
            posted = await asyncio.gather(*(api.post(path, content=body) for _ in range(ATTACKERS)))
        answers = [{"status": r.status_code, "bytes": len(body)} for r in posted]
    seconds = time.perf_counter() - started
    await asyncio.sleep(0.3)
    stop.set()
    probed = await probing
    return {
        "scenario": name,
        "seconds": round(seconds, 2),
        "answers": answers,
        "peak_rss_growth_mb": round((server.peak_rss() - before) / 2**20, 1),
        "healthz": _summary(probed["latencies"]["healthz"]),
        "link": _summary(probed["latencies"]["link"]),
        "failures": probed["failures"],
    }


SCENARIOS = (
    "idle",
    "6 x 48 MB, no key",
    "6 x 48 MB, valid key",
    f"6 x {len(big_invoice(INVOICE_LINES)) / 1e6:.1f} MB invoices",
)


async def run_backend(backend: str, every: float) -> list[dict[str, Any]]:
    """Every scenario against one engine on a fresh database of ``backend``."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="http-abuse-") as folder:
        workdir = Path(folder)
        env = {"DUNMAIL_SECRET_KEY": secrets.token_urlsafe(48)}
        os.environ.update(env)  # the link is signed here with the engine's key
        with database(backend, workdir) as db_url, running_engine(workdir, db_url, **env) as srv:
            link = await _link(srv, workdir, db_url)
            for name in SCENARIOS:
                row = {"database": backend, **await _scenario(srv, name, link, every)}
                print(
                    f"  {backend} {name}: healthz p50 {row['healthz']['p50_ms']} ms, "
                    f"max {row['healthz']['max_ms']} ms; link max {row['link']['max_ms']} ms; "
                    f"peak RSS +{row['peak_rss_growth_mb']} MB; answers "
                    f"{sorted({a['status'] for a in row['answers']})}; failures "
                    f"{len(row['failures'])}"
                )
                rows.append(row)
    return rows


def build_table(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """README rows (what, measured, target, notes)."""
    table = []
    for row in rows:
        took = [a.get("server_took_bytes") for a in row["answers"] if "server_took_bytes" in a]
        notes = f"peak RSS +{row['peak_rss_growth_mb']} MB"
        if took:
            notes += f"; each attacker cut off after <= {max(took) / 2**20:.0f} MiB of 48"
        if row["answers"]:
            notes += f"; answers {sorted({a['status'] for a in row['answers']})}"
        if row["failures"]:
            notes += f"; {len(row['failures'])} probes failed"
        table.append(
            {
                "what": f"/healthz and a link page during {row['scenario']} ({row['database']})",
                "measured": (
                    f"healthz p50 {row['healthz']['p50_ms']} ms, max {row['healthz']['max_ms']} "
                    f"ms; link p50 {row['link']['p50_ms']} ms, max {row['link']['max_ms']} ms"
                ),
                "target": "answers throughout",
                "notes": notes,
            }
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--probe-ms", type=float, default=50.0)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"http_abuse.py: ignoring {' '.join(unknown)}")
    backends = [args.only] if args.only else ["sqlite", "postgresql"]
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for backend in backends:
        reason = postgres_reason() if backend == "postgresql" else None
        if reason:
            skipped[backend] = reason
            print(f"  {backend}: skipped, {reason}")
            continue
        rows += asyncio.run(run_backend(backend, args.probe_ms / 1000))
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "attack_bytes": ATTACK_BYTES,
        "invoice_lines": INVOICE_LINES,
        "rows": rows,
        "skipped": skipped,
        "table": build_table(rows),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "http_abuse.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print()
    for row in result["table"]:
        print("| " + " | ".join(row.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
