"""The ``dunmail`` command: load config, build services, call one service method, print."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dunmail.app import INVOICE_KINDS, Services, build_services
from dunmail.config import Config, load_config
from dunmail.logs import setup_logging
from mailer.clock import Clock, FixedClock, SystemClock, as_utc
from mailer.errors import MailerError, TemplateError
from mailer.kinds import KINDS
from mailer.models import HoldReason, ThreadStatus
from mailer.render import PARTS
from mailer.statement import StatementStyle

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="dunmail: invoice email delivery and dunning for AR teams.",
)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config (default: ./config.toml, else built-in)"),
]
AtOpt = Annotated[
    str | None,
    typer.Option("--at", help="act as if it were this ISO 8601 time (UTC if no offset)"),
]
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="tenant slug")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def _clock(at: str | None) -> Clock:
    if at is None:
        return SystemClock()
    try:
        return FixedClock(datetime.fromisoformat(at))
    except ValueError:
        raise MailerError(f"--at {at!r} is not an ISO 8601 time") from None


def _setup_logging(config: Config) -> None:
    setup_logging(config.log.level, fmt=config.log.format)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn expected failures into one clear line and a non-zero exit code."""
    try:
        yield
    except MailerError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except OSError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(3) from None


def _with_services(
    config_path: Path | None, at: str | None, body: Callable[[Services], Awaitable[T]]
) -> T:
    async def main() -> T:
        config = load_config(config_path)
        _setup_logging(config)
        services = build_services(config, _clock(at))
        try:
            return await body(services)
        finally:
            await services.close()

    with _errors():
        return asyncio.run(main())
    raise AssertionError("unreachable")  # pragma: no cover  (typer.Exit is raised above)


@app.command()
def init(config: ConfigOpt = None) -> None:
    """Create or migrate the database, register tenants and (in dev) make DKIM keys."""

    async def body(services: Services) -> None:
        console.print(
            f"database ready at {services.engine.url.render_as_string(hide_password=True)}; "
            f"tenants: {', '.join(sorted(services.tenant_ids)) or 'none'}"
        )

    _with_services(config, None, body)


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="JSON import document")],
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Upsert customers, contacts, invoices, payments and credit notes by external id."""

    async def body(services: Services) -> int:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise MailerError(
                f"{file}: not JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        report = services.import_document(data, tenant=tenant)
        if as_json:
            console.print_json(json.dumps(report.as_dict()))
        else:
            console.print(report.summary(), highlight=False)
            for error in report.errors:
                err.print(
                    f"[yellow]invalid[/yellow] {error.where}: {error.reason}", highlight=False
                )
        return 1 if report.errors else 0

    code = _with_services(config, at, body)
    raise typer.Exit(code)


@app.command()
def send(
    invoice: Annotated[str, typer.Option("--invoice", help="invoice number")],
    kind: Annotated[str, typer.Option("--kind", help=f"one of {', '.join(INVOICE_KINDS)}")] = (
        "new_invoice"
    ),
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Send an invoice email now, by hand. Sending the same email again does nothing."""

    async def body(services: Services) -> dict[str, Any]:
        message = await services.send_invoice(invoice, kind=kind, tenant=tenant)
        return {"uid": message.uid, "status": message.status.value, "error": message.last_error}

    result = _with_services(config, at, body)
    console.print(
        f"{kind} for {invoice}: {result['status']} (message {result['uid']})"
        + (f" - {result['error']}" if result["error"] else ""),
        highlight=False,
    )
    if result["status"] == "failed":
        raise typer.Exit(4)
    if result["status"] == "deferred":
        raise typer.Exit(5)  # not sent yet: the server is unreachable or said "try later"


@app.command()
def deliver(config: ConfigOpt = None, at: AtOpt = None) -> None:
    """Deliver every message due at that time, then exit."""

    async def body(services: Services) -> Any:
        return await services.deliver()

    report = _with_services(config, at, body)
    console.print(
        f"attempted {report.attempted}: sent {report.sent}, deferred {report.deferred}, "
        f"failed {report.failed}; throttled {report.throttled}",
        highlight=False,
    )
    if report.attempted and not report.sent and report.deferred:
        raise typer.Exit(5)  # nothing got through: the server is unreachable or busy


