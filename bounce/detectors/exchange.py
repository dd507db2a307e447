"""Microsoft Exchange (2003, 2007+) and Office 365 text notices.

Exchange 2003 lists ``user@example.org on <date>`` and indents the reason under it; Exchange
2007 and later, and Office 365, repeat each address under "Diagnostic information for
administrators" with the remote reply (``Remote Server returned '550 5.1.1 ...'`` or
``#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##``) on the lines below it.
"""

from __future__ import annotations

import re

from . import prose
from .base import Finding, Mail
from .phrase import Phrase

_MARKS = Phrase(
    r"did not reach the following recipient|delivery has failed to these recipients or groups"
    r"|remote server returned|diagnostic information for administrators|\bmsexch:"
    r"|your message did not reach some or all of the intended recipients"
)
_ADMIN = re.compile(r"diagnostic information for administrators:?", re.IGNORECASE)
# 2007+: the address alone on its line (Exchange may append "<mailto:...>" or "#<...>").
_ADMIN_BLOCK = re.compile(r"^\s*([^\s<>@:]+@[^\s<>@:#]+?)(?:\s*<mailto:[^>]*>)?\s*(?:#.*)?$")
# 2003: "user@example.org on 4/29/2007 16:51:51"
_DATED_BLOCK = re.compile(r"^\s*([^\s<>@:]+@[^\s<>@:]+)\s+on\s+\S.*$")


class ExchangeDetector:
    """Exchange Server and Office 365 / Exchange Online non-delivery reports."""

    name = "exchange"
    families: tuple[str, ...] = ("Exchange2003", "Exchange2007", "Office365")

    def detect(self, mail: Mail) -> Finding | None:
        """Claim the report by Exchange's wording; read its per-recipient blocks."""
        if not _MARKS.search(mail.body) or not prose.looks_automatic(mail):
            return None
        admin = _ADMIN.search(mail.body)
        if admin:
            lines = mail.body[admin.end() :].split("\n")
            blocks = prose.paragraphs_after(lines, _ADMIN_BLOCK)
        else:
            blocks = prose.paragraphs_after(mail.body.split("\n"), _DATED_BLOCK)
        return prose.finding(mail, self.name, blocks)
