"""Email render: CPU per render of an invoice reminder, inlined per message vs. once per shape.

    PYTHONPATH=. python bench/render_once.py [--count 2000] [--rows /tmp/readme-render.md]

``before``: no slots are collected and the "cache" inlines what it is given, so every
message's HTML is rendered plainly and css-inline runs on it (what ``Renderer.render`` did
before issue 17).
``after``: the renderer as it is: the reminder's shape is inlined once, each message fills it.
Each run renders ``--count`` reminders, each with its own customer, invoice number and links,
after a warm-up, and reports processor time (``time.process_time``) per render, best of three.
``css-inline`` alone is its share of ``before``. Rows go to stdout and, as a Markdown table,
to ``--rows``. Arguments this script does not know are ignored with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time
from collections.abc import Iterator
from typing import Any

from mailer.content import render
from mailer.content.render import Renderer
from mailer.content.samples import sample_context

KIND = "invoice_reminder"


def _contexts(count: int) -> list[dict[str, Any]]:
    base = sample_context(KIND, locale="en")
    out = []
    for number in range(count):
        context = copy.deepcopy(base)
        context["customer"]["name"] = f"Customer {number}"
        context["invoice"]["number"] = f"INV-{number:06d}"
        context["links"] = {k: f"{v}-{number}" for k, v in context["links"].items() if v}
        out.append(context)
    return out


@contextlib.contextmanager
def _no_slots(**_: Any) -> Iterator[list[Any]]:
    yield []


def _before(renderer: Renderer, contexts: list[dict[str, Any]]) -> float:
    """The renderer as it was: plain HTML, css-inline on each message."""
    module: Any = render
    collecting = module.collecting
    module.collecting = _no_slots
    shapes: Any = renderer.shapes
    shapes.fill = lambda g, v, skeleton, values: renderer.inline_each(skeleton)
    try:
        return _per_render(renderer, contexts)
    finally:
        module.collecting = collecting


def _per_render(renderer: Renderer, contexts: list[dict[str, Any]]) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for context in contexts:
            renderer.render(KIND, context)
        best = min(best, (time.process_time() - start) / len(contexts))
    return best


def _inline_only(renderer: Renderer, contexts: list[dict[str, Any]]) -> float:
    """css-inline on the rendered (not yet inlined) HTML of a reminder, per message."""
    module: Any = render
    collecting = module.collecting
    module.collecting = _no_slots
    html: list[str] = []
    shapes: Any = renderer.shapes

    def keep(group: Any, version: Any, skeleton: str, values: Any) -> str:
        html.append(skeleton)
        return skeleton

    shapes.fill = keep
    try:
        for context in contexts[:200]:
            renderer.render(KIND, context)
    finally:
        module.collecting = collecting
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for text in html:
            renderer.inline_each(text)
        best = min(best, (time.process_time() - start) / len(html))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rows", default="/tmp/readme-render.md")
    args, unknown = parser.parse_known_args()
    if unknown:
        print(f"note: ignoring {' '.join(unknown)}", file=sys.stderr)
    contexts = _contexts(args.count)
    each, once = Renderer(), Renderer()
    for renderer in (each, once):
        for context in contexts[:50]:
            renderer.render(KIND, context)  # compile, warm the caches
    before = _before(each, contexts)
    after = _per_render(once, contexts)
    inline = _inline_only(Renderer(), contexts)
    rows = [
        ("render, css-inline per message (before)", before, "", f"{args.count} reminders"),
        ("render, inlined once per shape (after)", after, "no css-inline per message", ""),
        ("css-inline alone, per message", inline, "0 after", "what the shape cache saves"),
    ]
    lines = ["| what | measured | target | notes |", "| --- | --- | --- | --- |"]
    for what, seconds, target, notes in rows:
        lines.append(f"| {what} | {seconds * 1e3:.3f} ms CPU | {target} | {notes} |")
    saved = (before - after) / before * 100
    lines.append(
        f"| saved per render | {saved:.1f} % | render's share of per-message CPU down | "
        "time.process_time, best of 3 |"
    )
    table = "\n".join(lines) + "\n"
    print(table)
    with open(args.rows, "w") as out:
        out.write(table)


if __name__ == "__main__":
    main()
