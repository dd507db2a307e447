"""Yahoo! Mail's failure notice: qmail's layout under Yahoo's own opening sentence.

Sorry, we were unable to deliver your message to the following address.

<user@example.org>:
Remote host said: 550 5.1.1 <user@example.org>... User Unknown [RCPT_TO]
"""

from __future__ import annotations

from . import prose
from .base import Finding, Mail
from .phrase import Phrase
from .qmail import BLOCK_START

_MARKS = Phrase(r"sorry, we were unable to deliver your message to the following address")


class YahooDetector:
    """Yahoo! Mail (and the providers that share its mail platform)."""

    name = "yahoo"
    families: tuple[str, ...] = ("Yahoo",)

    def detect(self, mail: Mail) -> Finding | None:
        """Claim the notice by Yahoo's opening sentence; read its ``<address>:`` paragraphs."""
        if not _MARKS.search(mail.body) or not prose.looks_automatic(mail):
            return None
        blocks = prose.paragraphs_after(mail.body.split("\n"), BLOCK_START)
        return prose.finding(mail, self.name, blocks)
