"""The ``dunmail`` command: load config, build services, call one service method, print."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from dunmail import cli_inbox, cli_web  # noqa: F401  (they add their command groups to app)
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
    setup_cli_logging,
    with_services,
)
from dunmail.config import load_config
from mailer.clock import SystemClock
from mailer.content.i18n import fallback_note
from mailer.content.kinds import KINDS
from mailer.content.render import PARTS
from mailer.content.statement import StatementStyle
from mailer.errors import MailerError, TemplateError
from mailer.ledger.models import HoldReason
from mailer.outbound.models import Message
from mailer.outbound.requests import PassReport


@app.command()
def init(config: ConfigOpt = None) -> None:
    """Create or migrate the database, register tenants and (in dev) make DKIM keys."""

    async def body(services: Services) -> None:
        console.print(
            f"database ready at {services.engine.url.render_as_string(hide_password=True)}; "
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

    async def body(services: Services) -> list[Any]:
        return services.dunning.plan(
            tenant=tenant, customer=customer, everything=everything or bool(customer)
        )

    entries = with_services(config, at, body)
    if as_json:
        print(json.dumps([e.as_dict() for e in entries], indent=2))
        return
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
    console.print(table)


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
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["tenant"] or "",
            r["kind"],
            escape(r["document"] or ""),
            r["status"],
            r["language"] or "",
            str(r["attempts"]),
            (r["finished_at"] or r["next_attempt_at"] or "")[:19],
            escape("\n".join(f"{x['address']} {x['status']}" for x in r["recipients"])),
            escape((r["skip_reason"] or r["last_error"] or "")[:60]),
        )
    console.print(table)


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

    result = with_services(config, at, body)
    if not result.enabled:
        err.print(
            f"[yellow]note:[/yellow] {kind} emails are switched off for this tenant "
            f"([tenants.<slug>.emails.{kind}] enabled = false by default or in the config)",
            highlight=False,
        )
    if result.pdf_skipped:
        err.print(f"[yellow]no PDF attached:[/yellow] {result.pdf_skipped}", highlight=False)
    if result.language_note:
        err.print(f"[yellow]note:[/yellow] {result.language_note}", highlight=False)
    if out is None:
        sys.stdout.buffer.write(result.data)
        sys.stdout.flush()
        return
    with cli_errors():
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
            services.desk.save_template(
                kind, part, source, tenant=tenant, updated_by=f"cli:{getpass.getuser()}"
            )
        except TemplateError as exc:
            raise TemplateError(f"{file}: {kind} {part} template refused: {exc}") from None

    with_services(config, None, body)
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
        return services.desk.reset_template(kind, tenant=tenant, part=part)

    removed = with_services(config, None, body)
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
        overrides = services.desk.template_overrides(kind, tenant=tenant)
        parts: list[tuple[str, str, str | None]] = []
        for name in PARTS:
            if name in overrides:
                parts.append((name, "override", overrides[name]))
            elif name == "text" and "html" in overrides:
                parts.append((name, "converted from the HTML override", None))
            else:
                parts.append((name, "built-in", services.renderer.builtin_source(kind, name)))
        return parts

    for name, origin, source in with_services(config, None, body):
        console.rule(f"{kind} {name} ({origin})")
        if source is None:
            console.print("(no template: the text part is converted from the HTML part)")
        else:
            console.print(
                source, markup=False, highlight=False, end="" if source.endswith("\n") else "\n"
            )


@app.command()
def run(config: ConfigOpt = None) -> None:
    """Run the engine until interrupted: delivery, plus the capture server and demo if set."""
    from dunmail.runner import run_engine

    with cli_errors():
        cfg = load_config(config)
        setup_cli_logging(cfg)
        asyncio.run(run_engine(cfg, SystemClock()))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
