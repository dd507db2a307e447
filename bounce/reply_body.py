"""PURE: what the customer wrote this time: a reply's text without its quoted history,
signature and disclaimers.

``mail-parser-reply`` does the cutting (the "On ... wrote:", "Le ... a écrit :", "El ...
escribió:" lines, Outlook header blocks, "Sent from my ...", closings, disclaimers). Only what
it does not do is here:

* Romanian, which it has no table for: "În ... a scris:" / "Pe ... a scris:" lines and the
  "De la: / Trimis: / Către: / Subiect:" block cut the text before the library sees it, and
  the Romanian closings end the body after it;
* a closing that starts a sentence ("Thanks, we paid it yesterday") is text, not a signature:
  the library cuts from any line starting "Thanks," to the end, so its signature cut is kept
  only when that line is the closing alone;
* lines still quoted with ">" (a reply written above an unlabelled quote) are history;
* runs of spaces and tabs are one space, as the library's patterns expect.
"""

from __future__ import annotations

import re

from mailparser_reply.constants import MAIL_LANGUAGES
from mailparser_reply.parser import EmailMessage

# The languages the library should read headers in (it adds English itself).
_LIBRARY_LANGUAGES = ("en", "fr", "es")

_RO_WROTE = re.compile(
    r"^[ >]*(?:În|In|Pe)\s[^\n]{0,200}?(?:\n[^\n]{0,200}?)?\ba\s+scris\s*:?[ \t]*$",
    re.MULTILINE | re.IGNORECASE,
)
_RO_HEADERS = re.compile(
    r"^[ >*]*(?:De la|Trimis|Către|Catre|Subiect|Data)\s*:.*(?:\n[ >*]*"
    r"(?:De la|Trimis|Către|Catre|Subiect|Data|Cc)\s*:.*){1,}",
    re.MULTILINE | re.IGNORECASE,
)
# A closing alone on its line (the library's own closings, and Romanian ones it lacks):
# where the body ends when the library's cut started inside a sentence.
_RO_CLOSINGS = (
    r"Cu stim[aă]",
    r"Cu respect",
    r"Cu drag",
    r"Numai bine",
    r"O zi bun[aă]",
    r"Toate cele bune",
    r"Mul[tț]umesc",
    r"Mersi",
)
_CLOSING_ALONE = re.compile(
    r"^[ \t]*(?:"
    + "|".join(
        [
            str(s).rstrip(",")
            for lang in _LIBRARY_LANGUAGES
            for s in MAIL_LANGUAGES[lang].get("signatures", [])
        ]
        + list(_RO_CLOSINGS)
    )
    + r")[ \t,.!]*$",
    re.MULTILINE | re.IGNORECASE,
)
# "Thanks," / "Saludos," / "Cordialement" alone on a line: the library's signature cut is
# right only when its first line is one of these (a word or three, then nothing).
_CLOSING_LINE = re.compile(r"^[\W_]*[\w'’ ]{1,40}?[,.!]?\s*$")
_BLANKS = re.compile(r"[ \t\u00a0]+")
_QUOTED_LINE = re.compile(r"^[ \t]*>.*$\n?", re.MULTILINE)
MAX_CHARS = 20_000


def latest_text(body: str) -> str:
    """The newest part of a reply's plain-text ``body``: no quoted history, signature or
    disclaimer. Empty when nothing of the customer's own is left."""
    text = body.replace("\r\n", "\n").replace("\r", "\n")[:MAX_CHARS]
    # The library's headers and closings are written with single spaces ("Kind regards,").
    text = _BLANKS.sub(" ", text)
    text = _cut_at_first(text, (_RO_WROTE, _RO_HEADERS))
    message = EmailMessage(
        text=text, languages=list(_LIBRARY_LANGUAGES), keep_hyphen_lists=True
    ).read()
    if not message.replies:
        return ""
    reply = message.replies[0]
    own = reply.content.replace(reply.headers or "", "", 1) if reply.headers else reply.content
    for disclaimer in reply.disclaimers or []:
        own = own.replace(disclaimer, "")
    signature = (reply.signatures or "").strip()
    if signature and _CLOSING_LINE.match(signature.splitlines()[0]):
        at = own.rfind(signature)
        if at >= 0:
            own = own[:at]
    own = _cut_at_first(own, (_CLOSING_ALONE,), after=1)
    return _QUOTED_LINE.sub("", own).strip()


def _cut_at_first(text: str, patterns: tuple[re.Pattern[str], ...], *, after: int = 0) -> str:
    """``text`` up to the earliest match of any of ``patterns`` starting at or after
    ``after`` (the whole text if none)."""
    ends = [m.start() for p in patterns if (m := p.search(text, after)) is not None]
    return text[: min(ends)] if ends else text
