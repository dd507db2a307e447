"""`dunmail preview` and `dunmail template`: an email as it would go out; a tenant's templates."""

from __future__ import annotations

import getpass
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dunmail.app import Services
from dunmail.cli_common import (
    AtOpt,
    ConfigOpt,
    TenantOpt,
    app,
    cli_errors,
    console,
    err,
    with_services,
)
from mailer.errors import TemplateError


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

    async def body(services: Services) -> Any:
        # WeasyPrint narrates every step and fontTools every glyph at INFO.
        for name in ("weasyprint", "fontTools"):
            logging.getLogger(name).setLevel(logging.WARNING)
        return await services.previews.build(
            kind, invoice=invoice, tenant=tenant, locale=locale, sample=sample
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
        return services.desk.template_sources(kind, tenant=tenant)

    for name, origin, source in with_services(config, None, body):
        console.rule(f"{kind} {name} ({origin})")
        if source is None:
            console.print("(no template: the text part is converted from the HTML part)")
        else:
            console.print(
                source, markup=False, highlight=False, end="" if source.endswith("\n") else "\n"
            )
