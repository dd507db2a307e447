"""`dunmail bank`: import bank statements, and work the queue of transfers nobody matched."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from dunmail.app import Services
from dunmail.cli_common import (
    AtOpt,
    ConfigOpt,
    JsonOpt,
    TenantOpt,
    app,
    plain,
    print_table,
    with_services,
)

bank_app = typer.Typer(
    no_args_is_help=True,
    help="Bank statements (camt.053, camt.054, MT940): import, unmatched queue, allocate.",
)
app.add_typer(bank_app, name="bank")


@bank_app.command("import")
def bank_import(
    file: Annotated[Path, typer.Argument(help="a camt.053/camt.054 XML or MT940 statement")],
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    at: AtOpt = None,
) -> None:
    """Match each credit to invoices (by RF reference, else amount and customer) and record the
    payments; what cannot be matched waits in `dunmail bank unmatched`. Re-importing is a no-op."""

    async def body(services: Services) -> Any:
        return services.bank.import_statement(file.read_bytes(), tenant=tenant)

    report = with_services(config, at, body)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
        return
    for line in report.lines:
        plain(_line_text(line))
    plain(report.summary())


@bank_app.command("unmatched")
def bank_unmatched(
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    everything: Annotated[bool, typer.Option("--all", help="every imported line")] = False,
) -> None:
    """The AR inbox queue of bank lines: credits no invoice was found for, returns, reversals."""

    async def body(services: Services) -> Any:
        return services.bank.queue(tenant=tenant, everything=everything)

    lines = with_services(config, None, body)
    if as_json:
        print(json.dumps(lines, indent=2))
        return
    table = Table("line", "booked", "amount", "debtor", "status", "confidence", "reason")
    for line in lines:
        cells = (
            str(line["id"]),
            line["booked_on"],
            f"{line['amount']} {line['currency']}",
            line["debtor"] or "",
            line["status"],
            line["confidence"] or "",
            line["reason"],
        )
        table.add_row(*map(Text, cells))  # Text: a debtor's "[...]" is not markup
    empty = "No bank line was imported." if everything else "No bank line waits for a clerk."
    print_table(table, empty=empty, text={"debtor", "reason"})


@bank_app.command("allocate")
def bank_allocate(
    line_id: Annotated[int, typer.Argument(help="the bank line (dunmail bank unmatched)")],
    invoices: Annotated[list[str], typer.Argument(help="invoice numbers, paid in this order")],
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Allocate an unmatched credit to invoices by hand; what is left is credit on account."""

    async def body(services: Services) -> Any:
        return services.bank.allocate(
            line_id, invoices, tenant=tenant, by=f"cli:{getpass.getuser()}"
        )

    plain(_line_text(with_services(config, None, body)))


@bank_app.command("ignore")
def bank_ignore(
    line_id: Annotated[int, typer.Argument(help="the bank line (dunmail bank unmatched)")],
    note: Annotated[str, typer.Option("--note", help="why: it is not a customer's payment")],
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Take a line out of the queue without recording a payment."""

    async def body(services: Services) -> Any:
        return services.bank.ignore(
            line_id, tenant=tenant, by=f"cli:{getpass.getuser()}", note=note
        )

    plain(_line_text(with_services(config, None, body)))


def _line_text(line: dict[str, Any]) -> str:
    confidence = f" [{line['confidence']}]" if line["confidence"] else ""
    return (
        f"line {line['id']} {line['booked_on']} {line['amount']} {line['currency']} "
        f"{line['status']}{confidence}: {line['reason']}"
    )
