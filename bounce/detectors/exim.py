"""Exim's failure and warning notices: each failed address indented, its reason indented deeper.

    This message was created automatically by mail delivery software.

    A message that you sent could not be delivered to one or more of its
    recipients. This is a permanent error. The following address(es) failed:

      user@example.org
        SMTP error from remote mail server after RCPT TO:<user@example.org>:
        host mx.example.org [192.0.2.1]: 550 5.1.1 <user@example.org>... User Unknown

Exim also names the failed addresses in ``X-Failed-Recipients``, which is trusted over the text.
"""

from __future__ import annotations

import re

from . import prose
from .base import Finding, Mail
from .phrase import Phrase
from .scan import ADDRESS

_MARKS = Phrase(
    r"this message was created automatically by mail delivery software"
    r"|smtp error from remote (?:mail )?server"
    r"|the following address(?:\(es\))? failed"
    r"|could not be delivered to one or more of its\s+recipients"
    r"|recipient addresses that were\s+incorrectly constructed"
)
# "  user@example.org", "  <user@example.org>: reason" (two spaces: Exim's deliver.c).
_ADDRESS_LINE = re.compile(r"^ {1,3}<?([^<>\s:]+@[^<>\s:]+?)>?(?::|\s|$)")
# "  a@b <c@d>: malformed address: <c@d> may not follow a@b": the address refused is <c@d>.
_MALFORMED = re.compile(r"malformed address: <?([^<>\s]+@[^<>\s]+?)>? ", re.IGNORECASE)


class EximDetector:
    """Exim and the providers that run it (GMX, Mail.ru, 1&1 ...)."""

    name = "exim"
    families: tuple[str, ...] = ("Exim", "GMX", "MailRu", "EinsUndEins")

    def detect(self, mail: Mail) -> Finding | None:
        """Claim the notice by Exim's wording; read its indented address blocks."""
        if not _MARKS.search(mail.body) or not prose.looks_automatic(mail):
            return None
        failed = {a.lower() for a in ADDRESS.findall(mail.header("x-failed-recipients"))}
        blocks = [b for b in _blocks(mail.body) if not failed or b[0].lower() in failed]
        return prose.finding(mail, self.name, blocks)


def _blocks(body: str) -> list[prose.Block]:
    lines = body.split("\n")
    blocks: list[prose.Block] = []
    for index, line in enumerate(lines):
        found = _ADDRESS_LINE.match(line)
        if found is None:
            continue
        malformed = _MALFORMED.search(line)
        address = malformed.group(1) if malformed else found.group(1)
        out = [line]
        for follow in lines[index + 1 : index + 12]:
            # The reason is indented deeper than the address; the next address or prose ends it.
            if not follow.strip() or not follow.startswith("    "):
                break
            out.append(follow)
        blocks.append((address, "\n".join(out)))
    return blocks
