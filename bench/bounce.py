"""Bounce decoding: messages per second through ``bounce.parse`` beside the stdlib parser alone.

    PYTHONPATH=. python bench/bounce.py [--passes 7] [--cpu 0] [--profile]

Every message of the labelled corpus (``../shared/bounce-corpus``: ``emails/``, ``crlf/`` and
``postfix/``) is read into memory first, so no file I/O is timed. Then, pinned to one core:

* parse: ``bounce.parse(raw)`` over every message, ``--passes`` times; the median pass gives
  messages per second. A first, untimed pass warms imports and caches.
* stdlib: ``email.message_from_bytes(raw, policy=email.policy.default)`` over the same bytes,
  the same way: what merely parsing the MIME costs, the floor under any decoder.

The targets: ``bounce.parse`` reads at least 2,000 messages/s on one core, and at least 270 % of
the stdlib parser's rate on the same bytes (issue 15), a ratio that holds on a shared, noisy
machine better than a rate does: compare revisions alternately in one time window. ``--profile``
prints the 25 costliest functions of one pass (cProfile, cumulative). Results go to stdout and
``bench/results/bounce.json`` (a ``table`` for bench/run_all.py). Arguments this script does not
know are ignored with a note.
"""

from __future__ import annotations

import argparse
import cProfile
import email
import email.policy
import json
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script, this file's own folder is sys.path[0], where this module's name would shadow
# the bounce package it measures: take the folder off the path before importing the package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

from bounce import parse  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CORPUS = ROOT.parent / "shared" / "bounce-corpus"
TARGET_RATE = 2000.0  # messages per second, one core
TARGET_RATIO = 2.7  # parse's rate over the stdlib parser's, same bytes (issue 15)


def load_corpus(corpus: Path) -> list[bytes]:
    """Every message of the corpus, as bytes, in a fixed order."""
    paths = sorted(
        p for folder in ("emails", "crlf", "postfix") for p in (corpus / folder).glob("*")
    )
    return [p.read_bytes() for p in paths if p.is_file() and p.suffix != ".jsonl"]


def pin_to_one_core(cpu: int) -> str:
    """Run on one core where the OS allows it; say which."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity)"


def time_passes(work: Callable[[bytes], object], messages: list[bytes], passes: int) -> list[float]:
    """Seconds per pass over ``messages``, after one untimed warm-up pass."""
    for raw in messages:
        work(raw)
    seconds: list[float] = []
    for _ in range(passes):
        started = time.perf_counter()
        for raw in messages:
            work(raw)
        seconds.append(time.perf_counter() - started)
    return seconds


def stdlib_parse(raw: bytes) -> object:
    """The stdlib parser alone, with the modern policy."""
    return email.message_from_bytes(raw, policy=email.policy.default)


def profile(messages: list[bytes]) -> None:
    """The costliest functions of one warm ``bounce.parse`` pass (imports and caches filled)."""
    for raw in messages:
        parse(raw)
    profiler = cProfile.Profile()
    profiler.enable()
    for raw in messages:
        parse(raw)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def build_table(r: dict[str, Any]) -> list[dict[str, str]]:
    """The README rows (what, measured, target, notes) from the result figures."""
    parse_rate, stdlib_rate = r["parse"]["rate"], r["stdlib"]["rate"]
    met = "met" if r["target_met"] else "NOT met"
    return [
        {
            "what": "bounce.parse, one core",
            "measured": f"{parse_rate:,.0f} messages/s",
            "target": f">= {TARGET_RATE:,.0f} messages/s and >= {TARGET_RATIO:.0%} of the "
            f"stdlib rate ({met})",
            "notes": f"{r['messages']} corpus messages in memory; median of {r['passes']} "
            f"passes; {parse_rate / stdlib_rate:.0%} of the stdlib parser's rate",
        },
        {
            "what": "stdlib email.message_from_bytes (policy=default), one core",
            "measured": f"{stdlib_rate:,.0f} messages/s",
            "target": "-",
            "notes": "same bytes, MIME parse only: the floor under any decoder",
        },
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--passes", type=int, default=7)
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--profile", action="store_true")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"bounce.py: ignoring {' '.join(unknown)}")
    if not (args.corpus / "emails").is_dir():
        print(f"bounce.py: no corpus at {args.corpus}")
        return 1
    messages = load_corpus(args.corpus)
    pinned = pin_to_one_core(args.cpu)
    print(f"bounce: {len(messages)} messages, {args.passes} passes, {pinned}")
    if args.profile:
        profile(messages)
    figures: dict[str, dict[str, Any]] = {}
    for name, work in (("parse", parse), ("stdlib", stdlib_parse)):
        seconds = time_passes(work, messages, args.passes)
        median = statistics.median(seconds)
        figures[name] = {
            "rate": round(len(messages) / median, 1),
            "median_seconds": round(median, 4),
            "runs": [round(s, 4) for s in seconds],
        }
        print(f"  {name}: {figures[name]['rate']:,.0f} messages/s (median {median:.3f} s)")
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "messages": len(messages),
        "passes": args.passes,
        "pinned": pinned,
        **figures,
        "target_rate": TARGET_RATE,
        "ratio": round(figures["parse"]["rate"] / figures["stdlib"]["rate"], 3),
        "target_ratio": TARGET_RATIO,
    }
    result["target_met"] = (
        result["parse"]["rate"] >= TARGET_RATE and result["ratio"] >= TARGET_RATIO
    )
    result["table"] = build_table(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bounce.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print()
    for row in result["table"]:
        print("| " + " | ".join(row.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
