"""`dunmail hold`: pause and resume chasing for an invoice or a customer."""

from __future__ import annotations

import getpass
import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from dunmail.app import Services
from dunmail.cli_common import (
    AtOpt,
    ConfigOpt,
    JsonOpt,
    TenantOpt,
    app,
    console,
    parse_when,
    print_table,
    with_services,
)
from mailer.ledger.models import HoldReason

hold_app = typer.Typer(
    no_args_is_help=True, help="Dunning holds: pause reminders for an invoice or a customer."
)
app.add_typer(hold_app, name="hold")


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
        return services.desk.place_hold(
            tenant=tenant,
            customer=customer,
            invoice=invoice,
            reason=reason,
            until=parse_when(until, "--until"),
            note=note,
            by=f"cli:{getpass.getuser()}",
        )

    hold = with_services(config, at, body)
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
        return services.desk.lift_hold(hold_id, tenant=tenant)

    with_services(config, at, body)
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
        return services.desk.holds(tenant=tenant, active_only=not everything)

    rows = with_services(config, at, body)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("id", "customer", "invoice", "reason", "until", "lifted", "note")
    for r in rows:
        table.add_row(
            str(r["id"]),
            escape(r["customer"] or ""),
            escape(r["invoice"] or "(all)"),
            r["reason"],
            r["until"] or "-",
            r["lifted_at"] or "-",
            escape(r["note"] or ""),
        )
    empty = "There are no holds." if everything else "No hold is in force."
    print_table(table, empty=empty, text={"reason", "note"})
