"""The ``dunmail`` command: load config, build services, call one service method, print."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from dunmail import (  # noqa: F401  (each adds its commands or command group to app)
    cli_bank,
    cli_bounce,
    cli_domain,
    cli_holds,
    cli_inbox,
    cli_send,
    cli_suppressions,
    cli_templates,
    cli_web,
)
from dunmail.app import Services
from dunmail.cli_common import (
    AtOpt,
    ConfigOpt,
    JsonOpt,
    TenantOpt,
    app,
    cli_errors,
    console,
    err,
    print_table,
    setup_cli_logging,
    with_services,
)
from dunmail.config import load_config
from mailer.clock import SystemClock
from mailer.errors import MailerError
from mailer.outbound.requests import PassReport

__all__ = ["app", "main"]  # the typer app, with every command group registered, and the script


@app.command()
def init(config: ConfigOpt = None) -> None:
    """Create or migrate the database, register tenants and (in dev) make DKIM keys."""

    async def body(services: Services) -> None:
        console.print(
            f"database ready at {services.desk.database()}; "
            f"tenants: {', '.join(sorted(services.tenants.ids)) or 'none'}"
        )

    with_services(config, None, body)


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="JSON import document")],
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
    as_json: JsonOpt = False,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            min=0,
            help="seconds to wait for another import of the tenant to finish (default: "
            "none, exit 3 at once)",
        ),
    ] = 0.0,
) -> None:
    """Upsert customers, contacts, invoices, payments and credit notes by external id.

    Commits in short batches while the engine keeps running; one import per tenant at a time.
    Exit 1 when some records were invalid (the rest are applied), 3 when another import of the
    tenant is running or the database is unavailable."""

    async def body(services: Services) -> int:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise MailerError(
                f"{file}: not JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
        report = services.ledger.import_document(data, tenant=tenant, wait=wait)
        if as_json:
            console.print_json(json.dumps(report.as_dict()))
        else:
            console.print(report.summary(), highlight=False)
            for error in report.errors:
                err.print(
                    f"[yellow]invalid[/yellow] {escape(str(error.where))}: "
                    f"{escape(str(error.reason))}",
                    highlight=False,
                )
        return 1 if report.errors else 0

    code = with_services(config, at, body)
    raise typer.Exit(code)


@app.command()
def deliver(config: ConfigOpt = None, at: AtOpt = None) -> None:
    """Deliver every message due at that time, then exit."""

    async def body(services: Services) -> Any:
        return await services.sending.deliver()

    report = with_services(config, at, body)
    console.print(
        f"attempted {report.attempted}: sent {report.sent}, deferred {report.deferred}, "
        f"failed {report.failed}; throttled {report.throttled}",
        highlight=False,
    )
    if _nothing_got_through(report):
        raise typer.Exit(5)  # nothing got through: the server is unreachable or busy


@app.command()
def tick(config: ConfigOpt = None, at: AtOpt = None) -> None:
    """One pass of everything due at that time (new invoices, reminders), delivered, then exit."""

    async def body(services: Services) -> Any:
        return await services.dunning.tick()

    dunning, delivered = with_services(config, at, body)
    console.print(dunning.summary(), highlight=False)
    for error in dunning.errors:
        err.print(f"[yellow]not queued[/yellow] {escape(str(error))}", highlight=False)
    console.print(
        f"delivered: attempted {delivered.attempted}, sent {delivered.sent}, deferred "
        f"{delivered.deferred}, failed {delivered.failed}, skipped {delivered.skipped}",
        highlight=False,
    )
    if _nothing_got_through(delivered):
        raise typer.Exit(5)  # as deliver: the server is unreachable or said "try later"


def _nothing_got_through(report: PassReport) -> bool:
    """The delivery pass of ``deliver`` and ``tick`` tried and every attempt was deferred (the
    README's exit 5: queued, retried later)."""
    return bool(report.attempted and not report.sent and report.deferred)


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

    async def body(services: Services) -> tuple[list[Any], datetime]:
        entries = services.dunning.plan(
            tenant=tenant, customer=customer, everything=everything or bool(customer)
        )
        return entries, services.clock.now()

    entries, now = with_services(config, at, body)
    if as_json:
        print(json.dumps([e.as_dict() for e in entries], indent=2))
        return
    if customer:
        empty = f"Customer {customer} has no open invoice and nothing pending."
    elif everything:
        empty = "There is no open invoice and nothing pending."
    else:
        empty = f"Nothing is due before {now.isoformat(timespec='minutes')}."
    table = Table("document", "customer", "send", "to", "why", "next look")
    for e in entries:
        table.add_row(
            escape(e.document),
            escape(e.customer),
            escape(f"{e.action.kind} ({e.action.occasion})") if e.action else "-",
            escape(", ".join(e.recipients)),
            escape(e.reason),
            e.next_at.isoformat(timespec="minutes") if e.next_at else "-",
        )
    print_table(table, empty=empty, text={"send", "to", "why"})


@app.command("mark-sent")
def mark_sent(
    invoice: Annotated[str, typer.Option("--invoice", help="invoice number")],
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Record that the invoice went out another way: no automatic new-invoice email."""

    async def body(services: Services) -> int:
        return services.ledger.mark_sent(invoice, tenant=tenant)

    cancelled = with_services(config, at, body)
    console.print(
        f"{invoice}: marked sent"
        + (f"; {cancelled} queued new-invoice email(s) cancelled" if cancelled else ""),
        highlight=False,
    )


@app.command()
def run(
    config: ConfigOpt = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="delivery processes on the one queue, this one included (default: one per CPU)",
        ),
    ] = None,
) -> None:
    """Run the engine until interrupted: dunning, delivery in N processes, the web app, and the
    capture server and demo if set."""
    from dunmail.runner import PortTaken, run_until_interrupted
    from dunmail.workers import default_workers

    with cli_errors():
        cfg = load_config(config)
        setup_cli_logging(cfg)
        count = workers or default_workers()
        try:
            run_until_interrupted(cfg, SystemClock(), workers=count)
        except PortTaken as exc:
            err.print(f"dunmail: {exc.strerror}", markup=False, highlight=False)
            raise typer.Exit(1) from None


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
