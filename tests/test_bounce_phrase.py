"""The fast searches under ``bounce.parse`` find exactly what the plain, slow ones find.

``bounce.detectors.phrase`` lower-cases a text once and matches lower-case patterns against it
case-sensitively, skips a pattern whose literal strings ("needles") the text lacks, starts a
header-like search at the line of its first needle, and finds which of the phrase layer's
needles a text holds in one trie search. Each of those is a shortcut that must not change an
answer: the properties here compare every shortcut with the plain IGNORECASE search, on text
built to hit the awkward cases (mixed case, Unicode letters that fold onto ASCII ones,
overlapping needles, line starts).
"""

from __future__ import annotations

import importlib
import operator
import pkgutil
import re
import string
from re import _constants, _parser  # type: ignore[attr-defined]

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bounce.decode
import bounce.detectors
from bounce.classify import RULES
from bounce.detectors import scan
from bounce.detectors.phrase import _FOLDS_APART, NeedleIndex, Phrase, comparable, needles_of


def _phrases() -> list[tuple[str, Phrase]]:
    """Every Phrase the detectors and the decoder search with, by name."""
    modules = [bounce.decode] + [
        importlib.import_module(f"bounce.detectors.{m.name}")
        for m in pkgutil.iter_modules(bounce.detectors.__path__)
    ]
    found: dict[int, tuple[str, Phrase]] = {}
    for module in modules:
        for name, value in vars(module).items():
            items = value if isinstance(value, list | tuple) else [value]
            for item in items:
                for phrase in item if isinstance(item, tuple) else [item]:
                    if isinstance(phrase, Phrase):
                        found[id(phrase)] = (f"{module.__name__}.{name}", phrase)
    return sorted(found.values(), key=lambda pair: pair[0])


PHRASES = _phrases()

# Characters that make case-insensitive matching interesting: ASCII letters of both cases, the
# three that fold apart, the Kelvin sign (lower-cases to "k"), sigma (final form by context),
# sharp s, accented and CJK letters; line breaks, quote marks and digits for the anchors.
_ODD = ["\u0130", "\u0131", "\u017f", "\u212a", "\u03a3", "\u03c3", "\u00df", "\u00e9", "\u65e5"]


def _literals(items: object) -> set[str]:
    """Every run of literal characters anywhere in a parsed pattern (stdlib's own parser)."""
    found: set[str] = set()
    run: list[str] = []
    for op, av in [*items, (None, None)]:  # type: ignore[misc]
        if op is _constants.LITERAL:
            run.append(chr(av))
            continue
        if run:
            found.add("".join(run))
            run = []
        for value in av if isinstance(av, tuple | list) else [av]:
            for inner in value if isinstance(value, list) else [value]:
                if isinstance(inner, _parser.SubPattern):
                    found |= _literals(inner.data)
    return found


def _words(phrase: Phrase) -> list[str]:
    return sorted(_literals(_parser.parse(phrase.exact.pattern, phrase.exact.flags).data))


def _texts(words: list[str]) -> st.SearchStrategy[str]:
    """Text made of ``words`` (in several cases, some opening a line) and awkward characters."""
    cased = st.sampled_from(words).flatmap(
        lambda w: st.sampled_from([w, w.upper(), w.title(), w.replace("i", "\u0130")])
    )
    fragments = st.one_of(
        st.builds(operator.add, st.sampled_from(["", "\n", "\n\n", " \n> ", "--"]), cased),
        st.sampled_from([*_ODD, "\n", " ", "\t", ">", ":", "<a@b.example>", "550 ", "5.1.1 "]),
        st.text(alphabet=string.ascii_letters + string.digits + " .-@<>\n", max_size=6),
    )
    return st.lists(fragments, max_size=20).map("".join)


TEXTS = _texts(sorted({w for _, p in PHRASES for w in _words(p)} | {"a@b.example"}))


def _spans(match: re.Match[str] | None) -> object:
    if match is None:
        return None
    return [match.span(i) for i in range(len(match.groups()) + 1)]