@app.command()
def tick(config: ConfigOpt = None, at: AtOpt = None) -> None:
    """One pass of everything due at that time (new invoices, reminders), delivered, then exit."""

    async def body(services: Services) -> Any:
        return await services.tick()

    dunning, delivered = _with_services(config, at, body)
    console.print(dunning.summary(), highlight=False)
    for error in dunning.errors:
        err.print(f"[yellow]not queued[/yellow] {error}", highlight=False)
    console.print(
        f"delivered: attempted {delivered.attempted}, sent {delivered.sent}, deferred "
        f"{delivered.deferred}, failed {delivered.failed}, skipped {delivered.skipped}",
        highlight=False,
    )


@app.command()
def plan(
    config: ConfigOpt = None,
    at: AtOpt = None,
    tenant: TenantOpt = None,
    customer: Annotated[str | None, typer.Option("--customer", help="customer id")] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="every open invoice, not only those due")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The dunning simulator: what a pass at that time would send, to whom, and why."""

    async def body(services: Services) -> list[Any]:
        return services.plan(
            tenant=tenant, customer=customer, everything=everything or bool(customer)
        )

    entries = _with_services(config, at, body)
    if as_json:
        print(json.dumps([e.as_dict() for e in entries], indent=2))
        return
    table = Table("document", "customer", "send", "to", "why", "next look")
    for e in entries:
        table.add_row(
            e.document,
            e.customer,
            f"{e.action.kind} ({e.action.occasion})" if e.action else "-",
            ", ".join(e.recipients),
            e.reason,
            e.next_at.isoformat(timespec="minutes") if e.next_at else "-",
        )
    console.print(table)


_STYLES: dict[str, StatementStyle] = {
    "open_item": "open_item",
    "balance_forward": "balance_forward",
}


@app.command()
def statement(
    customer: Annotated[str, typer.Option("--customer", help="customer id")],
    style: Annotated[
        str | None, typer.Option("--style", help="open_item or balance_forward")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="balance-forward period start (ISO 8601)")
    ] = None,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Send a customer's statement now (one per currency), by hand."""
    if style is not None and style not in _STYLES:
        with _errors():
            raise MailerError(f"--style {style!r}: use open_item or balance_forward")

    async def body(services: Services) -> list[Any]:
        return await services.send_statement(
            customer,
            tenant=tenant,
            style=_STYLES[style] if style else None,
            since=_when(since, "--since"),
        )

    messages = _with_services(config, at, body)
    for message in messages:
        currency = message.context["statement"]["currency"]
        console.print(
            f"statement {currency} for {customer}: {message.status.value} "
            f"(message {message.uid})" + (f" - {message.last_error}" if message.last_error else ""),
            highlight=False,
        )


