"""Gmail's text notice: the failed recipients listed, then Google's account of the reply.

Delivery to the following recipient failed permanently:

     user@example.org

Technical details of permanent failure:
Google tried to deliver your message, but it was rejected by the server for the recipient
domain example.org by mx.example.org. [192.0.2.1].

The error that the other server returned was:
550 5.1.1 <user@example.org>... User Unknown
"""

from __future__ import annotations

import re

from . import prose
from .base import Finding, Mail
from .phrase import Phrase
from .scan import ADDRESS

_MARKS = Phrase(
    r"delivery to the following recipients? (?:failed|has been delayed)"
    r"|technical details of (?:permanent|temporary) failure"
    r"|the (?:error|response) (?:that )?(?:the other|from the remote) server (?:returned )?was"
)
_LIST = re.compile(r"delivery to the following recipients? [^\n]*:\s*\n", re.IGNORECASE)
_DETAILS = re.compile(r"technical details|google tried|the (?:error|response)", re.IGNORECASE)


class GmailDetector:
    """Gmail's own (pre-RFC 3464) failure and delay notices."""

    name = "gmail"
    families: tuple[str, ...] = ("Gmail",)

    def detect(self, mail: Mail) -> Finding | None:
        """Claim the notice by Google's wording; every listed address shares the details."""
        if not _MARKS.search(mail.body) or not prose.looks_automatic(mail):
            return None
        return prose.finding(mail, self.name, _blocks(mail.body))


def _blocks(body: str) -> list[prose.Block]:
    listed = _LIST.search(body)
    if listed is None:
        return []
    rest = body[listed.end() :]
    details = _DETAILS.search(rest)
    head, tail = (rest[: details.start()], rest[details.start() :]) if details else (rest, "")
    return [(address, f"{address}\n{tail}") for address in ADDRESS.findall(head)]
