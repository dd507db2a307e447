"""``dunmail bounce``: returned mail decoded, ingested, reported, reprocessed, polled."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dunmail.app import Services
from dunmail.cli_common import (
    AtOpt,
    ConfigOpt,
    JsonOpt,
    TenantOpt,
    app,
    console,
    err,
    one_line,
    parse_when,
    plain,
    print_json,
    print_table,
    with_services,
)
from dunmail.labels import Labels, labels_for
from dunmail.terminal import printable

bounce_app = typer.Typer(no_args_is_help=True, help="Returned mail: decode bounces and notices.")
app.add_typer(bounce_app, name="bounce")


@bounce_app.command("parse")
def bounce_parse(
    files: Annotated[
        list[Path], typer.Argument(help="raw messages (.eml)", exists=True, dir_okay=False)
    ],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per file")] = False,
) -> None:
    """Decode returned mail: kind, failed recipients, reason, original Message-ID."""
    from bounce import parse

    reports = [(path, parse(path.read_bytes())) for path in files]
    if as_json:
        for path, report in reports:
            print_json({"file": str(path), **report.as_dict()}, indent=None)
        return
    table = Table("file", "kind", "recipient", "status", "code", "reason", "hard", "message-id")
    for path, report in reports:
        message_id = escape(report.original_message_id or "-")
        if not report.recipients:
            table.add_row(escape(path.name), report.kind.value, "-", "-", "-", "-", "-", message_id)
        for r in report.recipients:
            table.add_row(
                escape(path.name),
                report.kind.value,
                escape(r.address),
                escape(r.status or "-"),
                str(r.reply_code or "-"),
                escape(r.reason),
                "hard" if r.hard else "soft",
                message_id,
            )
    print_table(table, empty="No message to decode.", text={"reason"})


@bounce_app.command("ingest")
def bounce_ingest(
    paths: Annotated[
        list[Path],
        typer.Argument(help="message files (.eml), Maildir directories or mbox files", exists=True),
    ],
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Store returned mail, match it to the emails sent, suppress hard-bounced addresses."""
    from bounce.spool import count_messages, read_paths

    async def body(services: Services) -> Any:
        with Progress(
            TextColumn("ingesting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        ) as progress:
            task = progress.add_task("ingest", total=count_messages(paths))

            def counted() -> Iterator[tuple[str, bytes]]:
                for item in read_paths(paths):
                    yield item
                    progress.advance(task)

            return services.inbound.ingest(counted())

    summary = with_services(config, at, body)
    _print_ingest(summary)


@bounce_app.command("report")
def bounce_report(
    since: Annotated[str, typer.Option("--since", help="from this ISO 8601 date or time")],
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV with a header line")] = False,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Bounces and complaints since a date: document, address, reason, suppressed or not."""
    from bounce.reporting import by_reason, to_csv

    start = parse_when(since, "--since")
    assert start is not None

    async def body(services: Services) -> tuple[list[dict[str, Any]], Labels]:
        rows = services.suppressions.bounce_report(tenant=tenant, since=start)
        return rows, labels_for(services.customers.language(tenant=tenant))

    rows, words = with_services(config, at, body)
    if as_csv:
        sys.stdout.write(printable(to_csv(rows)))
        return
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "suppressed" if row["suppressed"] else "not suppressed"
        plain(
            f"{row['at'][:16]}  {one_line(row['document'])} to {one_line(row['address'])} "
            f"{words.event(row['event'])}: {one_line(words.failure(row['reason'], row['status']))} "
            f"({'hard' if row['hard'] else 'soft'}, {state})"
        )
    plain(f"{len(rows)} bounces and complaints since {start.isoformat()}")
    for reason, count in by_reason(rows):
        plain(f"  {count:6d}  {one_line(words.reason(reason))}")


@bounce_app.command("reprocess")
def bounce_reprocess(config: ConfigOpt = None, at: AtOpt = None) -> None:
    """Decode, match and suppress again over all stored inbound mail (after a decoder fix)."""

    async def body(services: Services) -> Any:
        return services.inbound.reprocess()

    _print_ingest(with_services(config, at, body))


@bounce_app.command("poll")
def bounce_poll(tenant: TenantOpt = None, config: ConfigOpt = None, at: AtOpt = None) -> None:
    """Poll the tenants' IMAP mailboxes once: store, match and suppress what arrived."""

    async def body(services: Services) -> Any:
        return await asyncio.to_thread(services.inbound.poll_mailboxes, tenant=tenant)

    summary, failed = with_services(config, at, body)
    _print_ingest(summary)
    for slug, error in sorted(failed.items()):
        err.print(f"[red]error:[/red] {slug}: {error}", highlight=False)
    if failed:
        raise typer.Exit(3)


def _print_ingest(summary: Any) -> None:
    console.print(
        f"stored {summary.stored}, duplicates {summary.duplicates}, matched {summary.matched}, "
        f"unmatched {summary.unmatched}, errors {summary.errors}, "
        f"suppressed {len(summary.suppressed)}",
        highlight=False,
    )
    for address in summary.suppressed:
        console.print(f"  suppressed {escape(address)}", highlight=False)
    for address in summary.rerouted:
        console.print(
            f"  bounced email sent to the next contact: {escape(address)}", highlight=False
        )
    if summary.paused:
        console.print(
            f"  {summary.paused} bounced with no other contact: chasing paused "
            "(dunmail inbox shows the threads to fix)",
            highlight=False,
        )
