"""Sign-in flood: what the rest of the app feels while failed sign-ins pour in (issue 14, #3).

    python -m bench.login_flood [--attempts 600] [--clients 20] [--concurrency 100]
                                [--only sqlite|postgresql] [--limits]

For each database (a SQLite file, and a private schema on PostgreSQL at
``$DUNMAIL_BENCH_POSTGRES`` when it answers):

1. The web app is served by uvicorn in its own process (this script with ``--serve``), with
   argon2id at argon2-cffi's real defaults and one AR user, as ``dunmail run`` serves it.
2. ``--attempts`` sign-ins with a wrong password go out at once (``--concurrency`` in flight),
   from ``--clients`` loopback addresses (127.0.0.10 and up, so each is its own client to the
   throttle), each client trying a different name every time: nothing is refused before
   argon2 runs unless ``--limits`` lowers [web.login] to per_client 20 and overall 300.
3. Meanwhile one more client asks ``/healthz`` every 20 ms, and a thread writes one row in a
   transaction of its own every 100 ms on the same database (as inbound SMTP stores a message):
   their latencies, and any answer but 200 or any failed write, are what this measures.
4. After the flood, the real user signs in from a fresh address, once.

Results go to stdout and ``bench/results/login_flood.json`` (a ``table`` for bench/run_all.py).
The short version, with cheap argon2 and no timing, runs in CI as
``tests/test_attacks_login.py::test_a_flood_of_failed_sign_ins_gets_401_or_429_never_500``.
Arguments this script does not know are ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench._workload import database, postgres_reason

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # bench/bounce.py would shadow the bounce package (see bench/crash.py)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
USER, PASSWORD = "clerk@bench.example", "correct horse battery staple"
LOW_LIMITS = {"per_client": 20, "overall": 300}


# --- the server (its own process) --------------------------------------------------------------


def serve(db_url: str, workdir: Path, port: int, limits: bool) -> None:
    """The web app on 127.0.0.1:``port`` over ``db_url``, with one user; runs until killed."""
    import uvicorn

    from dunmail.app import build_services
    from dunmail.config import Config
    from dunmail.web.app import create_app
    from dunmail.web.users import create_user
    from mailer.clock import SystemClock
    from mailer.db import session_scope
    from mailer.outbound.memory import MemoryTransport

    web: dict[str, Any] = {"host": "127.0.0.1", "port": port}
    if limits:
        web["login"] = LOW_LIMITS
    config = Config(
        env="dev",
        database={"url": db_url},
        relay={"host": "127.0.0.1", "port": 25, "domain": "bench.example"},
        web=web,
        tenants={
            "bench": {
                "name": "Bench Supplies Ltd",
                "email": "ar@bench.example",
                "dkim": [
                    {
                        "domain": "bench.example",
                        "selector": "s1",
                        "key_file": str(workdir / "s1.pem"),
                    }
                ],
            }
        },
    )
    services = build_services(config, SystemClock(), MemoryTransport())
    with session_scope(services.engine) as session:
        create_user(
            session,
            tenant_id=services.tenants.id("bench"),
            email=USER,
            name="Clerk",
            password=PASSWORD,
            now=services.clock.now(),
        )
    uvicorn.run(
        create_app(services), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


# --- the flood ---------------------------------------------------------------------------------


def _client(base: str, source: str, connections: int = 10) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(
        local_address=source, limits=httpx.Limits(max_connections=connections)
    )
    return httpx.AsyncClient(base_url=base, transport=transport, timeout=120)


async def _csrf(client: httpx.AsyncClient) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', (await client.get("/login")).text)
    if not found:
        raise SystemExit("login_flood: the login form has no CSRF token")
    return found.group(1)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50_ms": 0.0, "p95_ms": 0.0, "max_ms": 0.0}
    ordered = sorted(values)
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def _write_probe(db_url: str, stop: threading.Event, out: dict[str, Any]) -> None:
    """One short write transaction every 100 ms from another connection, timed."""
    from mailer.db import make_engine

    engine = make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS bench_probe (n INTEGER, at TEXT)"))
    seconds, errors = [], []
    n = 0
    while not stop.is_set():
        began = time.perf_counter()
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("INSERT INTO bench_probe VALUES (:n, 'x')"), {"n": n})
            seconds.append(time.perf_counter() - began)
        except sa.exc.SQLAlchemyError as exc:
            errors.append(type(exc).__name__)
        n += 1
        stop.wait(0.1)
    engine.dispose()
    out.update(_percentiles(seconds), errors=len(errors))


async def flood(base: str, db_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Fire the failed sign-ins, probe health and writes meanwhile; the figures."""
    health: list[float] = []
    health_bad: Counter[int] = Counter()
    done = asyncio.Event()

    async def probe() -> None:
        async with _client(base, "127.0.0.200", 1) as watcher:
            while not done.is_set():
                began = time.perf_counter()
                try:
                    status = (await watcher.get("/healthz")).status_code
                except httpx.HTTPError:
                    status = 0  # no answer at all
                health.append(time.perf_counter() - began)
                if status != 200:
                    health_bad[status] += 1
                await asyncio.sleep(0.02)

    per_client = args.attempts // args.clients
    connections = max(1, args.concurrency // args.clients)

    async def attack(n: int) -> list[int]:
        async with _client(base, f"127.0.0.{10 + n}", connections) as browser:
            token = await _csrf(browser)

            async def one(k: int) -> int:
                data = {"email": f"user{n}-{k}@bench.example", "password": "wrong", "csrf": token}
                try:
                    return (await browser.post("/login", data=data)).status_code
                except httpx.HTTPError:
                    return 0  # the connection dropped without an answer

            return list(await asyncio.gather(*(one(k) for k in range(per_client))))

    writes: dict[str, Any] = {}
    stop = threading.Event()
    writer = threading.Thread(target=_write_probe, args=(db_url, stop, writes))
    writer.start()
    watcher = asyncio.create_task(probe())
    await asyncio.sleep(0.5)  # a baseline before the flood
    began = time.perf_counter()
    batches = await asyncio.gather(*map(attack, range(args.clients)))
    statuses = Counter(s for batch in batches for s in batch)
    duration = time.perf_counter() - began
    done.set()
    await watcher
    stop.set()
    writer.join()

    async with _client(base, "127.0.0.201", 1) as owner:
        token = await _csrf(owner)
        began = time.perf_counter()
        signed = await owner.post(
            "/login", data={"email": USER, "password": PASSWORD, "csrf": token}
        )
        sign_in = time.perf_counter() - began
    return {
        "attempts": per_client * args.clients,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors": sum(v for k, v in statuses.items() if k >= 500 or k == 0),
        "flood_seconds": round(duration, 2),
        "healthz": {**_percentiles(health), "not_200": sum(health_bad.values())},
        "write": writes,
        "owner_sign_in": {"status": signed.status_code, "ms": round(sign_in * 1000, 1)},
    }


def run_backend(backend: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One database: server up, flood, server down."""
    import socket

    with database(backend, workdir) as db_url:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        command = [
            sys.executable,
            "-m",
            "bench.login_flood",
            "--serve",
            db_url,
            str(workdir),
            str(port),
        ]
        if args.limits:
            command.append("--limits")
        server = subprocess.Popen(command, cwd=ROOT)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"login_flood: the {backend} server did not start")
                time.sleep(0.2)
            return asyncio.run(flood(base, db_url, args))
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:  # argon2 threads still busy: stop it harder
                server.kill()
                server.wait()


def build_table(result: dict[str, Any]) -> list[dict[str, str]]:
    """The README rows: /healthz and a short write during the flood, per database."""
    rows = []
    for backend, r in result["backends"].items():
        h, w = r["healthz"], r["write"]
        rows.append(
            {
                "what": f"/healthz during {r['attempts']} failed sign-ins, {backend}",
                "measured": f"p50 {h['p50_ms']:g} ms, p95 {h['p95_ms']:g} ms, "
                f"max {h['max_ms']:g} ms",
                "target": "no 5xx, never stalls (met)"
                if r["server_errors"] == 0 and h["not_200"] == 0 and w.get("errors", 0) == 0
                else "no 5xx, never stalls (MISSED)",
                "notes": f"{r['flood_seconds']:g} s of flood, answers {r['statuses']}; a one-row "
                f"write meanwhile p50 {w.get('p50_ms', 0):g} ms, max {w.get('max_ms', 0):g} ms, "
                f"{w.get('errors', 0)} failed; real argon2id; "
                f"owner's sign-in after: {r['owner_sign_in']['status']}",
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=600)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--limits", action="store_true", help="per_client 20, overall 300")
    parser.add_argument("--serve", nargs=3, metavar=("DB_URL", "WORKDIR", "PORT"))
    args, unknown = parser.parse_known_args(argv)
    if args.serve:
        db_url, workdir, port = args.serve
        serve(db_url, Path(workdir), int(port), args.limits)
        return 0
    if unknown:
        print(f"login_flood.py: ignoring {' '.join(unknown)}")
    backends = [args.only] if args.only else ["sqlite", "postgresql"]
    result: dict[str, Any] = {"python": platform.python_version(), "backends": {}}
    with tempfile.TemporaryDirectory(prefix="login-flood-") as tmp:
        for backend in backends:
            if backend == "postgresql" and (reason := postgres_reason()):
                print(f"login_flood: PostgreSQL skipped: {reason}")
                continue
            figures = run_backend(backend, Path(tmp), args)
            result["backends"][backend] = figures
            print(f"{backend}: {json.dumps(figures)}")
    result["table"] = build_table(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "login_flood.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print()
    for row in result["table"]:
        print("| " + " | ".join(row.values()) + " |")
    failed = any(r["server_errors"] or r["healthz"]["not_200"] for r in result["backends"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
