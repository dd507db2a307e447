"""qmail's ``qmail-send`` failure notice: one ``<address>:`` paragraph per failed recipient.

Hi. This is the qmail-send program at mx.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<user@example.org>:
192.0.2.1 does not like recipient.
Remote host said: 550 5.1.1 <user@example.org>... User Unknown
Giving up on 192.0.2.1.
"""

from __future__ import annotations

import re

from . import prose
from .base import Finding, Mail
from .phrase import Phrase

_MARKS = Phrase(
    r"this is the qmail-send program|wasn't able to deliver your message to the following"
    r"|\(#[45]\.\d{1,3}\.\d{1,3}\)\s*$",  # qmail's own status note: "...does not exist. (#5.1.1)"
    re.MULTILINE,
)
# qmail names each recipient alone on a line, bracketed and followed by a colon (qmail-send.c).
BLOCK_START = re.compile(r"^\s*<([^<>\s]+@[^<>\s]+)>:")


class QmailDetector:
    """Notices from qmail-send and the many MTAs built on it."""

    name = "qmail"
    families: tuple[str, ...] = ("qmail",)

    def detect(self, mail: Mail) -> Finding | None:
        """Claim the notice by qmail's wording; read its ``<address>:`` paragraphs."""
        if not _MARKS.search(mail.body) or not prose.looks_automatic(mail):
            return None
        blocks = prose.paragraphs_after(mail.body.split("\n"), BLOCK_START)
        return prose.finding(mail, self.name, blocks)
