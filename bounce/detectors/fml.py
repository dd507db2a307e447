"""fml (a Japanese mailing-list manager) refusing a post from someone not on the list.

    You are not a member of this mailing list <list@example.org>.

The list refused the post, so the list's address is the failed recipient.
"""

from __future__ import annotations

import re

from . import prose
from .base import Finding, Mail

_REFUSAL = re.compile(
    r"you are not a member of this mailing list <([^<>\s]+@[^<>\s]+)>", re.IGNORECASE
)
# The list manager writes from its own administrative address.
_LIST_ROLE = re.compile(r"-(?:admin|ctl|owner|request)@", re.IGNORECASE)


class FMLDetector:
    """fml's "you are not a member" refusal."""

    name = "fml"
    families: tuple[str, ...] = ("FML",)

    def detect(self, mail: Mail) -> Finding | None:
        """The list address named in the refusal, with the refusal as its diagnostic."""
        found = _REFUSAL.search(mail.body)
        if found is None:
            return None
        if not (prose.looks_automatic(mail) or _LIST_ROLE.search(mail.sender)):
            return None
        sentence = mail.body[found.start() :].partition("\n\n")[0]
        return prose.finding(mail, self.name, [(found.group(1), sentence)])
