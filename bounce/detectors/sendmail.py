"""Sendmail's text notice: the failed addresses listed, then the SMTP session transcript.

    ----- The following addresses had permanent fatal errors -----
    <user@example.org>
        (reason: 550 5.1.1 <user@example.org>... User Unknown)

       ----- Transcript of session follows -----
    ... while talking to mx.example.org.:
    >>> DATA
    <<< 550 5.1.1 <user@example.org>... User Unknown

Each address's text is its list entry plus every transcript line naming it. A Sendmail notice
with an RFC 3464 part is the DSN detector's; this reads those sent without one (and V5 sendmail,
which lists nobody, through the common-shape reading of its transcript).
"""

from __future__ import annotations

import re

from . import prose
from .base import Finding, Mail
from .phrase import Phrase
from .scan import ADDRESS, text_about

_MARKS = Phrase(
    r"-{3,} ?the following addresses had (?:permanent fatal errors|transient non-fatal errors)"
    r"|-{3,} ?transcript of session follows ?-{3,}"
)
_LIST = re.compile(
    r"-{3,} ?the following addresses had [^\n]*-{3,}\n(.*?)(?=^\s*-{3,}|\Z)",
    re.IGNORECASE | re.DOTALL | re.MULTILINE,
)
_LISTED = re.compile(r"^\s*(?:>>>\s*)?<?([^<>\s()]+@[^<>\s()]+?)>?(?:\s|$)", re.MULTILINE)


class SendmailDetector:
    """Sendmail (and the Sendmail-shaped notices of Active!hunter, McAfee and others)."""

    name = "sendmail"
    families: tuple[str, ...] = ("Sendmail", "V5sendmail", "Activehunter", "McAfee")

    def detect(self, mail: Mail) -> Finding | None:
        """Claim the notice by Sendmail's section rules; read the listed addresses."""
        if not _MARKS.search(mail.body) or not prose.looks_automatic(mail):
            return None
        blocks: list[prose.Block] = []
        for section in _LIST.finditer(mail.body):
            for found in _LISTED.finditer(section.group(1)):
                if ADDRESS.fullmatch(found.group(1)):
                    address = found.group(1).lower()
                    blocks.append((address, text_about(mail.body, address)))
        return prose.finding(mail, self.name, blocks)
