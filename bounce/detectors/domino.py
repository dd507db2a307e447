"""IBM (Lotus) Domino and Notes: "was not delivered to: ... because: ..." and "Failure Reasons".

    Your message

      Subject: Invoice 1042

    was not delivered to:

      user@example.org

    because:

      User user (user@example.org) not listed in Domino Directory

Older Notes SMTP gateways write ``------- Failure Reasons --------``, the reason, then the
addresses, and ``------- Returned Message --------`` before the original.
"""

from __future__ import annotations

import re

from . import prose
from .base import Finding, Mail
from .phrase import Phrase
from .scan import ADDRESS

_MARKS = Phrase(r"was not delivered to:|-+\s*failure reasons\s*-+|lotus domino")
_DOMINO = re.compile(r"was not delivered to:(.*?)\bbecause:(.*)", re.IGNORECASE | re.DOTALL)
_NOTES = re.compile(r"-+\s*failure reasons\s*-+(.*?)(?:^-{3,}|\Z)", re.I | re.DOTALL | re.M)


class DominoDetector:
    """Domino's two-part notice and the older Notes gateway's "Failure Reasons" section."""

    name = "domino"
    families: tuple[str, ...] = ("Domino", "Notes")

    def detect(self, mail: Mail) -> Finding | None:
        """Claim the notice by Domino's headings; the reason section is every address's text."""
        if not _MARKS.search(mail.body) or not prose.looks_automatic(mail):
            return None
        blocks: list[prose.Block] = []
        domino = _DOMINO.search(mail.body)
        notes = _NOTES.search(mail.body)
        if domino:
            reason = domino.group(2)
            blocks = [(a, f"{a}\n{reason}") for a in ADDRESS.findall(domino.group(1))]
        elif notes:
            section = notes.group(1)
            blocks = [(a, section) for a in ADDRESS.findall(section)]
        return prose.finding(mail, self.name, blocks)
