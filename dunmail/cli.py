"""The ``dunmail`` command: load config, build services, call one service method, print."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from dunmail.app import INVOICE_KINDS, Services, build_services
from dunmail.config import Config, load_config
from mailer.clock import Clock, FixedClock, SystemClock
from mailer.errors import MailerError

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
    logging.basicConfig(
        level=config.log.level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # flanker's parser generator is chatty on first import; its warnings are not ours.
    logging.getLogger("flanker").setLevel(logging.ERROR)
    # Alembic narrates every migration check at INFO; only its warnings matter to a user.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # aiosmtpd logs every SMTP command and APScheduler every tick at INFO.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


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
