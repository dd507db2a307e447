"""Adapters stay thin: routes and web commands make calls on services, never on the database.

A route or a command that opens a session grows queries of its own, which the next adapter
(the API beside the UI, the CLI beside both) copies and lets drift. So the modules that speak
HTTP or parse a command line never name the engine (``services.engine``, ``.engine``) nor
open a transaction (``Session(...)``, ``session_scope(...)``); the queries live in the
services: ``Services``' parts and the web side's own service modules listed below.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "dunmail" / "web"

# dunmail/web/: the modules that are adapters (routes, FastAPI dependencies, the app)...
WEB_ADAPTERS = {
    "__init__.py",
    "api.py",
    "api_reads.py",
    "apikeys.py",
    "app.py",
    "auth.py",
    "capture_views.py",
    "deps.py",
    "hosted.py",
    "hosted_format.py",  # pure: the hosted page's words, amounts and dates
    "limits.py",
    "links.py",
    "login.py",
    "ops.py",
    "portal.py",  # the customer account page's routes
    "portal_page.py",  # pure: the account page's words and figures, like hosted.py
    "portal_query.py",  # the account page's query form
    "portal_query_page.py",  # the query section's words (one service read)
    "ui_queries.py",  # the clerk's answer, resolve and attachment download of a query
    "portal_bank.py",  # pure: the account page's bank-transfer box
    "portal_sections.py",  # the bank box and statements as template context
    "portal_documents.py",  # the account page's PDFs and bank transfer routes
    "portal_prefs.py",  # the account page's delivery preferences and contact confirmation
    "ui.py",
    "ui_common.py",
    "ui_lists.py",
}
# ...and those that are the web side's services and tables, where the queries live.
WEB_SERVICES = {
    "accounts.py",  # Services.accounts: users, sign-ins, web sessions, API keys
    "users.py",
    "keyring.py",
    "throttle.py",
    "idempotency.py",
    "models.py",
    "api_service.py",
    "link_service.py",
    "ops_service.py",
}
# The command line: every module that parses a command.
CLI_ADAPTERS = {f"dunmail/{p.name}" for p in (ROOT / "dunmail").glob("cli*.py")}
OPENERS = {"Session", "session_scope"}


def _touches_the_database(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "engine":
            found.append(f"line {node.lineno}: .engine")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in OPENERS:
                found.append(f"line {node.lineno}: {name}(...)")
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.extend(
                f"line {node.lineno}: imports {alias.name}"
                for alias in node.names
                if alias.name in OPENERS
            )
    return found


def test_every_web_module_is_an_adapter_or_a_service() -> None:
    modules = {p.name for p in WEB.glob("*.py")}
    unsorted = modules - WEB_ADAPTERS - WEB_SERVICES
    assert not unsorted, f"say whether these are adapters or services: {sorted(unsorted)}"
    assert not WEB_ADAPTERS & WEB_SERVICES
    gone = (WEB_ADAPTERS | WEB_SERVICES) - modules
    assert not gone, f"listed but not there: {sorted(gone)}"


def test_adapters_never_touch_the_database() -> None:
    adapters = [WEB / name for name in sorted(WEB_ADAPTERS)]
    adapters += [ROOT / path for path in sorted(CLI_ADAPTERS)]
    offences = {
        path.relative_to(ROOT).as_posix(): found
        for path in adapters
        if (found := _touches_the_database(path))
    }
    assert not offences, f"adapters call services, never the database: {offences}"


def test_web_adapters_build_no_queries() -> None:
    """Not even a ``select``: a route that builds a query has a service's work in it."""
    offences: dict[str, list[str]] = {}
    for name in sorted(WEB_ADAPTERS):
        path = WEB / name
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            else:
                continue
            found = [m for m in modules if m.split(".")[0] in ("sqlmodel", "sqlalchemy")]
            offences.setdefault(name, []).extend(f"line {node.lineno}: {m}" for m in found)
    offences = {name: found for name, found in offences.items() if found}
    assert not offences, f"web adapters import no database library: {offences}"
