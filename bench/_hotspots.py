"""Turn a cProfile of the pipeline into where the time goes: per stage, then per function.

cProfile sees only the thread it runs in, so the profiled deliver pass runs ``asyncio.to_thread``
work (claim, DKIM, record) inline on the event loop: the shares are right, the rate is not.
"""

from __future__ import annotations

import asyncio
import pstats
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

# (label, end of the file path, function name): cumulative time of that function. Stages may
# nest (enqueue contains its look-up), so shares need not add up to 100 %.
DELIVER_STAGES = (
    ("claim (select + lease)", "mailer/outbound/dispatch.py", "claim_due"),
    ("render (Jinja2 + Babel)", "mailer/content/render.py", "render"),
    ("compose (mime.py skeleton)", "mailer/outbound/mime.py", "compose"),
    ("DKIM sign (dkim_fast + OpenSSL)", "mailer/outbound/dkim.py", "sign"),
    ("envelope + VERP", "mailer/outbound/identity.py", "envelope_for"),
    ("throttle (one shared take per batch)", "mailer/outbound/throttle.py", "delay_many"),
    ("SMTP send (aiosmtplib)", "mailer/outbound/smtp.py", "send"),
    ("record results (one txn per batch)", "mailer/outbound/record.py", "record"),
    ("  record: decide()", "mailer/outbound/delivery.py", "decide"),
    ("  commit / flush", "sqlalchemy/orm/session.py", "commit"),
)
ENQUEUE_STAGES = (
    ("contacts_by_customer (a query per 500)", "mailer/ledger/queries.py", "contacts_by_customer"),
    ("invoice_context", "mailer/content/context.py", "invoice_context"),
    ("Queue.enqueue_many", "mailer/outbound/queue.py", "enqueue_many"),
)


async def _inline(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    return func(*args, **kwargs)


@contextmanager
def threads_inline() -> Iterator[None]:
    """Run ``asyncio.to_thread`` calls on the loop's thread, where cProfile can see them."""
    real = asyncio.to_thread
    asyncio.to_thread = _inline
    try:
        yield
    finally:
        asyncio.to_thread = real


def summarise(
    stats: pstats.Stats,
    *,
    stages: tuple[tuple[str, str, str], ...],
    messages: int,
    top: int,
    root: Path,
) -> dict[str, Any]:
    """Stage times (cumulative) and the ``top`` functions by own time, per message too."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in table.values()) or 1e-9
    found = []
    for label, path_end, name in stages:
        seconds = sum(
            entry[3]
            for (path, _line, func), entry in table.items()
            if func == name and path.endswith(path_end)
        )
        found.append(
            {
                "stage": label,
                "seconds": round(seconds, 4),
                "share": round(seconds / total, 3),
                "us_per_message": round(seconds / messages * 1e6, 1),
            }
        )
    hotspots = sorted(table.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return {
        "profiled_seconds": round(total, 3),
        "stages": found,
        "hotspots": [
            {
                "function": f"{_short(path, root)}:{line}({name})",
                "own_seconds": round(entry[2], 4),
                "cumulative_seconds": round(entry[3], 4),
                "calls": entry[1],
            }
            for (path, line, name), entry in hotspots
        ],
    }


def render(title: str, summary: dict[str, Any]) -> str:
    """Plain-text report of one ``summarise`` result."""
    lines = [f"{title} ({summary['profiled_seconds']} s under cProfile)"]
    lines += ["   share   us/msg  stage (cumulative)"]
    lines += [
        f"  {s['share']:6.1%}  {s['us_per_message']:7.0f}  {s['stage']}" for s in summary["stages"]
    ]
    lines += ["", "   own s    cum s     calls  function (by own time)"]
    lines += [
        f"  {h['own_seconds']:6.3f}  {h['cumulative_seconds']:7.3f}  {h['calls']:8d}  "
        f"{h['function']}"
        for h in summary["hotspots"]
    ]
    return "\n".join(lines)


def _short(path: str, root: Path) -> str:
    for marker in ("site-packages/", "/lib/python3.", f"{root}/"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3." else tail
    return path
