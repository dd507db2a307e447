"""What every ``dunmail`` command shares: the Typer app, consoles, common options, the clock
of ``--at``, one-line errors with exit codes, and building the services."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from dunmail.app import Services, build_services
from dunmail.config import Config, load_config
from dunmail.logs import setup_logging
from mailer.clock import Clock, FixedClock, SystemClock, as_utc
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
ByOpt = Annotated[str | None, typer.Option("--by", help="who does it (default: cli:<user>)")]


def clock_at(at: str | None) -> Clock:
    if at is None:
        return SystemClock()
    try:
        return FixedClock(datetime.fromisoformat(at))
    except ValueError:
        raise MailerError(f"--at {at!r} is not an ISO 8601 time") from None


def setup_cli_logging(config: Config) -> None:
    setup_logging(config.log.level, fmt=config.log.format)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn expected failures into one clear line and a non-zero exit code."""
    try:
        yield
    except MailerError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except OSError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(3) from None


def with_services(
    config_path: Path | None, at: str | None, body: Callable[[Services], Awaitable[T]]
) -> T:
    async def main() -> T:
        config = load_config(config_path)
        setup_cli_logging(config)
        services = build_services(config, clock_at(at))
        try:
            return await body(services)
        finally:
            await services.close()

    with cli_errors():
        return asyncio.run(main())
    raise AssertionError("unreachable")  # pragma: no cover  (typer.Exit is raised above)


def parse_when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        raise MailerError(f"{option} {value!r} is not an ISO 8601 date or time") from None


def plain(text: str) -> None:
    """Print text that may come from mail: no Rich markup, emoji codes or highlighting, so
    "[red]" or "<script>" in a diagnostic is shown as the characters it is."""
    console.print(text, markup=False, emoji=False, highlight=False)
