"""``dunmail bounce``, ``inbox`` and ``suppressions``: returned mail, the AR inbox, blocked
addresses."""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dunmail.app import Services
from dunmail.cli_common import (
    AtOpt,
    ByOpt,
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
    with_services,
)
from dunmail.terminal import printable
from mailer.inbox_models import ThreadStatus

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
    console.print(table)


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

    async def body(services: Services) -> list[dict[str, Any]]:
        return services.suppressions.bounce_report(tenant=tenant, since=start)

    rows = with_services(config, at, body)
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
            f"{row['event']}: {one_line(row['reason'])} ({one_line(row['status'] or '-')}, "
            f"{'hard' if row['hard'] else 'soft'}, {state})"
        )
    plain(f"{len(rows)} bounces and complaints since {start.isoformat()}")
    for reason, count in by_reason(rows):
        plain(f"  {count:6d}  {one_line(reason)}")


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


inbox_app = typer.Typer(
    help="The AR inbox: a thread per customer document with its emails, bounces and replies."
)
app.add_typer(inbox_app, name="inbox")


class StatusFilter(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"
    ALL = "all"


class OnlyFilter(StrEnum):
    """bounce.inbox.THREAD_FILTERS, as the CLI's choices."""

    BOUNCED = "bounced"
    REPLIED = "replied"
    FIX_CONTACT = "fix_contact"
    REVIEW = "review"


ThreadArg = Annotated[int, typer.Argument(help="the thread's id (dunmail inbox)")]


@inbox_app.callback(invoke_without_command=True)
def inbox(
    ctx: typer.Context,
    status: Annotated[StatusFilter, typer.Option("--status", help="open, resolved or all")] = (
        StatusFilter.OPEN
    ),
    only: Annotated[
        OnlyFilter | None, typer.Option("--only", help="only threads that bounced, ...")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="at most N threads")] = None,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One line per thread: id, customer, document, status, assignee, last event, time."""
    if ctx.invoked_subcommand is not None:
        return
    wanted = None if status is StatusFilter.ALL else ThreadStatus(status.value)

    async def body(services: Services) -> list[dict[str, Any]]:
        return services.inbox.threads(
            tenant=tenant, status=wanted, only=only.value if only else None, limit=limit
        )

    rows = with_services(config, None, body)
    if as_json:
        print_json(rows)
        return
    if not rows:
        plain(f"no {status.value} threads" if wanted else "no threads")
    for r in rows:
        plain(
            f"{r['id']}  {one_line(r['customer'] or '-')}  {one_line(r['document'])}  "
            f"{r['status']}{_needs_review(r)}  {one_line(r['assignee'] or '-')}  "
            f"{one_line(r['last_event'])}  {r['last_event_at'][:19]}"
        )


def _needs_review(thread: dict[str, Any]) -> str:
    """The "(N bounce reviews open)" mark while hard verdicts on weak evidence wait."""
    count = int(thread.get("reviews") or 0)
    return f" ({count} bounce review{'s' if count > 1 else ''} open)" if count else ""


def _print_thread(thread: dict[str, Any]) -> None:
    plain(
        f"thread {thread['id']}: {one_line(thread['document'])} of "
        f"{one_line(thread['customer'] or '-')} ({one_line(thread['customer_name'] or '-')}), "
        f"{thread['status']}{_needs_review(thread)}, assigned to "
        f"{one_line(thread['assignee'] or 'nobody')}"
    )
    for entry in thread["timeline"]:
        plain(f"{entry['at'][:19]}  {entry['type']:<9}  {one_line(entry['summary'])}")
        if entry["detail"] and entry["type"] != "note":
            plain(f"{'':30}{entry['detail']}")


@inbox_app.command("show")
def inbox_show(
    thread: ThreadArg, tenant: TenantOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """A thread's timeline: emails sent, attempt results, bounces, replies and notes."""

    async def body(services: Services) -> dict[str, Any]:
        return services.inbox.thread(thread, tenant=tenant)

    found = with_services(config, None, body)
    if as_json:
        print_json(found)
        return
    _print_thread(found)


@inbox_app.command("unmatched")
def inbox_unmatched(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="only mail that arrived at its addresses")
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Inbound mail that matched no email sent (forged, or not about our mail)."""

    async def body(services: Services) -> list[dict[str, Any]]:
        return services.inbox.unmatched(tenant=tenant)

    rows = with_services(config, None, body)
    if as_json:
        print_json(rows)
        return
    if not rows:
        plain("no unmatched mail")
    for r in rows:
        plain(
            f"{r['id']}  {r['received_at'][:19]}  {r['kind'] or '-'}  "
            f"from {one_line(r['from'] or '-')}  {one_line(r['subject'])}  "
            f"({one_line(r['why'] or '')}; {one_line(r['source'])})"
        )


@inbox_app.command("note")
def inbox_note(
    thread: ThreadArg,
    text: Annotated[str, typer.Argument(help="the note")],
    author: Annotated[str | None, typer.Option("--author", help="default: cli:<user>")] = None,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Leave a note on a thread."""

    async def body(services: Services) -> dict[str, Any]:
        by = author or f"cli:{getpass.getuser()}"
        return services.inbox.note(thread, text, tenant=tenant, author=by)

    with_services(config, at, body)
    plain(f"thread {thread}: note added")


@inbox_app.command("resolve")
def inbox_resolve(
    thread: ThreadArg, tenant: TenantOpt = None, config: ConfigOpt = None, at: AtOpt = None
) -> None:
    """Mark a thread resolved; the next bounce or reply reopens it."""

    async def body(services: Services) -> dict[str, Any]:
        return services.inbox.update(thread, tenant=tenant, status=ThreadStatus.RESOLVED)

    with_services(config, at, body)
    plain(f"thread {thread}: resolved")


@inbox_app.command("assign")
def inbox_assign(
    thread: ThreadArg,
    user: Annotated[str, typer.Argument(help="who handles it")],
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Give a thread to someone."""

    async def body(services: Services) -> dict[str, Any]:
        return services.inbox.update(thread, tenant=tenant, assignee=user)

    with_services(config, at, body)
    plain(f"thread {thread}: assigned to {user}")


@inbox_app.command("resend")
def inbox_resend(
    thread: ThreadArg,
    by: Annotated[str | None, typer.Option("--by", help="default: cli:<user>")] = None,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """After fixing the contact: send the thread's bounced email again and resume chasing."""

    async def body(services: Services) -> tuple[Any, list[str]]:
        return await services.inbox.resend(
            thread, tenant=tenant, by=by or f"cli:{getpass.getuser()}"
        )

    message, addresses = with_services(config, at, body)
    plain(
        f"thread {thread}: {message.kind} resent to {', '.join(addresses)} ({message.status.value})"
    )


@inbox_app.command("suppress")
def inbox_suppress(
    thread: ThreadArg,
    address: Annotated[
        str, typer.Argument(help="an address the thread's unverified bounce or open review names")
    ],
    by: Annotated[str | None, typer.Option("--by", help="default: cli:<user>")] = None,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Block the address an unverified bounce or an open bounce review on the thread names."""

    async def body(services: Services) -> bool:
        return services.inbox.suppress_unverified(
            thread, address, tenant=tenant, by=by or f"cli:{getpass.getuser()}"
        )

    new = with_services(config, at, body)
    plain(f"thread {thread}: {address} {'suppressed' if new else 'was already suppressed'}")


@inbox_app.command("dismiss")
def inbox_dismiss(
    thread: ThreadArg,
    address: Annotated[str, typer.Argument(help="an address the thread's open review names")],
    by: Annotated[str | None, typer.Option("--by", help="default: cli:<user>")] = None,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Dismiss the open bounce review of an address: its hard verdict was wrong, keep mailing."""

    async def body(services: Services) -> int:
        return services.inbox.dismiss_review(
            thread, address, tenant=tenant, by=by or f"cli:{getpass.getuser()}"
        )

    with_services(config, at, body)
    plain(f"thread {thread}: review of {address} dismissed")


suppressions_app = typer.Typer(
    help="Addresses the tenant's emails must not go to: list, block by hand, unblock."
)
app.add_typer(suppressions_app, name="suppressions")


@suppressions_app.callback(invoke_without_command=True)
def suppressions(
    ctx: typer.Context,
    everything: Annotated[
        bool, typer.Option("--all", help="also lifted and expired blocks")
    ] = False,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The tenant's suppressed addresses: its emails are not sent to them."""
    if ctx.invoked_subcommand is not None:
        return

    async def body(services: Services) -> list[dict[str, Any]]:
        return services.suppressions.blocked(tenant=tenant, everything=everything)

    rows = with_services(config, at, body)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("address", "kind", "reason", "since", "until", "lifted")
    for r in rows:
        lifted = (
            f"{r['lifted_at'][:16]} by {r['lifted_by']}: {r['lift_reason']}"
            if r["lifted_at"]
            else ""
        )
        table.add_row(
            escape(r["address"]),
            r["kind"],
            escape(r["reason"]),
            r["created_at"][:16],
            (r["expires_at"] or "")[:16],
            escape(lifted),
        )
    console.print(table)


@suppressions_app.command("add")
def suppressions_add(
    address: Annotated[str, typer.Argument(help="the address to block")],
    reason: Annotated[str, typer.Option("--reason", help="why, for whoever unblocks it")],
    by: ByOpt = None,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Block an address by hand until someone unblocks it."""
    who = by or f"cli:{getpass.getuser()}"

    async def body(services: Services) -> bool:
        return services.suppressions.suppress(address, tenant=tenant, reason=reason, by=who)

    new = with_services(config, at, body)
    plain(f"{address}: {'suppressed' if new else 'was already suppressed'}")


@suppressions_app.command("unblock")
def suppressions_unblock(
    address: Annotated[str, typer.Argument(help="the suppressed address")],
    reason: Annotated[str, typer.Option("--reason", help="why it may be mailed again")],
    by: ByOpt = None,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Let the tenant's emails go to a suppressed address again (who, when and why are kept)."""
    who = by or f"cli:{getpass.getuser()}"

    async def body(services: Services) -> None:
        services.suppressions.unblock(address, tenant=tenant, by=who, why=reason)

    with_services(config, at, body)
    plain(f"{address}: unblocked")
