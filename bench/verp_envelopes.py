"""The cost of one SMTP envelope per recipient (issue 14): messages/s for 1 and 3 recipients.

    python -m bench.verp_envelopes [--messages 400] [--runs 3] [--sink auto]

Each recipient gets its own transaction (MAIL FROM with its own VERP return path, RCPT, DATA)
so a bounce proves whom it is about (mailer/outbound/envelopes.py). This measures what that costs
against the old way, one transaction carrying every recipient ("one envelope"), which is
reproduced here by swapping the outbox's ``send_each`` for a single ``Transport.send`` with
the first recipient's return path: a bench-only stand-in, never used by the engine.

Each run: a fresh outbox of ``--messages`` reminders (text + HTML, DKIM, no PDF) over SQLite,
one ``Sending.deliver()`` pass into the loopback sink (Postfix's smtp-sink when installed,
else aiosmtpd in its own process), 16 pooled connections. Every message must end SENT and the
sink must count one transaction per recipient (per message for "one envelope"). Medians go to
stdout as a markdown table and to ``bench/results/verp_envelopes.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mailer.outbound.dispatch
from bench._sink import Sink
from bench._workload import (
    clear_outbox,
    count_sent,
    database,
    enqueue_invoice_emails,
    make_config,
    make_document,
)
from dunmail.app import build_services
from mailer.clock import SystemClock
from mailer.config import DKIMAlgorithm
from mailer.outbound.dkim import generate_key
from mailer.outbound.transport import SendResult, Transport

RESULTS = Path(__file__).parent / "results" / "verp_envelopes.json"


async def _one_envelope(
    transport: Transport, message: bytes, *, envelopes: Sequence[tuple[str, str]]
) -> SendResult:
    """The pre-issue-14 way: every recipient in one transaction, one return path."""
    recipients = [r for r, _ in envelopes]
    return await transport.send(message, sender=envelopes[0][1], recipients=recipients)


@contextmanager
def _mode(mode: str) -> Iterator[None]:
    names = vars(
        mailer.outbound.dispatch
    )  # the dispatcher's own binding of send_each, swapped for the run
    real = names["send_each"]
    if mode == "one envelope":
        names["send_each"] = _one_envelope
    try:
        yield
    finally:
        names["send_each"] = real


def _document(messages: int, recipients: int) -> dict[str, Any]:
    doc = make_document(messages, max(1, messages // 4))
    for customer in doc["customers"]:
        domain = customer["contacts"][0]["email"].partition("@")[2]
        customer["contacts"] = [
            {"email": f"{name}@{domain}", "name": name, "roles": ["ap"]}
            for name in ("ap", "billing", "owner")[:recipients]
        ]
    return doc


async def _run(
    workdir: Path, sink: Sink, *, messages: int, recipients: int, mode: str, runs: int
) -> dict[str, Any]:
    rates: list[float] = []
    with database("sqlite", workdir) as url:
        services = build_services(make_config(workdir, url, sink), SystemClock())
        try:
            report = services.ledger.import_document(
                _document(messages, recipients), tenant="bench"
            )
            if report.errors:
                raise SystemExit(f"the bench ledger did not import: {report.errors[:3]}")
            for _ in range(runs):
                clear_outbox(services.engine)
                enqueue_invoice_emails(services)
                before = sink.received()
                with _mode(mode):
                    began = time.perf_counter()
                    await services.sending.deliver()
                    seconds = time.perf_counter() - began
                if count_sent(services.engine) != messages:
                    raise SystemExit(f"{mode}, {recipients} recipients: not every message was sent")
                per = recipients if mode == "per recipient" else 1
                sink.wait_for(before + messages * per)
                rates.append(messages / seconds)
        finally:
            await services.close()
    return {
        "mode": mode,
        "recipients": recipients,
        "messages": messages,
        "messages_per_second": statistics.median(rates),
        "runs": rates,
    }


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sink", default="auto", choices=("auto", "smtp-sink", "aiosmtpd"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="verp-bench-") as tmp:
        workdir = Path(tmp)
        generate_key(workdir / "dkim-s1.pem", DKIMAlgorithm.RSA_SHA256)
        sink = Sink.start(args.sink, workdir)
        try:
            rows = [
                await _run(
                    workdir, sink, messages=args.messages, recipients=n, mode=mode, runs=args.runs
                )
                for n in (1, 3)
                for mode in ("one envelope", "per recipient")
            ]
        finally:
            sink.stop()
    print(f"sink: {sink.name}; {args.messages} messages a run, median of {args.runs}")  # noqa: T201
    print("| recipients | one envelope (before) | one per recipient (after) | cost |")  # noqa: T201
    print("| --- | --- | --- | --- |")  # noqa: T201
    for n in (1, 3):
        old, new = (r["messages_per_second"] for r in rows if r["recipients"] == n)
        print(f"| {n} | {old:.0f} msg/s | {new:.0f} msg/s | {1 - new / old:+.0%} |")  # noqa: T201
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"sink": sink.name, "rows": rows}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
