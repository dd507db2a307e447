"""DragonFly Mail Agent (dma): one sentence naming the recipient, then the remote reply.

This is the DragonFly Mail Agent v0.13 at df.example.jp.

There was an error delivering your mail to <user@example.org>.

mx.example.org [192.0.2.1] did not like our RCPT TO:
550 5.1.1 <user@example.org>: Recipient address rejected: User unknown
"""

from __future__ import annotations

import re

from . import prose
from .base import Finding, Mail
from .phrase import Phrase

_MARKS = Phrase(r"this is the dragonfly mail agent")
_RECIPIENT = re.compile(r"error delivering your mail to <([^<>\s]+@[^<>\s]+)>", re.IGNORECASE)


class DragonFlyDetector:
    """dma's notice: the address is in its one opening sentence."""

    name = "dragonfly"
    families: tuple[str, ...] = ("DragonFly",)

    def detect(self, mail: Mail) -> Finding | None:
        """Claim the notice by dma's greeting; the text after the address is its diagnostic."""
        if not _MARKS.search(mail.body) or not prose.looks_automatic(mail):
            return None
        blocks = [(m.group(1), mail.body[m.start() :]) for m in _RECIPIENT.finditer(mail.body)]
        return prose.finding(mail, self.name, blocks)
