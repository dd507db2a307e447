"""Composing one message: the stdlib ``email`` reference against the precompiled skeleton.

    PYTHONPATH=. python -m bench.compose [--messages 2000]

Each row is CPU time per message (``time.process_time``, so other processes on the machine do
not count) over ``--messages`` composes of a reminder-sized email (text and HTML, about 8 KB,
with a few non-ASCII characters), once without and once with a ~30 KB PDF attached:

* stdlib: ``to_bytes(build_message(...))`` (mailer/outbound/compose.py), what the outbox used;
* skeleton: ``compose(...)`` (mailer/outbound/mime.py), what it uses now.

Each uid is new, as in the outbox. Prints a markdown table and writes its rows to
/tmp/readme-compose.md (``| what | measured | target | notes |``).
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from mailer.address import make_address
from mailer.outbound.compose import Attachment, Draft, Envelope, Rendered, build_message, to_bytes
from mailer.outbound.mime import compose

OUT = Path("/tmp/readme-compose.md")
TARGET = 5.0  # the skeleton at least this many times cheaper than the stdlib build


def _rendered() -> Rendered:
    line = "Invoice INV-1042 of 1 234,56 € was due on 2 March 2026; please pay it this week. "
    text = "Dear Globex AP,\n\n" + "\n".join(line * 2 for _ in range(18)) + "\n\nAcme Supplies\n"
    cell = '<tr><td style="padding:4px;border:1px solid #ddd">INV-1042</td><td>1 234,56 €</td></tr>'
    html = (
        '<!doctype html><html><body style="font-family:sans-serif">'
        + "\n".join(f"<p>{line}</p>{cell}" for _ in range(30))
        + "</body></html>"
    )
    return Rendered(subject="Reminder: invoice INV-1042 is overdue", text=text, html=html)


def _draft(uid: str, pdf: bytes | None) -> Draft:
    return Draft(
        uid=uid,
        message_id_domain="acme.example",
        date=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        to=[make_address("ap@globex.example", "Globex AP")],
        envelope=Envelope(
            from_addr=make_address("noreply-invoice@relay.example", "Acme Supplies"),
            reply_to=make_address("ar@acme.example", "Acme Supplies"),
            mail_from="bounces+x@relay.example",
        ),
        attachments=[] if pdf is None else [Attachment("INV-1042.pdf", pdf)],
    )


def _per_message(build: Callable[[Rendered, Draft], bytes], drafts: list[Draft]) -> float:
    rendered = _rendered()
    build(rendered, drafts[0])  # warm caches, as a running outbox has them
    start = time.process_time()
    for draft in drafts:
        build(rendered, draft)
    return (time.process_time() - start) / len(drafts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"ignoring arguments: {unknown}", file=sys.stderr)

    def stdlib(rendered: Rendered, draft: Draft) -> bytes:
        return to_bytes(build_message(rendered, draft))

    pdf = os.urandom(30 * 1024)
    rows = []
    for label, attached in (("text+HTML", None), ("text+HTML+PDF 30 KB", pdf)):
        drafts = [_draft(secrets.token_hex(10), attached) for _ in range(args.messages)]
        size = len(compose(_rendered(), drafts[0]))
        old = _per_message(stdlib, drafts)
        new = _per_message(compose, drafts)
        rows.append((label, size, old, new))
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    python = f"{platform.python_implementation()} {platform.python_version()}"
    machine = f"{python}, {os.cpu_count()} CPUs"
    lines = ["| what | measured | target | notes |", "|---|---|---|---|"]
    for label, size, old, new in rows:
        note = f"{size:,} bytes; CPU per message, {args.messages:,} composes; {when}, {machine}"
        lines.append(f"| compose {label}, stdlib `email` | {old * 1e6:.0f} us | - | {note} |")
        lines.append(
            f"| compose {label}, skeleton | {new * 1e6:.0f} us ({old / new:.1f}x less) "
            f"| >= {TARGET:.0f}x less | {note} |"
        )
    table = "\n".join(lines) + "\n"
    print(table, end="")
    OUT.write_text(table)


if __name__ == "__main__":
    main()
