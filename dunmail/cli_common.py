"""What every ``dunmail`` command shares: the Typer app, consoles, common options, the clock
of ``--at``, one-line errors with exit codes, and building the services."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, TypeVar

import sqlalchemy as sa
import typer
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType
from rich.markup import escape
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from dunmail.app import Services, build_services
from dunmail.config import Config, load_config
from dunmail.logs import setup_logging
from dunmail.terminal import has_unsafe, json_printable, printable
from mailer.clock import Clock, FixedClock, SystemClock, as_utc
from mailer.errors import BusyError, MailerError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="dunmail: invoice email delivery and dunning for AR teams.",
)


def installed_version() -> str:
    """The installed package's version (its metadata, so a build and its ``--version`` agree)."""
    try:
        return metadata.version("dunmail")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"dunmail {installed_version()}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            callback=_print_version,
            is_eager=True,
            help="print the installed version and exit",
        ),
    ] = False,
) -> None:
    """dunmail: invoice email delivery and dunning for AR teams."""


class SafeConsole(Console):
    """A Rich console that never lets text act on the terminal (dunmail/terminal.py).

    Every command prints through one of these two consoles, whatever it prints (tables, plain
    lines, errors, rules): each piece of text is escaped after Rich has laid it out and before
    it is written, so a control character from mail in any field of any printer is shown, not
    obeyed. Rich's own control segments (cursor moves of a progress bar) and its styles (the
    colours it writes itself) pass untouched.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # Rich fixes the width from $COLUMNS when the console is made (at import); a width
        # asked for at print time follows the terminal, or $COLUMNS, as they are then.
        self._width = options.get("width")

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control or not has_unsafe(segment.text):
                yield segment
            else:
                yield Segment(printable(segment.text), segment.style, segment.control)


console = SafeConsole(soft_wrap=True)
err = SafeConsole(stderr=True, soft_wrap=True)
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
    """Turn expected failures into one clear line and a non-zero exit code (the README's
    table): 2 for bad config or input, 3 for I/O failures and for work that cannot start now
    (another import of the tenant, a database locked or not answering)."""
    try:
        yield
    except BusyError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(3) from None
    except (sa.exc.OperationalError, sa.exc.TimeoutError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        err.print(
            f"[red]error:[/red] the database is busy or unavailable ({escape(reason)}); "
            "try again later",
            highlight=False,
        )
        raise typer.Exit(3) from None
    except MailerError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    except OSError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
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
    "[red]" or "<script>" in a diagnostic is shown as the characters it is, and no control
    character or bidi override (escaped before Rich wraps the line, so widths stay right)."""
    console.print(printable(text), markup=False, emoji=False, highlight=False)


def one_line(text: object) -> str:
    """A field that must stay on its line in a one-line-per-row listing (a subject, a name):
    its line breaks and tabs are escaped too, so it cannot fake a row of its own."""
    return printable(str(text), one_line=True)


def print_json(data: Any, *, indent: int | None = 2, ensure_ascii: bool = False) -> None:
    """Print ``data`` as JSON on stdout, for scripts: the same data, with every terminal
    control and bidi override as a ``\\uXXXX`` escape (JSON decodes it back)."""
    text = json.dumps(data, indent=indent, ensure_ascii=ensure_ascii)
    sys.stdout.write(json_printable(text) + "\n")


def fit_columns(table: Table, *, text: Collection[str] = ()) -> Table:
    """Lay ``table`` out so that no cell is cut short with an ellipsis.

    Columns named in ``text`` hold free text (a reason, a note, an error, a list of
    addresses): they wrap at spaces, fold a word too long for them, and give way first when
    the terminal is narrow. Every other column holds something a clerk copies or compares (an
    invoice number, an id, an amount, a time): it is never wrapped and keeps the width of its
    longest value. Rich's default is ``overflow="ellipsis"``, which printed ``INV-1...`` for
    ``INV-1042`` at 80 columns.
    """
    for column in table.columns:
        column.overflow = "fold"
        longest = max((_longest_line(cell) for cell in column.cells), default=0)
        header = cell_len(str(column.header))
        if column.header in text:
            column.no_wrap = False
            column.min_width = min(max(header, _TEXT_MIN), longest) or None
        else:
            column.no_wrap = True
            column.min_width = max(header, longest)
    return table


_TEXT_MIN = 8  # a free-text column narrower than this reads as a column of syllables


def _longest_line(cell: object) -> int:
    return max((cell_len(line) for line in _cell_text(cell).splitlines()), default=0)


def _least_width(table: Table) -> int:
    """The narrowest the table can be with every column at its minimum: each column's
    padding (one space a side) and a border before it, and the closing border."""
    return sum((column.min_width or 1) + 3 for column in table.columns) + 1


def print_table(
    table: Table, *, empty: str, text: Collection[str] = (), to: Console | None = None
) -> None:
    """Print a listing: ``empty``, one plain line, when it has no rows (not a table of headers
    alone); the table laid out by :func:`fit_columns` when it fits the terminal; else one
    block per row (its first value, then ``column: value`` lines), so that nothing is cut."""
    out = to or console
    if not table.row_count:
        out.print(printable(empty), markup=False, emoji=False, highlight=False)
        return
    fit_columns(table, text=text)
    if _least_width(table) <= out.width:
        out.print(table)
        return
    for row in zip(*(list(c.cells) for c in table.columns), strict=True):
        for line in _record(table, [_cell_text(cell) for cell in row], text, out.width):
            # soft_wrap: each line is written as it is; an identifier is never folded in two.
            out.print(line, soft_wrap=True)


def _record(table: Table, values: list[str], text: Collection[str], width: int) -> list[Text]:
    """One row as a block: its first value, then a ``column  value`` line per other column.

    Free-text values wrap at spaces within ``width``; identifiers stay whole on their line
    (the terminal wraps one longer than the screen, and it still copies as one piece)."""
    headers = [str(column.header) for column in table.columns[1:]]
    label = max(map(len, headers), default=0)
    indent = " " * (label + 4)
    lines = [Text(values[0])]
    for header, value in zip(headers, values[1:], strict=True):
        words = " ".join(value.split())
        if header in text:
            wrapped = textwrap.wrap(words, max(20, width - len(indent)), break_long_words=False)
        else:
            wrapped = [words]
        for number, part in enumerate(wrapped or [""]):
            head = f"  {header:<{label}}  " if number == 0 else indent
            lines.append(Text(head + part))
    return lines


def _cell_text(cell: object) -> str:
    if isinstance(cell, Text):
        return cell.plain
    return Text.from_markup(cell).plain if isinstance(cell, str) else str(cell)
