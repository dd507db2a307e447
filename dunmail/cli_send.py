"""`dunmail send`, `statement` and `outbox`: emails sent by hand, and the outbox they sit in."""

from __future__ import annotations

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
    cli_errors,
    console,
    err,
    parse_when,
    print_table,
    with_services,
)
from dunmail.labels import labels_for
from mailer.content.i18n import fallback_note
from mailer.content.kinds import KINDS
from mailer.content.statement import StatementStyle
from mailer.errors import MailerError
from mailer.outbound.models import Message

DocOpt = typer.Option  # each names the document the email is about; give exactly one


@app.command()
def send(
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="the email: "
            + ", ".join(KINDS)
            + " (default: the document's own email, new_invoice for an invoice)",
        ),
    ] = None,
    invoice: Annotated[str | None, DocOpt("--invoice", help="invoice number")] = None,
    payment: Annotated[
        str | None, DocOpt("--payment", help="payment: receipt number or id")
    ] = None,
    credit_note: Annotated[
        str | None, DocOpt("--credit-note", help="credit note: number or id")
    ] = None,
    refund: Annotated[str | None, DocOpt("--refund", help="refund: receipt number or id")] = None,
    autopay: Annotated[str | None, DocOpt("--autopay", help="failed autopay: its id")] = None,
    estimate: Annotated[str | None, DocOpt("--estimate", help="estimate: number or id")] = None,
    payment_plan: Annotated[
        str | None, DocOpt("--payment-plan", help="payment plan: number or id")
    ] = None,
    subscription: Annotated[
        str | None, DocOpt("--subscription", help="subscription: its id")
    ] = None,
    customer: Annotated[
        str | None, DocOpt("--customer", help="customer id (statement, overdue_summary)")
    ] = None,
    currency: Annotated[
        str | None, typer.Option("--currency", help="overdue_summary: which currency")
    ] = None,
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Send any email now, by hand, about the document it concerns. Sending the same email
    again does nothing (a failed one: dunmail outbox retry ID)."""
    named = {
        "invoice": invoice,
        "payment": payment,
        "credit_note": credit_note,
        "refund": refund,
        "autopay": autopay,
        "estimate": estimate,
        "payment_plan": payment_plan,
        "subscription": subscription,
        "customer": customer,
    }
    given = [(document, ref) for document, ref in named.items() if ref is not None]
    if len(given) != 1:
        with cli_errors():
            raise MailerError(
                "name the one document the email is about: --invoice, --payment, "
                "--credit-note, --refund, --autopay, --estimate, --payment-plan, "
                "--subscription or --customer"
            )
    document, ref = given[0]

    async def body(services: Services) -> tuple[str, list[dict[str, Any]]]:
        sent = await services.sending.send_email(
            kind, document=document, ref=ref, tenant=tenant, currency=currency
        )
        return sent.kind, [_sent_row(m) for m in sent.messages]

    chosen, rows = with_services(config, at, body)
    code = 0
    for row in rows:
        _print_sent(f"{chosen} for {ref}", row)
        if row["status"] == "failed":
            code = 4
        elif row["status"] == "deferred" and code == 0:
            code = 5  # not sent yet: the server is unreachable or said "try later"
    if code:
        raise typer.Exit(code)


def _sent_row(message: Message) -> dict[str, Any]:
    """What the CLI says of a message it sent, with the language note when it fell back."""
    locale = message.context.get("locale")
    note = fallback_note(locale, message.language) if message.language else None
    return {
        "id": message.id,
        "uid": message.uid,
        "status": message.status.value,
        "error": message.last_error,
        "language": message.language,
        "note": note,
    }


def _print_sent(what: str, row: dict[str, Any]) -> None:
    console.print(
        f"{escape(what)}: {row['status']} (message {row['id']}, {row['uid']})"
        + (f" - {escape(row['error'])}" if row["error"] else ""),
        highlight=False,
    )
    if row["note"]:
        err.print(f"[yellow]note:[/yellow] {row['note']}", highlight=False)


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
        with cli_errors():
            raise MailerError(f"--style {style!r}: use open_item or balance_forward")

    async def body(services: Services) -> list[Any]:
        return await services.sending.send_statement(
            customer,
            tenant=tenant,
            style=_STYLES[style] if style else None,
            since=parse_when(since, "--since"),
        )

    messages = with_services(config, at, body)
    for message in messages:
        currency = message.context["statement"]["currency"]
        console.print(
            f"statement {currency} for {escape(customer)}: {message.status.value} "
            f"(message {message.uid})"
            + (f" - {escape(message.last_error)}" if message.last_error else ""),
            highlight=False,
        )


outbox_app = typer.Typer(
    help="The outbox: list messages (the default), retry a failed one.",
)
app.add_typer(outbox_app, name="outbox")


@outbox_app.callback(invoke_without_command=True)
def outbox(
    ctx: typer.Context,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option(help="newest N messages")] = 200,
) -> None:
    """List outbox messages with their state, attempts, language and per-recipient results."""
    if ctx.invoked_subcommand is not None:
        return

    async def body(services: Services) -> list[dict[str, Any]]:
        return services.desk.outbox_rows(limit=limit)

    rows = with_services(config, None, body)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(
        "id",
        "tenant",
        "kind",
        "document",
        "status",
        "lang",
        "tries",
        "next / done",
        "recipients",
        "last error",
    )
    words = labels_for(None)  # the operator's list spans tenants: English words, --json codes
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["tenant"] or "",
            words.kind(r["kind"]),
            escape(r["document"] or ""),
            words.message_state(r["status"]),
            r["language"] or "",
            str(r["attempts"]),
            (r["finished_at"] or r["next_attempt_at"] or "")[:19],
            escape(
                "\n".join(
                    f"{x['address']}: {words.recipient_state(x['status'])}" for x in r["recipients"]
                )
            ),
            escape(r["skip_reason"] or r["last_error"] or ""),
        )
    print_table(table, empty="The outbox is empty.", text={"recipients", "last error"})


@outbox_app.command("retry")
def outbox_retry(
    message_id: Annotated[int, typer.Argument(help="the failed message's id (dunmail outbox)")],
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Try a failed message again now, once its cause is fixed: the same email (Message-ID,
    links, content); refused for a message that is not failed."""

    async def body(services: Services) -> dict[str, Any]:
        message = await services.sending.retry_message(message_id, tenant=tenant)
        return {**_sent_row(message), "kind": message.kind}

    row = with_services(config, at, body)
    _print_sent(f"{row['kind']} retried", row)
    if row["status"] == "failed":
        raise typer.Exit(4)
    if row["status"] == "deferred":
        raise typer.Exit(5)
