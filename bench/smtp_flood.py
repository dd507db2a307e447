"""Inbound SMTP under a connection flood: how long a legitimate delivery takes meanwhile.

    PYTHONPATH=. python -m bench.smtp_flood [--deliveries 30] [--held 1200] [--churn-seconds 5]

A real ``dunmail run`` (SQLite, inbound SMTP on loopback, web and capture off) is started in its
own process. An attacker process, also separate, then:

* held: opens ``--held`` connections spread over 60 loopback addresses (127.0.1.x, 20 each, the
  per-client default) and keeps them idle, with ``max_connections`` raised so that all of them
  are admitted: the worst case of idle sessions the server carries at once;
* refused: from one address, 20 loops open connection after connection as fast as they can for
  ``--churn-seconds``; past its 20 each is answered 421 and closed.

Meanwhile this process delivers ``--deliveries`` replies to the AR inbox from another address
(127.0.0.250), one after the other, each timed from connect to the 250 after DATA (the message
committed to the database). A baseline with no attacker comes first. Figures go to stdout and
``bench/results/smtp_flood.json`` (a ``table`` for bench/run_all.py); the log the server wrote
during the run is measured too (bytes), to show the throttle at work, and kept beside it
(``smtp_flood.log``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SOURCES = 60  # attacker addresses for the held scenario
PER_CLIENT = 20  # InboundConfig.max_connections_per_client's default
REPLY = (
    b"From: Jane <jane@globex.example>\r\nTo: Acme <ar@bench.example>\r\n"
    b"Subject: Re: Invoice %d\r\nMessage-ID: <r%d@globex.example>\r\n\r\nPaid today.\r\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(workdir: Path, port: int, max_connections: int) -> Path:
    """A production-shaped config: inbound SMTP on, everything else quiet."""
    from mailer.config import DKIMAlgorithm
    from mailer.outbound.dkim import generate_key

    generate_key(workdir / "dkim.pem", DKIMAlgorithm.RSA_SHA256)
    path = workdir / "config.toml"
    path.write_text(
        f"""env = "dev"
[database]
url = "sqlite:///{workdir / "dunmail.db"}"
[relay]
host = "127.0.0.1"
port = {free_port()}
domain = "bench.example"
[web]
enabled = false
[capture]
enabled = false
[inbound]
enabled = true
host = "127.0.0.1"
port = {port}
hostname = "mx.bench.example"
max_connections = {max_connections}
[log]
level = "INFO"
[tenants.bench]
name = "Bench Supplies"
email = "ar@bench.example"
[[tenants.bench.dkim]]
domain = "bench.example"
selector = "s1"
key_file = "{workdir / "dkim.pem"}"
""",
        encoding="utf-8",
    )
    return path


async def wait_for_port(port: int, deadline: float) -> None:
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def deliver(port: int, number: int) -> float:
    """Seconds from connect to the 250 after DATA, from a legitimate sender's address."""
    import aiosmtplib

    started = time.perf_counter()
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port, timeout=30, source_address=("127.0.0.250", 0)
    ) as client:
        await client.sendmail("jane@globex.example", ["ar@bench.example"], REPLY % (number, number))
    return time.perf_counter() - started


async def deliveries(port: int, count: int, first: int) -> dict[str, Any]:
    seconds = [await deliver(port, first + i) for i in range(count)]
    seconds.sort()
    return {
        "median_ms": round(statistics.median(seconds) * 1000, 1),
        "p95_ms": round(seconds[max(0, int(len(seconds) * 0.95) - 1)] * 1000, 1),
        "max_ms": round(seconds[-1] * 1000, 1),
    }


# -- the attacker process ---------------------------------------------------------------------


