"""The suite's own rules: layering, edge-module imports, the clock, and a loadable example."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mailer", "scheduler", "bounce", "dunmail")
# Third-party modules that may be imported only by their one edge module.
EDGES = {
    "aiosmtplib": {"mailer/outbound/smtp.py"},
    "weasyprint": {"mailer/pdf.py", "mailer/pdf_fetch.py"},
    "dkim": {"mailer/dkim.py"},
    "flanker": {"bounce/addresses.py"},
}


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_sources_found() -> None:
    assert len(_sources()) > 10  # the checks below would pass vacuously on an empty tree


@pytest.mark.parametrize("module,allowed", sorted(EDGES.items()))
def test_edge_libraries_stay_in_their_module(module: str, allowed: set[str]) -> None:
    offenders = [
        _rel(p)
        for p in _sources()
        if _rel(p) not in allowed
        and any(n == module or n.startswith(module + ".") for n in _imports(p))
    ]
    assert offenders == []


def test_transport_implementations_are_chosen_only_by_the_shell() -> None:
    """Pure modules see the Transport protocol; only dunmail/ wires SMTP in (tests pass Memory)."""
    implementations = {"mailer.outbound.smtp", "mailer.outbound.memory"}
    offenders = [
        (_rel(p), n)
        for p in _sources()
        if _rel(p).split("/")[0] != "dunmail" and not _rel(p).startswith("mailer/outbound/")
        for n in _imports(p)
        if n in implementations
    ]
    assert offenders == []
    assert "aiosmtplib" not in _imports(ROOT / "mailer" / "outbound" / "transport.py")


def test_no_smtplib_anywhere() -> None:
    assert [_rel(p) for p in _sources() if "smtplib" in _imports(p)] == []


def test_mailer_imports_no_upper_layer() -> None:
    offenders = [
        (_rel(p), n)
        for p in (ROOT / "mailer").rglob("*.py")
        for n in _imports(p)
        if n.split(".")[0] in {"scheduler", "bounce", "dunmail"}
    ]
    assert offenders == []


def test_scheduler_and_bounce_do_not_import_the_shell() -> None:
    offenders = [
        (_rel(p), n)
        for pkg in ("scheduler", "bounce")
        for p in (ROOT / pkg).rglob("*.py")
        for n in _imports(p)
        if n.split(".")[0] == "dunmail"
    ]
    assert offenders == []


def test_bounce_detectors_import_nothing_of_ours() -> None:
    offenders = [
        (_rel(p), n)
        for p in (ROOT / "bounce" / "detectors").rglob("*.py")
        for n in _imports(p)
        if n.split(".")[0] in PACKAGES
    ]
    assert offenders == []


def test_wall_clock_read_only_in_clock_module() -> None:
    offenders = []
    for path in _sources():
        if _rel(path) == "mailer/clock.py":
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ("datetime.now(", "datetime.utcnow(", "date.today(", "time.time("):
            if needle in text:
                offenders.append((_rel(path), needle))
    assert offenders == []


def test_no_utils_modules() -> None:
    banned = {"utils.py", "helpers.py", "common.py"}
    assert [_rel(p) for p in _sources() if p.name in banned] == []


def test_example_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from dunmail.config import load_config

    monkeypatch.setenv("DUNMAIL_SECRET_KEY", "x" * 32)
    config = load_config(ROOT / "config.example.toml")
    assert config.tenants["acme"].smtp is not None
    assert [k.algorithm.value for k in config.tenants["acme"].dkim] == [
        "rsa-sha256",
        "ed25519-sha256",
    ]


def test_every_email_kind_has_all_three_parts() -> None:
    root = ROOT / "templates" / "email"
    kinds = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith("_")]
    assert kinds
    for kind in kinds:
        assert {"subject.txt", "body.txt", "body.html"} <= {f.name for f in kind.iterdir()}, kind
