"""Postfix's notice text (bounce(8)), for the notices that carry no delivery-status part.

    This is the mail system at host mx.example.net.
    I'm sorry to have to inform you that your message could not
    be delivered to one or more recipients. ...

    <user@example.org>: host mx.example.org[192.0.2.1] said: 550 5.1.1
        <user@example.org>: Recipient address rejected: User unknown (in reply to
        RCPT TO command)

A Postfix notice with its RFC 3464 part is the DSN detector's; this one reads the text alone.
"""

from __future__ import annotations

import re

from . import prose
from .base import Finding, Mail
from .phrase import Phrase

_MARKS = Phrase(
    r"this is the (?:postfix program|mail system) at host"
    r"|i'm sorry to have to inform you that (?:the|your) message"
)
# "<a@b>: ..." or "<a@b> (expanded from <c@d>): ...", continued on indented lines.
_BLOCK_START = re.compile(r"^<([^<>\s]+@[^<>\s]+)>(?: \(expanded from <[^<>]*>\))?:")


class PostfixDetector:
    """Postfix's human-readable bounce report."""

    name = "postfix"
    families: tuple[str, ...] = ("Postfix",)

    def detect(self, mail: Mail) -> Finding | None:
        """Claim the notice by Postfix's opening lines; read its ``<address>:`` paragraphs."""
        if not _MARKS.search(mail.body) or not prose.looks_automatic(mail):
            return None
        blocks = prose.paragraphs_after(mail.body.split("\n"), _BLOCK_START)
        return prose.finding(mail, self.name, blocks)