@app.command("mark-sent")
def mark_sent(
    invoice: Annotated[str, typer.Option("--invoice", help="invoice number")],
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Record that the invoice went out another way: no automatic new-invoice email."""

    async def body(services: Services) -> int:
        return services.mark_sent(invoice, tenant=tenant)

    cancelled = _with_services(config, at, body)
    console.print(
        f"{invoice}: marked sent"
        + (f"; {cancelled} queued new-invoice email(s) cancelled" if cancelled else ""),
        highlight=False,
    )


hold_app = typer.Typer(
    no_args_is_help=True, help="Dunning holds: pause reminders for an invoice or a customer."
)
app.add_typer(hold_app, name="hold")


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        raise MailerError(f"{option} {value!r} is not an ISO 8601 date or time") from None


@hold_app.command("place")
def hold_place(
    reason: Annotated[
        HoldReason, typer.Option("--reason", help="dispute, promise_to_pay, payment_plan, manual")
    ],
    invoice: Annotated[str | None, typer.Option("--invoice", help="invoice number")] = None,
    customer: Annotated[str | None, typer.Option("--customer", help="customer id")] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="chasing resumes then (ISO 8601, UTC)")
    ] = None,
    note: Annotated[str | None, typer.Option("--note")] = None,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Pause reminders for one invoice or every invoice of a customer."""

    async def body(services: Services) -> Any:
        return services.place_hold(
            tenant=tenant,
            customer=customer,
            invoice=invoice,
            reason=reason,
            until=_when(until, "--until"),
            note=note,
            by=f"cli:{getpass.getuser()}",
        )

    hold = _with_services(config, at, body)
    scope = f"invoice {invoice}" if invoice else f"customer {customer}"
    ends = f" until {hold.ends_at.isoformat()}" if hold.ends_at else " until lifted"
    console.print(f"hold {hold.id} on {scope} ({reason.value}){ends}", highlight=False)


@hold_app.command("lift")
def hold_lift(
    hold_id: Annotated[int, typer.Argument(help="the hold's id (dunmail hold list)")],
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """End a hold now; chasing resumes on the next pass."""

    async def body(services: Services) -> Any:
        return services.lift_hold(hold_id, tenant=tenant)

    _with_services(config, at, body)
    console.print(f"hold {hold_id} lifted", highlight=False)


@hold_app.command("list")
def hold_list(
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
    everything: Annotated[bool, typer.Option("--all", help="lifted and ended ones too")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The holds in force (or all of them)."""

    async def body(services: Services) -> list[dict[str, Any]]:
        return services.holds(tenant=tenant, active_only=not everything)

    rows = _with_services(config, at, body)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("id", "customer", "invoice", "reason", "until", "lifted", "note")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["customer"],
            r["invoice"] or "(all)",
            r["reason"],
            r["until"] or "-",
            r["lifted_at"] or "-",
            r["note"] or "",
        )
    console.print(table)


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
            print(json.dumps({"file": str(path), **report.as_dict()}, ensure_ascii=False))
        return
    table = Table("file", "kind", "recipient", "status", "code", "reason", "hard", "message-id")
    for path, report in reports:
        message_id = report.original_message_id or "-"
        if not report.recipients:
            table.add_row(path.name, report.kind.value, "-", "-", "-", "-", "-", message_id)
        for r in report.recipients:
            table.add_row(
                path.name,
                report.kind.value,
                r.address,
                r.status or "-",
                str(r.reply_code or "-"),
                r.reason,
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
    from bounce.ingest import count_messages, read_paths

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

            return services.ingest_inbound(counted())

    summary = _with_services(config, at, body)
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

    start = _when(since, "--since")
    assert start is not None

    async def body(services: Services) -> list[dict[str, Any]]:
        return services.bounce_report(tenant=tenant, since=start)

    rows = _with_services(config, at, body)
    if as_csv:
        sys.stdout.write(to_csv(rows))
        return
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "suppressed" if row["suppressed"] else "not suppressed"
        _plain(
            f"{row['at'][:16]}  {row['document']} to {row['address']} {row['event']}: "
            f"{row['reason']} ({row['status'] or '-'}, {'hard' if row['hard'] else 'soft'}, "
            f"{state})"
        )
    _plain(f"{len(rows)} bounces and complaints since {start.isoformat()}")
    for reason, count in by_reason(rows):
        _plain(f"  {count:6d}  {reason}")


@bounce_app.command("reprocess")
def bounce_reprocess(config: ConfigOpt = None, at: AtOpt = None) -> None:
    """Decode, match and suppress again over all stored inbound mail (after a decoder fix)."""

    async def body(services: Services) -> Any:
        return services.reprocess_inbound()

    _print_ingest(_with_services(config, at, body))


@bounce_app.command("poll")
def bounce_poll(tenant: TenantOpt = None, config: ConfigOpt = None, at: AtOpt = None) -> None:
    """Poll the tenants' IMAP mailboxes once: store, match and suppress what arrived."""

    async def body(services: Services) -> Any:
        return await asyncio.to_thread(services.poll_mailboxes, tenant=tenant)

    summary, failed = _with_services(config, at, body)
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
        console.print(f"  suppressed {address}", highlight=False)
    for address in summary.rerouted:
        console.print(f"  bounced email sent to the next contact: {address}", highlight=False)
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


ThreadArg = Annotated[int, typer.Argument(help="the thread's id (dunmail inbox)")]


def _plain(text: str) -> None:
    """Print text that may come from mail: no Rich markup, emoji codes or highlighting, so
    "[red]" or "<script>" in a diagnostic is shown as the characters it is."""
    console.print(text, markup=False, emoji=False, highlight=False)


@inbox_app.callback(invoke_without_command=True)
def inbox(
    ctx: typer.Context,
    status: Annotated[StatusFilter, typer.Option("--status", help="open, resolved or all")] = (
        StatusFilter.OPEN
    ),
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One line per thread: id, customer, document, status, assignee, last event, time."""
    if ctx.invoked_subcommand is not None:
        return
    wanted = None if status is StatusFilter.ALL else ThreadStatus(status.value)

    async def body(services: Services) -> list[dict[str, Any]]:
        return services.inbox(tenant=tenant, status=wanted)

    rows = _with_services(config, None, body)
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        _plain(f"no {status.value} threads" if wanted else "no threads")
    for r in rows:
        _plain(
            f"{r['id']}  {r['customer'] or '-'}  {r['document']}  {r['status']}  "
            f"{r['assignee'] or '-'}  {r['last_event']}  {r['last_event_at'][:19]}"
        )


def _print_thread(thread: dict[str, Any]) -> None:
    _plain(
        f"thread {thread['id']}: {thread['document']} of {thread['customer'] or '-'} "
        f"({thread['customer_name'] or '-'}), {thread['status']}, "
        f"assigned to {thread['assignee'] or 'nobody'}"
    )
    for entry in thread["timeline"]:
        _plain(f"{entry['at'][:19]}  {entry['type']:<9}  {entry['summary']}")
        if entry["detail"] and entry["type"] != "note":
            _plain(f"{'':30}{entry['detail']}")


@inbox_app.command("show")
def inbox_show(
    thread: ThreadArg, tenant: TenantOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """A thread's timeline: emails sent, attempt results, bounces, replies and notes."""

    async def body(services: Services) -> dict[str, Any]:
        return services.inbox_thread(thread, tenant=tenant)

    found = _with_services(config, None, body)
    if as_json:
        print(json.dumps(found, indent=2, ensure_ascii=False))
        return
    _print_thread(found)


@inbox_app.command("unmatched")
def inbox_unmatched(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Inbound mail that matched no email sent (forged, or not about our mail)."""

    async def body(services: Services) -> list[dict[str, Any]]:
        return services.inbox_unmatched()

    rows = _with_services(config, None, body)
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        _plain("no unmatched mail")
    for r in rows:
        _plain(
            f"{r['id']}  {r['received_at'][:19]}  {r['kind'] or '-'}  from {r['from'] or '-'}  "
            f"{r['subject']}  ({r['why'] or ''}; {r['source']})"
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
        return services.inbox_note(thread, text, tenant=tenant, author=by)

    _with_services(config, at, body)
    _plain(f"thread {thread}: note added")


@inbox_app.command("resolve")
def inbox_resolve(
    thread: ThreadArg, tenant: TenantOpt = None, config: ConfigOpt = None, at: AtOpt = None
) -> None:
    """Mark a thread resolved; the next bounce or reply reopens it."""

    async def body(services: Services) -> dict[str, Any]:
        return services.inbox_update(thread, tenant=tenant, status=ThreadStatus.RESOLVED)

    _with_services(config, at, body)
    _plain(f"thread {thread}: resolved")


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
        return services.inbox_update(thread, tenant=tenant, assignee=user)

    _with_services(config, at, body)
    _plain(f"thread {thread}: assigned to {user}")


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
        return await services.inbox_resend(
            thread, tenant=tenant, by=by or f"cli:{getpass.getuser()}"
        )

    message, addresses = _with_services(config, at, body)
    _plain(
        f"thread {thread}: {message.kind} resent to {', '.join(addresses)} ({message.status.value})"
    )


suppressions_app = typer.Typer(
    help="Addresses the tenant's emails must not go to: list, block by hand, unblock."
)
app.add_typer(suppressions_app, name="suppressions")
ByOpt = Annotated[str | None, typer.Option("--by", help="who does it (default: cli:<user>)")]


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
        return services.suppressions(tenant=tenant, everything=everything)

    rows = _with_services(config, at, body)
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

    async def body(services: Services) -> bool:
        return services.suppress(
            address, tenant=tenant, reason=reason, by=by or f"cli:{getpass.getuser()}"
        )

    new = _with_services(config, at, body)
    _plain(f"{address}: {'suppressed' if new else 'was already suppressed'}")


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

    async def body(services: Services) -> None:
        services.unblock(address, tenant=tenant, by=by or f"cli:{getpass.getuser()}", why=reason)

    _with_services(config, at, body)
    _plain(f"{address}: unblocked")


@app.command()
def outbox(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option(help="newest N messages")] = 200,
) -> None:
    """List outbox messages with their state, attempts and per-recipient results."""

    async def body(services: Services) -> list[dict[str, Any]]:
        return services.outbox_rows(limit=limit)

    rows = _with_services(config, None, body)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(
        "id",
        "tenant",
        "kind",
        "document",
        "status",
        "tries",
        "next / done",
        "recipients",
        "last error",
    )
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["tenant"] or "",
            r["kind"],
            r["document"] or "",
            r["status"],
            str(r["attempts"]),
            (r["finished_at"] or r["next_attempt_at"] or "")[:19],
            "\n".join(f"{x['address']} {x['status']}" for x in r["recipients"]),
            (r["skip_reason"] or r["last_error"] or "")[:60],
        )
    console.print(table)


@app.command()
def preview(
    kind: Annotated[str, typer.Argument(help="email kind, e.g. invoice_reminder")],
    invoice: Annotated[str | None, typer.Option("--invoice", help="invoice number")] = None,
    tenant: TenantOpt = None,
    locale: Annotated[
        str | None, typer.Option("--locale", help="language instead of the customer's")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="write the .eml here instead of stdout")
    ] = None,
    sample: Annotated[
        bool, typer.Option("--sample", help="render the kind's sample data, no invoice")
    ] = False,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Show an email exactly as it would be sent (signed, PDF attached), without sending it."""
    from dunmail.preview import build_preview

    async def body(services: Services) -> Any:
        # WeasyPrint narrates every step and fontTools every glyph at INFO.
        for name in ("weasyprint", "fontTools"):
            logging.getLogger(name).setLevel(logging.WARNING)
        return await build_preview(
            services, kind, invoice=invoice, tenant=tenant, locale=locale, sample=sample
        )

    result = _with_services(config, at, body)
    if not result.enabled:
        err.print(
            f"[yellow]note:[/yellow] {kind} emails are switched off for this tenant "
            f"([tenants.<slug>.emails.{kind}] enabled = false by default or in the config)",
            highlight=False,
        )
    if result.pdf_skipped:
        err.print(f"[yellow]no PDF attached:[/yellow] {result.pdf_skipped}", highlight=False)
    if out is None:
        sys.stdout.buffer.write(result.data)
        sys.stdout.flush()
        return
    with _errors():
        out.write_bytes(result.data)
    err.print(
        f"{kind}: {len(result.data):,} bytes to {', '.join(result.recipients)} written to {out}"
        + (f" (with {result.pdf})" if result.pdf else "")
        + "; nothing was sent or recorded",
        highlight=False,
    )


template_app = typer.Typer(
    no_args_is_help=True,
    help="A tenant's own subject and bodies: set (validated first), show, reset.",
)
app.add_typer(template_app, name="template")
PartOpt = Annotated[str, typer.Option("--part", help="subject, text or html")]


@template_app.command("set")
def template_set(
    kind: Annotated[str, typer.Argument(help="email kind, e.g. invoice_reminder")],
    file: Annotated[Path, typer.Argument(help="the template source (UTF-8)")],
    part: PartOpt,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Save a tenant's template for one part of KIND; refused (exit 2) if it would not render."""

    async def body(services: Services) -> None:
        source = file.read_text(encoding="utf-8")
        try:
            services.save_template(
                kind, part, source, tenant=tenant, updated_by=f"cli:{getpass.getuser()}"
            )
        except TemplateError as exc:
            raise TemplateError(f"{file}: {kind} {part} template refused: {exc}") from None

    _with_services(config, None, body)
    console.print(f"{kind} {part}: saved; it is used from the next delivery pass", highlight=False)


@template_app.command("reset")
def template_reset(
    kind: Annotated[str, typer.Argument(help="email kind")],
    part: Annotated[
        str | None, typer.Option("--part", help="subject, text or html (default: all)")
    ] = None,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Go back to the built-in template for one part of KIND, or all of them."""

    async def body(services: Services) -> int:
        return services.reset_template(kind, tenant=tenant, part=part)

    removed = _with_services(config, None, body)
    console.print(
        f"{kind}: {removed} override(s) removed; built-in templates apply", highlight=False
    )


@template_app.command("show")
def template_show(
    kind: Annotated[str, typer.Argument(help="email kind")],
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Print the source each part of KIND is rendered from: the tenant's override or built-in."""

    async def body(services: Services) -> list[tuple[str, str, str | None]]:
        if kind not in KINDS:
            raise MailerError(f"unknown email kind {kind!r}; known kinds: {', '.join(KINDS)}")
        overrides = services.template_overrides(kind, tenant=tenant)
        parts: list[tuple[str, str, str | None]] = []
        for name in PARTS:
            if name in overrides:
                parts.append((name, "override", overrides[name]))
            elif name == "text" and "html" in overrides:
                parts.append((name, "converted from the HTML override", None))
            else:
                parts.append((name, "built-in", services.renderer.builtin_source(kind, name)))
        return parts

    for name, origin, source in _with_services(config, None, body):
        console.rule(f"{kind} {name} ({origin})")
        if source is None:
            console.print("(no template: the text part is converted from the HTML part)")
        else:
            console.print(
                source, markup=False, highlight=False, end="" if source.endswith("\n") else "\n"
            )


link_app = typer.Typer(no_args_is_help=True, help="Customers' View/Pay links: revoke them.")
app.add_typer(link_app, name="link")


@link_app.command("revoke")
def link_revoke(
    token: Annotated[
        str | None, typer.Option("--token", help="the link's token (or its whole URL)")
    ] = None,
    invoice: Annotated[
        str | None, typer.Option("--invoice", help="revoke every link to this invoice")
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="why, for the record")] = "",
    by: ByOpt = None,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Make one link, or every link to an invoice, stop working before it expires (the
    customer sees a page where they can ask for a fresh link, unless the invoice was revoked)."""
    from dunmail.web.link_service import revoke_links

    async def body(services: Services) -> str:
        return revoke_links(
            services,
            tenant=tenant,
            token=token,
            invoice=invoice,
            reason=reason,
            by=by or f"cli:{getpass.getuser()}",
        )

    _plain(f"revoked {_with_services(config, at, body)}")


user_app = typer.Typer(no_args_is_help=True, help="AR inbox users: add, list, disable.")
app.add_typer(user_app, name="user")


@user_app.command("add")
def user_add(
    email: Annotated[str, typer.Argument(help="the user's email: their sign-in name")],
    tenant: TenantOpt = None,
    name: Annotated[str, typer.Option("--name", help="the name shown in the inbox")] = "",
    password_env: Annotated[
        str | None,
        typer.Option(
            "--password-env",
            help="read the password from this environment variable (default: prompt for it)",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Add a user who signs in to one tenant's AR inbox (the password is never an argument:
    it would stay in the shell history and show in the process list)."""
    import os

    from dunmail.web.auth import create_user
    from mailer.db import session_scope

    if password_env is not None:
        password = os.environ.get(password_env, "")
        if not password:
            err.print(f"[red]error:[/red] ${escape(password_env)} is not set", highlight=False)
            raise typer.Exit(2)
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)

    async def body(services: Services) -> tuple[str, str]:
        tenant_id = services.tenant_id(tenant)
        with session_scope(services.engine) as session:
            user = create_user(
                session,
                tenant_id=tenant_id,
                email=email,
                name=name,
                password=password,
                now=services.clock.now(),
            )
            return user.email, services.tenant_slug(tenant_id)

    address, slug = _with_services(config, None, body)
    _plain(f"user {address} added to tenant {slug}")


@user_app.command("list")
def user_list(tenant: TenantOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """The users (of one tenant with --tenant): email, tenant, name, created, disabled."""
    from sqlmodel import Session

    from dunmail.web.auth import list_users

    async def body(services: Services) -> list[dict[str, Any]]:
        tenant_id = services.tenant_id(tenant) if tenant else None
        with Session(services.engine) as session:
            users = list_users(session, tenant_id=tenant_id)
        return [
            {
                "email": u.email,
                "tenant": services.tenant_slug(u.tenant_id),
                "name": u.name,
                "created_at": u.created_at.isoformat(),
                "disabled_at": u.disabled_at.isoformat() if u.disabled_at else None,
            }
            for u in users
        ]

    rows = _with_services(config, None, body)
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        _plain("no users")
    for r in rows:
        disabled = f"  disabled {r['disabled_at'][:16]}" if r["disabled_at"] else ""
        _plain(f"{r['email']}  {r['tenant']}  {r['name'] or '-'}  {r['created_at'][:16]}{disabled}")


@user_app.command("disable")
def user_disable(
    email: Annotated[str, typer.Argument(help="the user's email")],
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Refuse the user's sign-in from now on and end their open sessions."""
    from dunmail.web.auth import disable_user
    from mailer.db import session_scope

    async def body(services: Services) -> str:
        with session_scope(services.engine) as session:
            return disable_user(session, email, now=services.clock.now()).email

    _plain(f"user {_with_services(config, at, body)} disabled")


apikey_app = typer.Typer(no_args_is_help=True, help="API keys for the JSON API (/api/v1).")
app.add_typer(apikey_app, name="apikey")


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Argument(help="what uses the key, e.g. erp-sync")],
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Issue a key for a tenant; it is printed once and only its hash is kept."""
    from dunmail.web.apikeys import create_key
    from mailer.db import session_scope

    async def body(services: Services) -> None:
        tenant_id = services.tenant_id(tenant)
        with session_scope(services.engine) as session:
            row, key = create_key(session, tenant_id=tenant_id, name=name, now=services.clock.now())
        err.print(
            f"API key {row.prefix} for tenant {services.tenant_slug(tenant_id)}; "
            "it is shown once, store it now:",
            highlight=False,
        )
        print(key)  # stdout alone, so `KEY=$(dunmail apikey create ...)` works

    _with_services(config, None, body)


@apikey_app.command("list")
def apikey_list(
    tenant: TenantOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """Every API key (or a tenant's): prefix, name, created, last used, revoked."""
    from sqlmodel import Session

    from dunmail.web.apikeys import list_keys

    async def body(services: Services) -> None:
        tenant_id = services.tenant_id(tenant) if tenant else None
        with Session(services.engine) as session:
            rows = list_keys(session, tenant_id=tenant_id)
        for row in rows:
            row["tenant"] = services.tenant_slug(row.pop("tenant_id"))
        if as_json:
            print(json.dumps(rows, indent=2))
            return
        table = Table("prefix", "tenant", "name", "created", "last used", "revoked")
        for r in rows:
            table.add_row(
                r["prefix"],
                r["tenant"],
                escape(r["name"]),
                r["created_at"],
                r["last_used_at"] or "-",
                r["revoked_at"] or "-",
            )
        console.print(table)

    _with_services(config, None, body)


@apikey_app.command("revoke")
def apikey_revoke(
    prefix: Annotated[str, typer.Argument(help="the key's prefix (from apikey list)")],
    config: ConfigOpt = None,
) -> None:
    """Refuse a key from now on."""
    from dunmail.web.apikeys import revoke_key
    from mailer.db import session_scope

    async def body(services: Services) -> None:
        with session_scope(services.engine) as session:
            row = revoke_key(session, prefix=prefix, now=services.clock.now())
        console.print(f"API key {row.prefix} ({escape(row.name)}) revoked", highlight=False)

    _with_services(config, None, body)


@app.command()
def run(config: ConfigOpt = None) -> None:
    """Run the engine until interrupted: delivery, plus the capture server and demo if set."""
    from dunmail.runner import run_engine

    with _errors():
        cfg = load_config(config)
        _setup_logging(cfg)
        asyncio.run(run_engine(cfg, SystemClock()))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