async def hold(port: int, count: int) -> None:
    """Open ``count`` connections over SOURCES addresses, report the greetings, hold them until
    stdin ends."""
    opened: list[asyncio.StreamWriter] = []
    greetings = {"220": 0, "421": 0, "other": 0}
    for i in range(count):
        source = f"127.0.1.{1 + i % SOURCES}"
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        line = (await reader.readline()).decode()
        greetings[line[:3] if line[:3] in greetings else "other"] += 1
        opened.append(writer)
    print(json.dumps(greetings), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for writer in opened:
        writer.close()


async def churn(port: int, seconds: float, workers: int = 20) -> None:
    """From one address, ``workers`` loops connecting again and again for ``seconds``; report
    the greetings."""
    held: list[asyncio.StreamWriter] = []
    greetings = {"220": 0, "421": 0, "other": 0}
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            line = (await reader.readline()).decode()
            key = line[:3] if line[:3] in greetings else "other"
            greetings[key] += 1
            if key == "220":
                held.append(writer)  # keep the admitted ones: the rest must be refused
            else:
                writer.close()

    await asyncio.gather(*(worker() for _ in range(workers)))
    print(json.dumps(greetings), flush=True)
    for writer in held:
        writer.close()


def attacker(mode: str, port: int, amount: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.smtp_flood", f"--{mode}", str(port), str(amount)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


# -- the run ----------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    port = free_port()
    config = write_config(workdir, port, max_connections=max(200, args.held + 100))
    log_path = workdir / "server.log"
    with log_path.open("w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "dunmail.cli", "run", "--config", str(config)],
            cwd=workdir,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        await wait_for_port(port, time.monotonic() + 60)
        await deliveries(port, 3, 10_000)  # warm: imports, first connections to the database
        result: dict[str, Any] = {"baseline": await deliveries(port, args.deliveries, 0)}

        holder = attacker("hold", port, args.held)
        if holder.stdout is None or holder.stdin is None:
            raise RuntimeError("the attacker process has no pipes")
        greetings = json.loads(await asyncio.to_thread(holder.stdout.readline))
        result["held"] = {
            "connections": args.held,
            "greetings": greetings,
            **await deliveries(port, args.deliveries, 1000),
        }
        holder.stdin.close()
        holder.wait(30)

        await asyncio.sleep(1)
        churner = attacker("churn", port, args.churn_seconds)
        if churner.stdout is None:
            raise RuntimeError("the attacker process has no pipes")
        timed = await deliveries(port, args.deliveries, 2000)
        greetings = json.loads(await asyncio.to_thread(churner.stdout.readline))
        churner.wait(30)
        result["refused"] = {
            "seconds": args.churn_seconds,
            "greetings": greetings,
            "refused_per_second": round(greetings["421"] / args.churn_seconds),
            **timed,
        }
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    result["server_log_bytes"] = log_path.stat().st_size
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "smtp_flood.log").write_bytes(log_path.read_bytes())  # what the throttle let by
    return result


def build_table(r: dict[str, Any]) -> list[dict[str, str]]:
    """The README rows (what, measured, target, notes) from the result figures."""
    held, refused = r["held"], r["refused"]
    return [
        {
            "what": "inbound SMTP delivery, no attacker",
            "measured": f"{r['baseline']['median_ms']:.0f} ms median",
            "target": "-",
            "notes": f"p95 {r['baseline']['p95_ms']:.0f} ms; connect to 250 after DATA "
            "(committed to SQLite), dunmail run",
        },
        {
            "what": f"... while {held['connections']:,} idle connections are held",
            "measured": f"{held['median_ms']:.0f} ms median",
            "target": "a delivery still succeeds",
            "notes": f"p95 {held['p95_ms']:.0f} ms, max {held['max_ms']:.0f} ms; "
            f"{held['greetings']['220']} admitted from {SOURCES} addresses",
        },
        {
            "what": "... while one client floods connections",
            "measured": f"{refused['median_ms']:.0f} ms median",
            "target": "a delivery still succeeds",
            "notes": f"p95 {refused['p95_ms']:.0f} ms; {refused['greetings']['421']:,} refused "
            f"with 421 in {refused['seconds']:g} s ({refused['refused_per_second']:,}/s); "
            f"server log {r['server_log_bytes']:,} bytes for the whole run",
        },
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=30)
    parser.add_argument("--held", type=int, default=1200)
    parser.add_argument("--churn-seconds", type=float, default=5.0)
    parser.add_argument("--hold", nargs=2, metavar=("PORT", "COUNT"), help=argparse.SUPPRESS)
    parser.add_argument("--churn", nargs=2, metavar=("PORT", "SECONDS"), help=argparse.SUPPRESS)
    args, unknown = parser.parse_known_args(argv)
    if args.hold:
        asyncio.run(hold(int(args.hold[0]), int(float(args.hold[1]))))
        return 0
    if args.churn:
        asyncio.run(churn(int(args.churn[0]), float(args.churn[1])))
        return 0
    if unknown:
        print(f"smtp_flood.py: ignoring {' '.join(unknown)}")
    with tempfile.TemporaryDirectory(prefix="smtp-flood-") as tmp:
        result = asyncio.run(measure(args, Path(tmp)))
    result["python"] = platform.python_version()
    result["table"] = build_table(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "smtp_flood.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=2))
    for row in result["table"]:
        print("| " + " | ".join(row.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
