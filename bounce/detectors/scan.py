"""Searches detectors run over a notice's text: addresses, status and reply codes, commands.

Every pattern here is written so the regex engine can skip ahead (see the look-behinds), and the
costliest searches are cached: a notice repeating one block a thousand times asks the same
question a thousand times.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .phrase import Phrase, comparable, lowered

# Good enough for the addresses MTAs print, including simple quoted local parts ("a..b"@c).
# An unquoted local part starts only where a run of its characters starts (the look-behind):
# without it, a long run with no "@" after it is rescanned from every position, quadratic in
# the line's length (a 250 KB line held one parse for minutes). The leftmost match is the same.
ADDRESS = re.compile(
    r"(?:\"[^\"\s<>@]+\"|(?<![A-Za-z0-9.!#$%&'*+/=?^_`{|}~-])[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+)@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]*[A-Za-z0-9]"
)
# RFC 3463 enhanced status codes; the subject and detail are at most three digits. The
# look-behind follows the class digit (see below): "(?<![\d.])([245])" means the same.
STATUS = re.compile(r"([245])(?<![\d.][245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
# Each look-behind follows the first digit rather than preceding it ("\b[245]" is written
# "[245](?<!\w[245])"): the same match, but a pattern opening on a character class lets the
# regex engine skip ahead instead of trying every position.
_ATTACHED = re.compile(
    r"[245](?<!\w[245])\d\d[ -]+['\"#(]?([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)"
)
# RFC 5321 s4.2 reply codes, as printed at the start of a reply or after "smtp;".
REPLY_CODE = re.compile(
    r"([245](?<![\w.#-][245])[0-7]\d)(?:[ -]|$)(?!\s*(?:bytes|kb|mb|days|hours))"
)


@lru_cache(maxsize=8)
def parse_fields(text: str) -> tuple[dict[str, str], ...]:
    """RFC 3464 / RFC 5965 field blocks: groups of ``Name: value`` separated by blank lines.

    Cached, so read-only to callers: the DSN detector and then ``stated_actions`` read the same
    delivery-status part of one message.
    """
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    name = ""
    for line in text.split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
            current, name = {}, ""
        elif line[:1] in (" ", "\t") and name:
            current[name] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            name = key.strip().lower()
            if name == "final-recipient" and name in current:
                # Some MTAs (AOL) run the per-recipient blocks together without a blank line.
                blocks.append(current)
                current = {}
            if name and " " not in name:
                current.setdefault(name, value.strip())
            else:
                name = ""
    if current:
        blocks.append(current)
    return tuple(blocks)


def strip_type(value: str) -> str:
    """``rfc822; a@b`` -> ``a@b`` (RFC 3464 s2.3.2 address-type prefix)."""
    _, sep, rest = value.partition(";")
    return (rest if sep else value).strip()


def first_address(text: str) -> str | None:
    """The first e-mail address in ``text``, lower-cased."""
    found = ADDRESS.search(text) if "@" in text else None  # every address holds an "@"
    return found.group(0).lower().strip(".") if found else None


def find_status(text: str, *, failures_only: bool = False) -> str | None:
    """The enhanced status code in ``text``: the one written after a reply code, else the first.

    "550 5.7.1 ..." is the remote server's own answer, so it beats a code the reporting MTA
    added in front ("5.1.0 - Unknown address error 550-'5.7.1 ...").
    """
    attached = _ATTACHED.search(text)
    if attached and not (failures_only and attached.group(1) == "2"):
        return ".".join(attached.groups())
    for found in STATUS.finditer(text):
        if not (failures_only and found.group(1) == "2"):
            return ".".join(found.groups())
    return None


def find_reply_code(text: str) -> int | None:
    """The first SMTP reply code in ``text``."""
    found = REPLY_CODE.search(text)
    return int(found.group(1)) if found else None


def message_id(text: str) -> str | None:
    """The Message-ID header of the first message in ``text`` (an attached original)."""
    found = re.search(r"^message-id:[ \t]*\n?[ \t]*(<[^>\s]+>)", text, re.IGNORECASE | re.MULTILINE)
    return found.group(1) if found else None


@lru_cache(maxsize=8)
def text_about(text: str, address: str) -> str:
    """Every line of ``text`` naming ``address``, each with the lines after it up to a blank.

    Sendmail names the address once in its list and again in the session transcript; both say
    something about the failure. Cached: a notice repeating one recipient's block a thousand
    times asked the same question of the same text a thousand times.
    """
    lower = lowered(text)
    if address not in lower:
        return ""  # no line names it: lower-casing never makes or takes away a line break
    lines = text.split("\n")
    said: list[str] = []
    for index in _lines_naming(lower, address):
        out = [lines[index].strip()]
        for follow in lines[index + 1 : index + 8]:
            if not follow.strip() or ("@" in follow and ADDRESS.search(follow)):
                break
            out.append(follow.strip())
        paragraph = " ".join(" ".join(out).split())
        if paragraph not in said:
            said.append(paragraph)
    return " ".join(said)


def _lines_naming(lower: str, needle: str) -> list[int]:
    """The indexes of the lines of ``lower`` holding ``needle`` (which holds no line break)."""
    indexes: list[int] = []
    at = lower.find(needle)
    while at != -1:
        indexes.append(lower.count("\n", 0, at))
        end = lower.find("\n", at)
        if end == -1:
            break
        at = lower.find(needle, end)
    return indexes


# "\bword\b" is written "word\b(?<!\wword)", which means the same: a pattern opening on a
# literal lets the regex engine skip ahead to it instead of trying every position.
_COMMANDS = [
    ("DATA", Phrase(r"end of data|data\b(?<!\wdata)|after data|final data")),
    ("RCPT", Phrase(r"rcpt\b(?<!\wrcpt)|rcpt_to|does not like recipient")),
    ("MAIL", Phrase(r"mail from\b(?<!\wmail from)|mail_from\b(?<!\wmail_from)")),
    (
        "CONNECT",
        Phrase(
            r"initial connection|greeting\b(?<!\wgreeting)|banner\b(?<!\wbanner)"
            r"|helo\b(?<!\whelo)|ehlo\b(?<!\wehlo)"
        ),
    ),
]
_IN_REPLY = Phrase(
    r"(?:in reply to|after|did not like our|>>>)\s*(?:the\s*)?(end of data|data|rcpt|mail from|"
    r"initial connection|helo|ehlo)",
    needles=("data", "rcpt", "mail from", "initial connection", "helo", "ehlo"),
)
# Every match of every pattern above holds one of these: a text naming none names no command.
_ALL_NEEDLES = {n for p in (_IN_REPLY, *(p for _, p in _COMMANDS)) for n in p.needles}
_COMMAND_NEEDLES = tuple(
    sorted(n for n in _ALL_NEEDLES if not any(o != n and o in n for o in _ALL_NEEDLES))
)


@lru_cache(maxsize=8)
def find_command(text: str) -> str | None:
    """The SMTP command (RFC 5321 s4.1) a failure answered: RCPT, DATA, MAIL or CONNECT.

    Cached: detectors ask it of the whole notice once per recipient, the costliest search here.
    """
    lower = comparable(text)
    if lower is not None:
        for needle in _COMMAND_NEEDLES:
            if needle in lower:
                break
        else:
            return None  # one pass over the needles instead of five searches' gates
    said = _IN_REPLY.search(text)
    if said:
        text = said.group(1)
    for command, pattern in _COMMANDS:
        if pattern.found(text):
            return command
    return None
