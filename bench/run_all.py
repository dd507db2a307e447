"""Run every benchmark in bench/, then rewrite the README's performance table from their results.

    python3 dev.py bench                         # what the README's numbers come from
    python3 dev.py bench --only postoffice       # re-run one; the others' rows are kept
    PYTHONPATH=. python bench/run_all.py --no-run --readme /tmp/README.md   # table only

A benchmark is any ``bench/*.py`` except this file and names starting with ``_`` (helpers). Each
runs as a module (``python -m bench.<name>``, so that ``bench/bounce.py`` cannot shadow the
``bounce`` package) and writes ``bench/results/<name>.json`` holding a ``table`` of rows (what,
measured, target, notes). The README's table is rebuilt from every result present, in the order
of ``ORDER``, after a "side by side" block of the ratios issue 7 sets targets for; a benchmark
with no result, or with no script yet, gets a "not run" row. The line under the table gives
when each result was measured. The table lands between ``<!-- perf:start -->`` and
``<!-- perf:end -->`` in the README; the first time, it replaces a line reading ``PERF_TABLE``.

A benchmark that writes no fresh result has failed, and the README is left alone. One that
writes its result and exits non-zero (crash.py and fuzz.py do when they find something) has
reported findings: its rows go in, and this script exits 1 once the README is rewritten.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
RUNS = RESULTS / "_runs.json"  # which run_all invocation wrote which result
START, END = "<!-- perf:start -->", "<!-- perf:end -->"
PLACEHOLDER = "PERF_TABLE"
COLUMNS = ("what", "measured", "target", "notes")
# The table's order; any other bench/*.py follows, by name. crash and fuzz may not exist yet.
ORDER = ("send", "render", "postoffice", "plan", "bounce", "crash", "fuzz")


def benchmarks() -> list[Path]:
    """The benchmark scripts present, in table order."""
    found = {
        p.stem: p
        for p in BENCH.glob("*.py")
        if not p.name.startswith("_") and p.name != "run_all.py"
    }
    names = [n for n in ORDER if n in found] + sorted(set(found) - set(ORDER))
    return [found[n] for n in names]


def run_one(script: Path, extra: list[str], runs: dict[str, Any]) -> int | None:
    """Run one benchmark with the repository importable; its exit status when it wrote a fresh
    result (recorded in ``runs``), else None.
    """
    result = RESULTS / f"{script.stem}.json"
    started = time.time()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    print(f"== {script.relative_to(ROOT)}", flush=True)
    module = f"bench.{script.stem}"
    code = subprocess.run([sys.executable, "-m", module, *extra], cwd=ROOT, env=env).returncode
    took = time.time() - started
    if not result.exists() or result.stat().st_mtime < started:
        print(f"== {script.name} wrote no {result.relative_to(ROOT)} (exit {code})", flush=True)
        return None
    if code != 0:
        print(f"== {script.name} reported findings (exit {code}) in {took:.0f} s", flush=True)
    else:
        print(f"== {script.name} done in {took:.0f} s", flush=True)
    runs[script.stem] = {"mtime": result.stat().st_mtime, "took_seconds": round(took, 1)}
    return code


def load_runs() -> dict[str, Any]:
    try:
        data = json.loads(RUNS.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def machine() -> str:
    """Processor, CPU count and Python version, for the line under the table."""
    name = platform.processor() or platform.machine()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        cpuinfo = ""
    if model := re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE):
        name = f"{model.group(1).strip()} ({name})"
    return f"{name}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def measured_at(name: str, path: Path, result: dict[str, Any], runs: dict[str, Any]) -> str:
    """When a result was measured: the start of the run_all invocation that wrote it, or the
    result's own date when it was run on its own since.
    """
    entry = runs.get(name)
    if isinstance(entry, dict) and abs(entry.get("mtime", 0) - path.stat().st_mtime) < 1:
        return str(entry["run"])
    if isinstance(date := result.get("date"), str):
        try:
            return datetime.fromisoformat(date).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        except ValueError:
            pass
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- side by side: the ratios issue 7 sets targets for ------------------------------------------

DB_LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def _dig(result: dict[str, Any] | None, *keys: str) -> Any:
    value: Any = result
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _ratio_row(
    what: str,
    pairs: list[tuple[str, float | None, float | None]],
    *,
    target: float,
    percent: bool,
    notes: str,
    missing: str,
) -> dict[str, str]:
    """One ratio row: ``pairs`` is (label, numerator, denominator) per database or figure."""
    measured, verdicts = [], []
    for label, top, bottom in pairs:
        if top is None or not bottom:
            continue
        ratio = top / bottom
        shown = f"{ratio:.0%}" if percent else f"{ratio:.2f}x"
        measured.append(f"{shown} ({label})" if label else shown)
        ok = "met" if ratio >= target else "MISSED"
        verdicts.append(f"{label} {ok}" if label else ok)
    goal = f">= {target:.0%}" if percent else f">= {target:.1f}x"
    if not measured:
        return {"what": what, "measured": "n/a", "target": goal, "notes": missing}
    return {
        "what": what,
        "measured": ", ".join(measured),
        "target": f"{goal} ({', '.join(verdicts)}; issue 7)",
        "notes": notes,
    }


def side_by_side(results: dict[str, dict[str, Any]], when: dict[str, str]) -> list[dict[str, str]]:
    """The ratio rows, computed from send.json, postoffice.json and render.json."""
    send, office, render = results.get("send"), results.get("postoffice"), results.get("render")
    dbs = [
        db
        for db in DB_LABELS
        if isinstance(_dig(send, "pipeline", db, "deliver_rate"), int | float)
    ]

    def sources(*names: str) -> str:
        stamps = {when[n] for n in names if n in when}
        if len(stamps) > 1:
            return "; NOT the same run: " + ", ".join(f"{n} {when[n]}" for n in names if n in when)
        return ""

    def rate(result: dict[str, Any] | None, *keys: str) -> float | None:
        value = _dig(result, *keys)
        return float(value) if isinstance(value, int | float) else None

    raw = rate(send, "raw", "rate")
    rows = [
        _ratio_row(
            "side by side: reminders / raw aiosmtplib",
            [(DB_LABELS[db], rate(send, "pipeline", db, "deliver_rate"), raw) for db in dbs],
            target=0.40,
            percent=True,
            notes="dunmail's one-process deliver rate (claim to record, DKIM-signed) over the "
            "raw client's, same sink, same run of send.py",
            missing="needs bench/results/send.json",
        ),
        _ratio_row(
            "side by side: reminders / django-post_office, queued to sent",
            [
                (
                    DB_LABELS[db],
                    rate(send, "pipeline", db, "deliver_rate"),
                    rate(office, "backends", db, "send_rate"),
                )
                for db in dbs
            ],
            target=2.0,
            percent=False,
            notes="dunmail's one-process deliver pass over post_office's send_queued_mail "
            "(default settings), same database kind, same messages, same sink"
            + sources("send", "postoffice"),
            missing="needs bench/results/send.json and postoffice.json",
        ),
        _ratio_row(
            "side by side: reminders / django-post_office, end to end",
            [
                (
                    DB_LABELS[db],
                    rate(send, "pipeline", db, "end_to_end_rate"),
                    rate(office, "backends", db, "end_to_end_rate"),
                )
                for db in dbs
            ],
            target=2.0,
            percent=False,
            notes="enqueue plus deliver, each side's own way (dunmail: Queue.enqueue per "
            "invoice in one transaction; post_office: mail.send_many)"
            + sources("send", "postoffice"),
            missing="needs bench/results/send.json and postoffice.json",
        ),
        _ratio_row(
            "side by side: invoices with PDFs / plain WeasyPrint, 2 processes",
            [("", rate(render, "emails", "rate"), rate(render, "plain", "rate"))],
            target=0.90,
            percent=True,
            notes="dunmail's invoice emails with their PDF per second over WeasyPrint's own "
            "PDFs per second in 2 processes, same template, same run of render.py",
            missing="needs bench/results/render.json",
        ),
        _ratio_row(
            "side by side: 2 engine processes / 1, PostgreSQL",
            [("", rate(send, "pipeline", "postgresql", "processes", "scaling"), 1.0)],
            target=1.7,
            percent=False,
            notes="send.py's median of the per-run factors, one queue on one PostgreSQL",
            missing="needs a PostgreSQL run of bench/send.py",
        ),
    ]
    return rows


def build_table(
    results: dict[str, dict[str, Any]], when: dict[str, str], missing: dict[str, str]
) -> str:
    """The markdown block that goes between the markers.

    ``results``: each present result by benchmark name, in table order; ``when``: when each was
    measured; ``missing``: why a benchmark has no result, by name.
    """
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    rows = side_by_side(results, when)
    for name in [n for n in ORDER if n in results or n in missing] + sorted(
        (set(results) | set(missing)) - set(ORDER)
    ):
        if name in results:
            rows += results[name].get("table", [])
        else:
            rows.append(
                {"what": name, "measured": "not run", "target": "-", "notes": missing[name]}
            )
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in COLUMNS) + " |")
    groups: dict[str, list[str]] = {}
    for name in results:
        groups.setdefault(when[name], []).append(name)
    if len(groups) == 1:
        stamp = next(iter(groups))
    else:
        stamp = ", ".join(f"{s} ({', '.join(names)})" for s, names in sorted(groups.items()))
    lines += [
        "",
        f"Measured {stamp} on {machine()}, by `python3 dev.py bench` "
        "(`bench/run_all.py`; see `bench/README.md`).",
    ]
    return "\n".join(lines)


def rewrite(readme: str, table: str) -> str:
    """``readme`` with the block between the markers (or the placeholder line) replaced."""
    block = f"{START}\n{table}\n{END}"
    start, end = readme.find(START), readme.find(END)
    if start != -1 and end > start:
        return readme[:start] + block + readme[end + len(END) :]
    if start != -1 or end != -1:
        raise SystemExit(f"the README has only one of {START} and {END}, or them out of order")
    placeholder = re.compile(rf"^{PLACEHOLDER}[ \t]*$", re.MULTILINE)
    if not placeholder.search(readme):
        raise SystemExit(f"the README has neither {START} ... {END} nor a {PLACEHOLDER} line")
    return placeholder.sub(lambda _: block, readme, count=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--no-run", action="store_true", help="use the results already there")
    parser.add_argument("--no-readme", action="store_true", help="run, but leave the README")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these; keep the others' results"
    )
    parser.add_argument(
        "extra", nargs=argparse.REMAINDER, help="after --: arguments for every benchmark"
    )
    args = parser.parse_args(argv)
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    present = benchmarks()
    if args.only and (unknown := set(args.only) - {s.stem for s in present}):
        names = ", ".join(s.stem for s in present)
        raise SystemExit(f"no benchmark named {', '.join(sorted(unknown))} (there are: {names})")
    scripts = [s for s in present if not args.only or s.stem in args.only]
    if not scripts:
        raise SystemExit("no benchmarks to run")
    runs = load_runs()
    findings = []
    if not args.no_run:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        done: dict[str, Any] = {}
        failed = []
        for script in scripts:
            code = run_one(script, extra, done)
            if code is None:
                failed.append(script.name)
            elif code != 0:
                findings.append(script.name)
        for entry in done.values():
            entry["run"] = stamp
        runs.update(done)
        RESULTS.mkdir(parents=True, exist_ok=True)
        RUNS.write_text(json.dumps(runs, indent=2) + "\n", encoding="utf-8")
        if failed:
            print(f"failed: {', '.join(failed)}; {args.readme.name} left unchanged")
            return 1
    # The table is rebuilt from every result present, not only those just run.
    results: dict[str, dict[str, Any]] = {}
    when: dict[str, str] = {}
    missing: dict[str, str] = {}
    for name in [*ORDER, *(s.stem for s in present if s.stem not in ORDER)]:
        path = RESULTS / f"{name}.json"
        if path.exists():
            results[name] = json.loads(path.read_text(encoding="utf-8"))
            when[name] = measured_at(name, path, results[name], runs)
        elif (BENCH / f"{name}.py").exists():
            missing[name] = (
                f"no bench/results/{name}.json yet: `python3 dev.py bench --only {name}`"
            )
        else:
            missing[name] = f"bench/{name}.py does not exist yet"
    if not results:
        raise SystemExit(f"no results in {RESULTS}: run the benchmarks first")
    table = build_table(results, when, missing)
    print(f"\n{table}")
    if not args.no_readme:
        args.readme.write_text(
            rewrite(args.readme.read_text(encoding="utf-8"), table), encoding="utf-8"
        )
        print(f"\nrewrote the performance table in {args.readme}")
    if findings:
        print(f"findings reported by: {', '.join(findings)} (see their rows)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
