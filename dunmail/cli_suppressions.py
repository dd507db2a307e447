"""``dunmail suppressions``: the addresses not mailed, and blocking or unblocking one by hand."""

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
    ByOpt,
    ConfigOpt,
    JsonOpt,
    TenantOpt,
    app,
    one_line,
    plain,
    print_table,
    with_services,
)
from dunmail.labels import Labels, labels_for

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

    async def body(services: Services) -> tuple[list[dict[str, Any]], Labels]:
        rows = services.customers.blocked(tenant=tenant, everything=everything)
        return rows, labels_for(services.customers.language(tenant=tenant))

    rows, words = with_services(config, at, body)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    # Since when, why (in words, with the evidence's status) and from what: the bounce of
    # which email, a complaint, or the person who blocked it (dunmail/labels.py).
    table = Table("address", "blocked", "why", "from", "lifted")
    for r in rows:
        lifted = (
            f"{r['lifted_at'][:16]} by {r['lifted_by']}: {r['lift_reason']}"
            if r["lifted_at"]
            else ""
        )
        said = words.block(r)
        table.add_row(
            escape(r["address"]),
            escape(one_line(said["state"])),
            escape(one_line(said["why"])),
            escape(one_line(said["by"])),
            escape(lifted),
        )
    empty = "No address has ever been suppressed." if everything else "No address is suppressed."
    print_table(table, empty=empty, text={"blocked", "why", "from", "lifted"})


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
