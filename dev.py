#!/usr/bin/env python3
"""Bootstrap and run dunmail from a clean checkout with nothing but Python 3.11+ and pip.

    python3 dev.py run     # the engine on its embedded defaults (demo tenant, capture server)
    python3 dev.py test    # the whole test suite
    python3 dev.py check   # ruff and mypy
    python3 dev.py bench   # the benchmarks under bench/

Each command first makes ./.venv and installs the project into it (again only when
pyproject.toml changed), so the two README commands are all a fresh machine needs.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".dunmail-installed"


def ensure_venv(extras: str = "test") -> None:
    """The venv with the project and its ``extras`` installed (again when pyproject.toml or
    the extras asked for change)."""
    wanted = _stamp(extras)
    # A venv made for the benchmarks (test and bench extras) serves the tests too.
    enough = {wanted, _stamp("test,bench")} if extras == "test" else {wanted}
    if STAMP.exists() and STAMP.read_text() in enough:
        return
    if not (BIN / "python").exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing dunmail and its dependencies into .venv ...", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[{extras}]"], check=True)
    STAMP.write_text(wanted)


def _stamp(extras: str) -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if command not in {"run", "test", "check", "bench", "dunmail"}:
        print(__doc__)
        return 0 if command in {"help", "-h", "--help"} else 2
    ensure_venv("test,bench" if command == "bench" else "test")
    os.chdir(ROOT)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if command == "run":
        args = [str(BIN / "dunmail"), "run", *rest]
    elif command == "dunmail":
        args = [str(BIN / "dunmail"), *rest]
    elif command == "test":
        # Every test has its own database (a SQLite file or a PostgreSQL schema) and its own
        # ports, so the suite runs on all cores; "-n 0" runs it in one process.
        # worksteal: a worker that runs out takes queued tests from the other, so the few
        # long tests (the matrix, the quarter) do not leave one core idle at the end.
        parallel = [] if any(a.startswith("-n") for a in rest) else ["-n", "auto"]
        parallel += [] if any(a.startswith("--dist") for a in rest) else ["--dist", "worksteal"]
        args = [str(BIN / "python"), "-m", "pytest", *parallel, *rest]
    elif command == "bench":
        args = [str(BIN / "python"), "bench/run_all.py", *rest]
    else:
        ruff = subprocess.run([str(BIN / "ruff"), "check", "."], env=env).returncode
        mypy = subprocess.run([str(BIN / "mypy")], env=env).returncode
        return ruff or mypy
    return subprocess.run(args, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