@pytest.mark.parametrize(("name", "phrase"), PHRASES, ids=[n for n, _ in PHRASES])
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_a_phrase_finds_what_an_ignorecase_search_finds(
    name: str, phrase: Phrase, data: st.DataObject
) -> None:
    text = data.draw(_texts(_words(phrase) or ["x"]))
    assert _spans(phrase.search(text)) == _spans(phrase.folded.search(text)), name
    assert [_spans(m) for m in phrase.matches(text)] == [
        _spans(m) for m in phrase.folded.finditer(text)
    ]


def test_only_three_characters_lower_case_apart_from_ignorecase() -> None:
    """Every code point beyond ASCII, against every ASCII character and the classes patterns use:
    on ``str.lower()`` text a case-sensitive pattern decides as IGNORECASE does on the original,
    but for ``_FOLDS_APART``. Ranges and negated classes follow from these (a negated class is
    the complement under both)."""
    chars = [chr(cp) for cp in range(0x80, 0x110000) if not 0xD800 <= cp <= 0xDFFF]
    lowers = [c.lower() for c in chars]
    assert {c for c, low in zip(chars, lowers, strict=True) if len(low) != 1} <= set(_FOLDS_APART)
    kept = [
        (c, low)
        for c, low in zip(chars, lowers, strict=True)
        if len(low) == 1 and c not in _FOLDS_APART
    ]
    text = "".join(c for c, _ in kept)
    lower = "".join(low for _, low in kept)
    probes = [re.escape(c) for c in string.printable if not c.isupper()]
    probes += [r"\s", r"\d", r"\w", "[a-z]", "[a-z0-9_.-]"]
    for probe in probes:
        folded = [m.start() for m in re.finditer(probe, text, re.IGNORECASE)]
        exact = [m.start() for m in re.finditer(probe, lower)]
        assert folded == exact, probe
        # Final sigma: str.lower() picks one of two forms by context; both must decide alike.
        assert bool(re.fullmatch(probe, "\u03c2")) == bool(re.fullmatch(probe, "\u03c3"))
    for odd in _FOLDS_APART:  # and each of the three does fold apart: keep them out
        assert comparable(f"x{odd}y") is None


@settings(max_examples=200, deadline=None)
@given(
    needles=st.lists(st.text(alphabet="abc", min_size=1, max_size=4), min_size=1, max_size=12),
    text=st.text(alphabet="abcd", max_size=40),
)
def test_a_needle_index_finds_every_needle_the_text_holds(needles: list[str], text: str) -> None:
    keys = {needle: frozenset({i}) for i, needle in enumerate(dict.fromkeys(needles))}
    expected = {i for needle, ids in keys.items() if needle in text for i in ids}
    assert NeedleIndex(keys).ids(text) == expected


@settings(max_examples=100, deadline=None)
@given(text=TEXTS)
def test_the_phrase_layer_gate_passes_every_row_that_matches(text: str) -> None:
    """A row skipped for want of its needles would not have matched anyway."""
    lower = text.lower()
    live = RULES._index.ids(lower) | RULES._ungated
    for index, (search, row) in enumerate(RULES._scan):
        if search(lower):
            assert index in live, row.id


@pytest.mark.parametrize(
    ("pattern", "flags"),
    [(r"ABC|abd", 0), (r"abc", re.IGNORECASE), (r"(?i)abc", 0), (r"\x41bc", 0), (r"a+|b", 0)],
)
def test_no_needles_where_they_could_miss(pattern: str, flags: int) -> None:
    """An upper-case needle, a case-insensitive pattern or a branch without a literal: ungated."""
    assert needles_of(pattern, flags) == ()


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="2455..0139 a\n", max_size=24))
def test_the_status_pattern_reads_as_before(text: str) -> None:
    """The look-behind moved after the class digit: the same codes at the same places."""
    before = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
    assert [(m.span(), m.groups()) for m in scan.STATUS.finditer(text)] == [
        (m.span(), m.groups()) for m in before.finditer(text)
    ]


@settings(max_examples=200, deadline=None)
@given(text=TEXTS)
def test_text_about_reads_as_a_line_by_line_scan(text: str) -> None:
    """Looking the address up in the lower-cased text finds the lines a line scan finds."""
    address = "a@b.example"
    lines = text.split("\n")
    expected = [i for i, line in enumerate(lines) if address in line.lower()]
    assert scan._lines_naming(text.lower(), address) == expected
    assert bool(scan.text_about(text, address)) == bool(expected)
