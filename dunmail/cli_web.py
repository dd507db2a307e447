"""``dunmail link``, ``user`` and ``apikey``: what the web app needs set up from the shell."""

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
    console,
    err,
    plain,
    print_json,
    print_table,
    with_services,
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

    plain(f"revoked {with_services(config, at, body)}")


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

    if password_env is not None:
        password = os.environ.get(password_env, "")
        if not password:
            err.print(f"[red]error:[/red] ${escape(password_env)} is not set", highlight=False)
            raise typer.Exit(2)
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)

    async def body(services: Services) -> tuple[str, str]:
        tenant_id = services.tenants.id(tenant)
        user = services.accounts.add_user(
            tenant_id=tenant_id, email=email, name=name, password=password
        )
        return user.email, services.tenants.slug(tenant_id)

    address, slug = with_services(config, None, body)
    plain(f"user {address} added to tenant {slug}")


@user_app.command("list")
def user_list(tenant: TenantOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """The users (of one tenant with --tenant): email, tenant, name, created, disabled."""

    async def body(services: Services) -> list[dict[str, Any]]:
        tenant_id = services.tenants.id(tenant) if tenant else None
        users = services.accounts.users(tenant_id=tenant_id)
        return [
            {
                "email": u.email,
                "tenant": services.tenants.slug(u.tenant_id),
                "name": u.name,
                "created_at": u.created_at.isoformat(),
                "disabled_at": u.disabled_at.isoformat() if u.disabled_at else None,
            }
            for u in users
        ]

    rows = with_services(config, None, body)
    if as_json:
        print_json(rows)
        return
    if not rows:
        plain("no users")
    for r in rows:
        disabled = f"  disabled {r['disabled_at'][:16]}" if r["disabled_at"] else ""
        plain(f"{r['email']}  {r['tenant']}  {r['name'] or '-'}  {r['created_at'][:16]}{disabled}")


@user_app.command("disable")
def user_disable(
    email: Annotated[str, typer.Argument(help="the user's email")],
    config: ConfigOpt = None,
    at: AtOpt = None,
) -> None:
    """Refuse the user's sign-in from now on and end their open sessions."""

    async def body(services: Services) -> str:
        return services.accounts.disable_user(email).email

    plain(f"user {with_services(config, at, body)} disabled")


apikey_app = typer.Typer(no_args_is_help=True, help="API keys for the JSON API (/api/v1).")
app.add_typer(apikey_app, name="apikey")


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Argument(help="what uses the key, e.g. erp-sync")],
    tenant: TenantOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Issue a key for a tenant; it is printed once and only its hash is kept."""

    async def body(services: Services) -> None:
        tenant_id = services.tenants.id(tenant)
        row, key = services.accounts.create_key(tenant_id=tenant_id, name=name)
        err.print(
            f"API key {row.prefix} for tenant {services.tenants.slug(tenant_id)}; "
            "it is shown once, store it now:",
            highlight=False,
        )
        print(key)  # stdout alone, so `KEY=$(dunmail apikey create ...)` works

    with_services(config, None, body)


@apikey_app.command("list")
def apikey_list(
    tenant: TenantOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """Every API key (or a tenant's): prefix, name, created, last used, revoked."""

    async def body(services: Services) -> None:
        tenant_id = services.tenants.id(tenant) if tenant else None
        rows = services.accounts.keys(tenant_id=tenant_id)
        for row in rows:
            row["tenant"] = services.tenants.slug(row.pop("tenant_id"))
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
        print_table(table, empty="There are no API keys.", text={"name"})

    with_services(config, None, body)


@apikey_app.command("revoke")
def apikey_revoke(
    prefix: Annotated[str, typer.Argument(help="the key's prefix (from apikey list)")],
    config: ConfigOpt = None,
) -> None:
    """Refuse a key from now on."""

    async def body(services: Services) -> None:
        row = services.accounts.revoke_key(prefix)
        console.print(f"API key {row.prefix} ({escape(row.name)}) revoked", highlight=False)

    with_services(config, None, body)
