"""Run every benchmark in bench/, then rewrite the README's performance table from their results.

    python3 dev.py bench                         # what the README's numbers come from
    PYTHONPATH=. python bench/run_all.py --no-run --readme /tmp/README.md   # table only

A benchmark is any ``bench/*.py`` except this file and names starting with ``_`` (helpers). Each
writes ``bench/results/<name>.json`` holding a ``table`` of rows (what, measured, target, notes).
The table lands between ``<!-- perf:start -->`` and ``<!-- perf:end -->`` in the README; the
first time, it replaces a line reading ``PERF_TABLE``. If any benchmark fails, the README is
left alone.
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
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
START, END = "<!-- perf:start -->", "<!-- perf:end -->"
PLACEHOLDER = "PERF_TABLE"
COLUMNS = ("what", "measured", "target", "notes")


def benchmarks() -> list[Path]:
    return sorted(
        p for p in BENCH.glob("*.py") if not p.name.startswith("_") and p.name != "run_all.py"
    )


def run_one(script: Path, extra: list[str]) -> bool:
    """Run one benchmark with the repository importable; True when it wrote a fresh result."""
    result = RESULTS / f"{script.stem}.json"
    started = time.time()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    print(f"== {script.relative_to(ROOT)}", flush=True)
    code = subprocess.run([sys.executable, str(script), *extra], cwd=ROOT, env=env).returncode
    took = time.time() - started
    if code != 0:
        print(f"== {script.name} failed (exit {code}) after {took:.0f} s", flush=True)
        return False
    if not result.exists() or result.stat().st_mtime < started:
        print(f"== {script.name} wrote no {result.relative_to(ROOT)}", flush=True)
        return False
    print(f"== {script.name} done in {took:.0f} s", flush=True)
    return True


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


def build_table(results: list[dict[str, Any]]) -> str:
    """The markdown block that goes between the markers."""
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    for result in results:
        for row in result.get("table", []):
            lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in COLUMNS) + " |")
    when = datetime.now().strftime("%Y-%m-%d %H:%M")
    lines += [
        "",
        f"Measured {when} on {machine()}, by `python3 dev.py bench` "
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
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks")
    parser.add_argument(
        "extra", nargs=argparse.REMAINDER, help="after --: arguments for every benchmark"
    )
    args = parser.parse_args(argv)
    extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    scripts = [s for s in benchmarks() if not args.only or s.stem in args.only]
    if not scripts:
        raise SystemExit("no benchmarks to run")
    if not args.no_run:
        failed = [s.name for s in scripts if not run_one(s, extra)]
        if failed:
            print(f"failed: {', '.join(failed)}; {args.readme.name} left unchanged")
            return 1
    results = []
    for script in scripts:
        path = RESULTS / f"{script.stem}.json"
        if not path.exists():
            raise SystemExit(f"no result for {script.name} at {path}: run it first")
        results.append(json.loads(path.read_text(encoding="utf-8")))
    table = build_table(results)
    print(f"\n{table}")
    if args.no_readme:
        return 0
    args.readme.write_text(
        rewrite(args.readme.read_text(encoding="utf-8"), table), encoding="utf-8"
    )
    print(f"\nrewrote the performance table in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
