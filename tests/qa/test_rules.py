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
    "weasyprint": {"mailer/content/pdf.py", "mailer/content/pdf_fetch.py"},
    "dkim": {"mailer/outbound/dkim.py"},
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


# Relative imports: production code names its modules absolutely, so a grep for a module's name
# finds every user of it. The one exception is bounce/detectors/, the detection library that
# imports nothing of ours (see above): it names its siblings relatively and consistently, so it
# can be lifted out as a package of its own. There, only siblings (one dot) may be named.
RELATIVE_IMPORTS_ALLOWED = "bounce/detectors/"


def _import_froms(path: Path) -> list[ast.ImportFrom]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]


def test_relative_imports_only_inside_the_detection_library() -> None:
    offenders = [
        (_rel(p), node.lineno, "." * node.level + (node.module or ""))
        for p in _sources()
        for node in _import_froms(p)
        if node.level and not (_rel(p).startswith(RELATIVE_IMPORTS_ALLOWED) and node.level == 1)
    ]
    assert offenders == [], (
        f"relative imports are allowed only between siblings in {RELATIVE_IMPORTS_ALLOWED}; "
        "name the module absolutely"
    )


def _absolute_imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, anywhere in it (module level, inside functions, under
    ``TYPE_CHECKING``), with relative imports resolved against the module's own package."""
    package = path.relative_to(ROOT).parent.parts
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            found.append((node.lineno, ".".join([*base, *([node.module] if node.module else [])])))
        elif (  # importlib.import_module("dunmail...") / __import__("dunmail...")
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
            in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def test_absolute_imports_resolve_relative_ones() -> None:
    """The scan below sees through relative imports (else ``from .. import x`` would hide)."""
    resolved = dict(_absolute_imports(ROOT / "bounce" / "detectors" / "dsn.py"))
    assert "bounce.detectors.base" in resolved.values()


def test_lower_floors_never_import_the_shell() -> None:
    """mailer/, scheduler/ and bounce/ never import dunmail/, at any depth of a module (a
    function-level import is still a call back into the shell at runtime)."""
    offenders = [
        (_rel(p), line, name)
        for pkg in ("mailer", "scheduler", "bounce")
        for p in (ROOT / pkg).rglob("*.py")
        for line, name in _absolute_imports(p)
        if name.split(".")[0] == "dunmail"
    ]
    assert offenders == []


# No callable from the shell is handed down (STYLE.md section 1): ``build_services`` gives the
# objects of mailer/, scheduler/ and bounce/ other objects of their own floors or below, never a
# lambda or a bound method of a dunmail object to call back, and wires each object completely in
# its constructor (no ``x.attr = ...`` afterwards: a half-built object is never visible).
COMPOSITION_ROOT = "dunmail/app.py"
LOWER_FLOORS = ("mailer", "scheduler", "bounce")


def _imported_from(tree: ast.Module) -> dict[str, str]:
    """Local name -> the top-level package it was imported from."""
    origin: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                origin[alias.asname or alias.name] = node.module.split(".")[0]
    return origin


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _shell_callables_handed_down(source: str) -> list[str]:
    """Where ``build_services`` passes a lambda or a bound method of a dunmail object (the
    ``services``, ``self``, or a local built by a dunmail class or function) to a constructor
    or function of a lower floor, and where it assigns an attribute after construction."""
    tree = ast.parse(source)
    origin = _imported_from(tree)
    own = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    [build] = [
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "build_services"
    ]
    shell = {"services", "self"}
    # Functions of the shell itself: app.py's own and those defined inside build_services.
    shell_functions = own | {
        n.name
        for n in ast.walk(build)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n is not build
    }
    for node in ast.walk(build):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            callee = _root_name(node.value.func)
            if callee in own or origin.get(callee or "") == "dunmail":
                shell.update(t.id for t in node.targets if isinstance(t, ast.Name))
    found: list[str] = []
    for node in ast.walk(build):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found += [
                f"line {node.lineno}: {ast.unparse(t)} assigned after construction"
                for t in targets
                if isinstance(t, ast.Attribute)
            ]
        if not isinstance(node, ast.Call):
            continue
        if origin.get(_root_name(node.func) or "") not in LOWER_FLOORS:
            continue
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            if (
                isinstance(arg, ast.Lambda)
                or (isinstance(arg, ast.Attribute) and _root_name(arg) in shell)
                or (isinstance(arg, ast.Name) and arg.id in shell_functions)
            ):
                found.append(
                    f"line {arg.lineno}: {ast.unparse(arg)} given to {ast.unparse(node.func)}"
                )
    return found


def test_no_shell_callable_is_handed_down() -> None:
    source = (ROOT / COMPOSITION_ROOT).read_text(encoding="utf-8")
    assert _shell_callables_handed_down(source) == []


def test_the_hand_down_check_sees_what_it_forbids() -> None:
    """The check above would pass vacuously if it looked in the wrong place: the wiring it
    replaced (issue 16) fails it on every count."""
    old = """
from dunmail.services.sending import Sending
from mailer.outbound.dispatch import Dispatcher
from scheduler.dunning import Dunning
from scheduler.events import EventPass


def build_services(config, clock):
    services = Services(config=config)
    sending = Sending(config)
    outbox = Dispatcher(config)
    services.dunning = Dunning(
        rules_for=services.rules_for,
        recipients_of=lambda session, invoice: (),
        enqueue=sending.enqueue_batch,
    )
    outbox.window = services.preflight.window

    def calendar_for(customer):
        return services.rules_for(customer.tenant_id, customer).calendar

    EventPass(calendar_for=calendar_for)
    return services
"""
    assert len(_shell_callables_handed_down(old)) == 6


# The file-size rule (STYLE.md section 4): a production module has at most MAX_LINES lines.
# A module that grows past it holds more than one concept: split it by concept, never raise
# the limit. (Generated migrations are exempt: never edited after they land.)
MAX_LINES = 400


def _line_counts() -> dict[str, int]:
    return {
        _rel(p): len(p.read_text(encoding="utf-8").splitlines())
        for p in _sources()
        if "/migrations/" not in _rel(p)
    }


def test_modules_stay_under_the_size_limit() -> None:
    offenders = {path: lines for path, lines in _line_counts().items() if lines > MAX_LINES}
    assert offenders == {}, f"a module has at most {MAX_LINES} lines: split these by concept"


# Email kinds are named through mailer.content.kinds.Kind, and its groups (REMINDERS,
# INVOICE_EMAILS, ...)
# are defined there only: a kind spelt as a string elsewhere, or a local tuple of kinds, drifts
# from the registry unnoticed. Some kind names are also the name of a document or a context key
# ("statement", "refund": a PDF, ``context["refund"]``); those words count as kinds only where a
# kind goes: a ``kind=`` argument, a comparison with a ``kind``, a value given to a ``kind``.
KINDS_MODULE = "mailer/content/kinds.py"


def _kind_words() -> tuple[frozenset[str], frozenset[str]]:
    """Every kind's name, and those that also name a document or a context key."""
    from typing import get_args

    from mailer.content.kinds import KINDS, Kind, Pdf

    names = frozenset(k.value for k in Kind)
    other_uses = set(get_args(Pdf)).union(*(spec.variables for spec in KINDS.values()))
    return names, names & frozenset(other_uses)


def _production_trees() -> list[tuple[str, ast.Module]]:
    return [
        (_rel(p), ast.parse(p.read_text(encoding="utf-8"), filename=str(p)))
        for p in _sources()
        if _rel(p) != KINDS_MODULE and "/migrations/" not in _rel(p)  # revisions stay as written
    ]


def _docstrings(tree: ast.Module) -> set[int]:
    defs = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, defs)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def _holds_a_kind(node: ast.AST | None) -> bool:
    """``kind``, ``message.kind``, ``col(Message.kind)``, ``reminder_kind``."""
    if isinstance(node, ast.Call) and node.args:
        node = node.args[0]
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")
    return name == "kind" or name.endswith("_kind")


