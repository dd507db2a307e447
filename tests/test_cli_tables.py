"""CLI listings: identifiers print whole at any terminal width (a table when it fits, one block
per row when it does not; never ``INV-1...``), free text wraps, and an empty listing is one
plain sentence, not a table of headers alone."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table

from dunmail.cli_common import print_table
from tests.conftest import DEMO_DOC
from tests.test_cli import AT, dunmail, write_config

WIDTHS = (60, 80, 120)
ELLIPSIS = "\u2026"


def _render(table: Table, width: int, *, text: set[str], empty: str = "none") -> str:
    out = Console(width=width, file=io.StringIO(), record=True, soft_wrap=True)
    print_table(table, empty=empty, text=text, to=out)
    return out.export_text()


def _plan_table(rows: Sequence[tuple[str, ...]]) -> Table:
    table = Table("document", "customer", "send", "to", "why", "next look")
    for row in rows:
        table.add_row(*row)
    return table


PLAN_ROWS = [
    (
        "INV-1042",
        "C-1",
        "invoice_reminder (overdue:7)",
        "ap@globex.example, billing@globex.example",
        "the first reminder is due seven days after the due date; both contacts get it",
        "2026-04-07T09:00",
    ),
    ("INV-1043", "C-2", "-", "", "held: dispute until 2026-05-01", "-"),
]


@pytest.mark.parametrize("width", WIDTHS)
def test_identifiers_print_whole_and_lines_fit(width: int) -> None:
    out = _render(_plan_table(PLAN_ROWS), width, text={"send", "to", "why"})
    assert ELLIPSIS not in out
    lines = out.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width
    for value in ("INV-1042", "INV-1043", "C-1", "C-2", "2026-04-07T09:00"):
        assert any(value in line for line in lines), (width, value, out)
    # Free text wraps at spaces: every word of the reason is there, whole.
    shown = set(re.findall(r"[\w:;-]+", out))
    assert set(PLAN_ROWS[0][4].split()) <= shown, out


def test_a_wide_terminal_shows_a_table_and_a_narrow_one_blocks() -> None:
    wide = _render(_plan_table(PLAN_ROWS), 120, text={"send", "to", "why"})
    narrow = _render(_plan_table(PLAN_ROWS), 60, text={"send", "to", "why"})
    assert "┃ document" in wide
    assert narrow.startswith("INV-1042\n") and "  customer   C-1" in narrow


def test_an_empty_listing_is_one_sentence() -> None:
    out = _render(_plan_table([]), 80, text=set(), empty="Nothing is due before 2026-03-02.")
    assert out == "Nothing is due before 2026-03-02.\n"


# Identifiers as ERPs make them: letters, digits and the punctuation numbering schemes use.
identifiers = st.text(
    alphabet=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-/._#"), min_size=1, max_size=30
)
prose = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=14), max_size=25
).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(identifiers, identifiers, prose, identifiers), min_size=1, max_size=5),
    width=st.integers(min_value=40, max_value=200),
)
def test_no_identifier_is_ever_cut_at_any_width(
    rows: list[tuple[str, str, str, str]], width: int
) -> None:
    table = Table("invoice", "customer", "reason", "amount")
    for row in rows:
        table.add_row(*row)
    out = _render(table, width, text={"reason"})
    assert ELLIPSIS not in out
    lines = out.splitlines()
    for invoice, customer, _, amount in rows:
        for value in (invoice, customer, amount):
            assert any(value in line for line in lines), (value, width, out)


# -- the commands ----------------------------------------------------------------------------------


@pytest.fixture
def narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI's console at 80 columns, as in a default terminal window: $COLUMNS, which the
    console reads when it prints. (Setting ``console.width`` would fix it for every later
    test of the worker: the width it restored was a number, no longer "follow the terminal".)"""
    monkeypatch.setenv("COLUMNS", "80")
    yield


@pytest.fixture
def imported(tmp_path: Path, db_url: str, narrow_terminal: None) -> Path:
    config = write_config(tmp_path, db_url, 2525)
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(DEMO_DOC))
    assert dunmail(config, "import", str(doc), "--at", AT).returncode == 0
    return config


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_plan_prints_the_invoice_number_whole_at_80_columns(imported: Path) -> None:
    done = dunmail(imported, "plan", "--all", "--at", "2026-04-10T09:00:00Z")
    assert done.returncode == 0, done.stderr
    assert "INV-1042" in done.stdout and ELLIPSIS not in done.stdout, done.stdout
    assert max(len(line.rstrip()) for line in done.stdout.splitlines()) <= 80


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_empty_listings_say_so_in_one_line(imported: Path) -> None:
    # The new-invoice email falls due when the invoice is issued (2026-03-01); before it, nothing.
    before = dunmail(imported, "plan", "--at", "2026-01-01T00:00:00Z")
    assert before.stdout == "Nothing is due before 2026-01-01T00:00+00:00.\n", before.stdout
    for args, sentence in (
        (("hold", "list"), "No hold is in force.\n"),
        (("hold", "list", "--all"), "There are no holds.\n"),
        (("outbox",), "The outbox is empty.\n"),
        (("apikey", "list"), "There are no API keys.\n"),
        (("suppressions",), "No address is suppressed.\n"),
        (("inbox",), "no open threads\n"),
        (("bank", "unmatched"), "No bank line waits for a clerk.\n"),
    ):
        done = dunmail(imported, *args)
        assert (done.returncode, done.stdout) == (0, sentence), (args, done.stderr)
