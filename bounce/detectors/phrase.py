"""Case-insensitive searches that stay fast: lower-case the text once, match case-sensitively.

Detectors read the same notice body with a dozen case-insensitive patterns. Python's regex
engine gives up its literal-prefix scan under IGNORECASE and tries such a pattern at every
position of the text; on lower-cased ASCII text a case-sensitive pattern finds the same matches
several times faster.
"""

from __future__ import annotations

import re
from functools import lru_cache


class Phrase:
    """A lower-case pattern, searched case-insensitively.

    On ASCII text it matches case-sensitively against the lower-cased text, which finds exactly
    what IGNORECASE finds; other text keeps IGNORECASE, since Unicode case folding is not
    ``str.lower()``. A match's groups may therefore be lower-cased, but its positions hold for
    the text given: slice that for the original case. ``needles``, when given, are lower-case
    strings of which every match holds one: an ASCII text holding none is not searched at all.
    """

    def __init__(self, pattern: str, flags: int = 0, *, needles: tuple[str, ...] = ()) -> None:
        if any(c.isupper() for c in re.sub(r"\\.", "", pattern) + "".join(needles)):
            raise ValueError(f"Phrase needs a lower-case pattern: {pattern!r}")
        self.exact = re.compile(pattern, flags)
        self.folded = re.compile(pattern, flags | re.IGNORECASE)
        self.needles = needles

    def _target(self, text: str) -> tuple[re.Pattern[str], str] | None:
        if not text.isascii():
            return self.folded, text
        text = lowered(text)
        if self.needles and not any(needle in text for needle in self.needles):
            return None
        return self.exact, text

    def search(self, text: str) -> re.Match[str] | None:
        """The first match in ``text``, case-insensitively."""
        target = self._target(text)
        return target[0].search(target[1]) if target else None

    def matches(self, text: str) -> list[re.Match[str]]:
        """Every match in ``text``, case-insensitively."""
        target = self._target(text)
        return list(target[0].finditer(target[1])) if target else []

    def found(self, text: str) -> bool:
        """Whether the pattern occurs in ``text``, case-insensitively."""
        return self.search(text) is not None


@lru_cache(maxsize=16)
def lowered(text: str) -> str:
    """``text.lower()``, cached: several detectors search the same notice body in turn."""
    return text.lower()
