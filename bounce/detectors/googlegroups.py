"""Google Groups: a post refused by a group, told in the sender's language with no codes."""

from __future__ import annotations

from .base import Finding, Hit, Mail
from .scan import ADDRESS

_GOOGLE_DOMAINS = ("googlemail.com", "google.com")
# The notice is localised (Czech, German, Japanese ...), so the facts are stated here once.
_DIAGNOSTIC = (
    "Google Groups refused the post: the group may not exist, or the sender may not have "
    "permission to post to it."
)


class GoogleGroupsDetector:
    """Google's mailer daemon naming only ``...@googlegroups.com`` in X-Failed-Recipients."""

    name = "googlegroups"
    families: tuple[str, ...] = ("GoogleGroups",)

    def detect(self, mail: Mail) -> Finding | None:
        """One hit per refused group address."""
        if not mail.sender.endswith(_GOOGLE_DOMAINS) or not mail.from_daemon:
            return None
        failed = [a.lower() for a in ADDRESS.findall(mail.header("x-failed-recipients"))]
        if not failed or not all(a.endswith("@googlegroups.com") for a in failed):
            return None
        hits = tuple(Hit(address=a, action="failed", diagnostic=_DIAGNOSTIC) for a in failed)
        return Finding(kind="bounce", detector=self.name, hits=hits)
