"""PURE: text from mail or from an ERP made safe to print on a terminal.

A reply's subject, a bounce's diagnostic, a customer's name: whoever wrote them chose every
character. Printed raw, ESC or CSI (0x9B) sequences clear the screen, move the cursor, retitle
the window or hide text; BEL rings; backspace and a bare CR overwrite what was printed; and the
bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069, "Trojan Source",
CVE-2021-42574) show text in another order than it is stored. Each such character is printed as
a visible escape (``\\x1b``, ``\\u202e``) instead, so the clerk sees that it was there and what
it was, and nothing acts on the terminal. Newlines and tabs of a body are kept; a field that
must stay on its line (a subject in a one-line-per-thread list) escapes them too.

JSON output keeps its data: the same characters become JSON ``\\uXXXX`` escapes, which a JSON
reader decodes back to the original text.
"""

from __future__ import annotations

import re

# C0 controls, DEL and C1 controls (0x80-0x9F: 0x9B is CSI, 0x9D OSC in 8-bit terminals), the
# bidi marks, embeddings, overrides and isolates, and the Unicode line and paragraph
# separators (some terminals and pagers break lines at them).
_BIDI_AND_SEPARATORS = "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI_AND_SEPARATORS}]")
_UNSAFE_ON_ONE_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI_AND_SEPARATORS}]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, one_line: bool = False) -> str:
    """``text`` with every terminal control and bidi override shown as an escape.

    Line breaks (CRLF, LF) and tabs are kept unless ``one_line``; a CR that does not end a
    line is escaped, since it would return to the line's start and overwrite it.
    """
    if one_line:
        return _UNSAFE_ON_ONE_LINE.sub(_visible, text)
    return _UNSAFE.sub(_visible, text.replace("\r\n", "\n"))


def has_unsafe(text: str) -> bool:
    """Whether ``text`` holds anything :func:`printable` would escape (line breaks kept)."""
    return _UNSAFE.search(text) is not None


def json_printable(text: str) -> str:
    """Serialised JSON with the same characters as ``\\uXXXX`` escapes: still the same JSON.

    Only for the output of ``json.dumps``, where such characters can only stand inside strings
    (it escapes C0 controls itself; with ``ensure_ascii=False`` it leaves C1 and bidi ones raw).
    """
    # Newlines and tabs stay: between tokens they are indentation, and inside strings
    # json.dumps has escaped them already.
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