def _in_kind_slot(node: ast.AST, parents: dict[int, ast.AST]) -> bool:
    child, parent = node, parents.get(id(node))
    while isinstance(parent, (ast.Tuple, ast.List, ast.Set, ast.IfExp)):
        child, parent = parent, parents.get(id(parent))
    if isinstance(parent, ast.keyword):
        return parent.arg is not None and _holds_a_kind(ast.Name(parent.arg))
    if isinstance(parent, ast.Compare):
        return any(_holds_a_kind(n) for n in (parent.left, *parent.comparators) if n is not child)
    if isinstance(parent, (ast.Assign, ast.AnnAssign)):
        targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
        return any(_holds_a_kind(t) for t in targets)
    return False


def test_kind_names_are_spelt_through_the_enum() -> None:
    names, shared = _kind_words()
    offenders = []
    for path, tree in _production_trees():
        parents = {id(c): n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and node.value in names
                and id(node) not in docstrings
                and (node.value not in shared or _in_kind_slot(node, parents))
            ):
                offenders.append(f"{path}:{node.lineno}: {node.value!r}")
    assert offenders == [], (
        "write Kind.<NAME> (mailer/content/kinds.py) instead of the kind's string"
    )


def test_groups_of_kinds_are_defined_only_in_the_registry() -> None:
    from mailer.content.kinds import Kind

    names, _ = _kind_words()
    members = set(Kind.__members__)

    def is_kind(node: ast.expr) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        return (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "Kind"
            and node.attr in members
        )

    offenders = [
        f"{path}:{node.lineno}"
        for path, tree in _production_trees()
        for node in ast.walk(tree)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set))
        and len(node.elts) >= 2
        and any(is_kind(e) for e in node.elts)
        and all(is_kind(e) or isinstance(e, ast.Starred) for e in node.elts)
    ]
    assert offenders == [], "name the group once in mailer/content/kinds.py and import it"


def test_kind_enum_is_the_registry() -> None:
    from typing import get_args

    from mailer.content.kinds import KINDS, REMINDERS, Kind, ReminderKind

    assert list(Kind) == list(KINDS)
    assert get_args(ReminderKind) == REMINDERS
