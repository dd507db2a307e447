"""Case-insensitive searches that stay fast: lower-case the text once, match case-sensitively.

Detectors read the same notice body with a dozen case-insensitive patterns. Python's regex
engine gives up its literal-prefix scan under IGNORECASE and tries such a pattern at every
position of the text; on lower-cased text a case-sensitive pattern finds the same matches
several times faster, and a pattern none of whose literal strings ("needles") occurs in the
text is not searched at all.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

try:  # the stdlib's own regex parser (private, 3.11+): only to find needles, never to match
    from re import _constants, _parser  # type: ignore[attr-defined]
except ImportError:  # a later Python moved it: every pattern simply goes ungated
    _parser = None

# The only characters outside ASCII on which ``str.lower()`` and the regex engine's IGNORECASE
# disagree about an ASCII pattern: dotted capital I lower-cases to two characters (positions
# would shift); dotless i and long s match "i" and "s" under IGNORECASE but lower-case to
# themselves. Checked over every code point by tests/test_bounce_phrase.py.
_FOLDS_APART = ("\u0130", "\u0131", "\u017f")


class Phrase:
    """A lower-case pattern, searched case-insensitively.

    It matches case-sensitively against the lower-cased text, which finds exactly what
    IGNORECASE finds as long as every character lower-cases to one character that the pattern
    treats as IGNORECASE treats the original (``comparable``); a text holding one of the few
    exceptions keeps IGNORECASE. A match's groups may therefore be lower-cased, but its
    positions hold for the text given: slice that for the original case. ``needles`` are
    lower-case strings of which every match holds one; a text holding none is not searched at
    all. Left out, they are read from the pattern itself (``needles_of``).

    ``line_start`` promises that a match begins at the start of the line holding its needle
    (a header-like ``^[> \\t]*name:`` under MULTILINE): the search then begins at the line of
    the first needle in the text instead of trying every line above it.
    """

    def __init__(
        self,
        pattern: str,
        flags: int = 0,
        *,
        needles: tuple[str, ...] = (),
        line_start: bool = False,
    ) -> None:
        if any(c.isupper() for c in re.sub(r"\\.", "", pattern) + "".join(needles)):
            raise ValueError(f"Phrase needs a lower-case pattern: {pattern!r}")
        self.exact = re.compile(pattern, flags)
        self.folded = re.compile(pattern, flags | re.IGNORECASE)
        self.needles = needles or needles_of(pattern, flags)
        if line_start and not (self.needles and flags & re.MULTILINE):
            raise ValueError(f"line_start needs needles and MULTILINE: {pattern!r}")
        self.line_start = line_start

    def _target(self, text: str) -> tuple[re.Pattern[str], str, int] | None:
        lower = comparable(text)
        if lower is None:
            return self.folded, text, 0
        if not self.needles:
            return self.exact, lower, 0
        if self.line_start:
            first = min((at for at in map(lower.find, self.needles) if at != -1), default=-1)
            if first == -1:
                return None
            return self.exact, lower, lower.rfind("\n", 0, first) + 1
        for needle in self.needles:
            if needle in lower:
                return self.exact, lower, 0
        return None  # no needle: the pattern cannot match

    def search(self, text: str) -> re.Match[str] | None:
        """The first match in ``text``, case-insensitively."""
        target = self._target(text)
        return target[0].search(target[1], target[2]) if target else None

    def matches(self, text: str) -> list[re.Match[str]]:
        """Every match in ``text``, case-insensitively."""
        target = self._target(text)
        return list(target[0].finditer(target[1], target[2])) if target else []

    def found(self, text: str) -> bool:
        """Whether the pattern occurs in ``text``, case-insensitively."""
        return self.search(text) is not None


@lru_cache(maxsize=16)
def lowered(text: str) -> str:
    """``text.lower()``, cached: several detectors search the same notice body in turn."""
    return text.lower()


@lru_cache(maxsize=16)
def comparable(text: str) -> str | None:
    """``text.lower()`` where a lower-case ASCII pattern finds in it just what IGNORECASE finds
    in ``text``, at the same positions; None for a text holding a character that folds apart.

    Unicode text qualifies too: outside ASCII only ``_FOLDS_APART`` lower-case differently from
    how the regex engine folds them (the final sigma's context only picks between two
    non-ASCII letters), so a Japanese or German notice keeps the fast, gated search.
    """
    lower = lowered(text)
    if text.isascii():
        return lower
    if len(lower) != len(text) or any(c in text for c in _FOLDS_APART):
        return None
    return lower


def needles_of(pattern: str, flags: int = 0) -> tuple[str, ...]:
    """Lower-case literal strings of which every match of ``pattern`` holds one; () if unsure.

    Read from the stdlib's parse of the pattern. An IGNORECASE pattern, or a needle that an
    escape made upper-case, gives none: such a needle would miss on lower-cased text.
    """
    if _parser is None or flags & re.IGNORECASE:
        return ()
    parsed = _parser.parse(pattern, flags)
    if parsed.state.flags & re.IGNORECASE:  # an inline (?i)
        return ()
    found = _needles(parsed.data)
    if not found or any(needle != needle.lower() for needle in found):
        return ()
    return tuple(sorted(found))


def _needles(items: list[tuple[Any, Any]]) -> frozenset[str] | None:
    """Literal strings of which every match of the parsed pattern ``items`` holds one, or None.

    A run of literal characters in a sequence is required; so is a group or an alternation
    whose every branch yields needles. Of those, the smallest set whose needles all have four
    characters or more wins (each needle costs one substring test), else the set whose shortest
    needle is longest.
    Anything else (classes, repeats, look-arounds, anchors) only breaks a run: skipping it errs
    on the side of searching.
    """
    candidates: list[frozenset[str]] = []
    run: list[str] = []
    for op, av in [*items, (None, None)]:
        if op is _constants.LITERAL:
            run.append(chr(av))
            continue
        if run:
            candidates.append(frozenset({"".join(run)}))
            run = []
        if op is _constants.SUBPATTERN and not av[1] and not av[2]:  # no inline flags
            group = _needles(av[3].data)
            if group:
                candidates.append(group)
        elif op is _constants.BRANCH:
            branches = [_needles(branch.data) for branch in av[1]]
            if all(branches):
                candidates.append(frozenset().union(*(b for b in branches if b)))
    if not candidates:
        return None
    return max(candidates, key=_needle_merit)


def _needle_merit(needles: frozenset[str]) -> tuple[bool, int, int]:
    shortest = min(map(len, needles))
    return shortest >= 4, -len(needles), shortest


class NeedleIndex:
    """Which of many needles occur in a text, found in one pass of the regex engine.

    Testing hundreds of needles one by one with ``in`` is a Python loop per text. Here one
    pattern holds them all as a trie (shared prefixes written once, a longer needle tried before
    its prefix), looked for inside a lookahead at every position: at each position the engine
    yields the longest needle starting there, and every needle that is a prefix of it starts
    there too. ``keys`` maps each needle to the ids it stands for.
    """

    def __init__(self, keys: dict[str, frozenset[int]]) -> None:
        needles = sorted(n for n in keys if n)
        self._ids = {
            n: frozenset().union(*(keys.get(n[:k], frozenset()) for k in range(1, len(n) + 1)))
            for n in needles
        }
        self._pattern: re.Pattern[str] | None = None
        self._trie = _trie(needles)

    def ids(self, text: str) -> set[int]:
        """The ids of every needle occurring in ``text``."""
        if not self._trie:
            return set()
        if self._pattern is None:  # compiled on first use: a Rules copy may never be asked
            self._pattern = re.compile(f"(?=({self._trie}))", re.DOTALL)
        found: set[int] = set()
        for needle in set(self._pattern.findall(text)):
            found |= self._ids[needle]
        return found


def _trie(needles: list[str]) -> str:
    """A pattern matching exactly ``needles``, longest first, with shared prefixes factored."""
    root: dict[str, Any] = {}
    for needle in needles:
        node = root
        for char in needle:
            node = node.setdefault(char, {})
        node[""] = {}  # a needle ends here

    def write(node: dict[str, Any]) -> str:
        branches = [re.escape(char) + write(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return write(root)
