"""The last resort: plain-text bounces from any MTA, read by their common shape.

The family detectors (qmail, Exim, Exchange, Gmail, ...) run first and claim the notices they
recognise by their own marks. What reaches this reader is a notice from a mail system no family
knows: it finds the addresses the notification text is about and the reply text nearest each.
"""

from __future__ import annotations

from . import prose
from .base import Finding, Hit, Mail
from .phrase import Phrase
from .scan import find_status

_BODY = Phrase(
    r"could not be delivered|couldn't be delivered|wasn't able to deliver|was not delivered"
    r"|undeliverable|permanent(?:ly)? (?:error|fail)|fatal errors?|delivery (?:has )?failed"
    r"|failed permanently|user unknown|unknown user|no such (?:user|mailbox)|does not exist"
    r"|delivery to the following|following addresses? (?:had|failed)|not be delivered to"
    r"|the following (?:recipient|address)|unable to deliver|message delivery failed"
    r"|could not deliver|smtp error|remote host said|delivery is delayed|has been delayed"
    r"|mailbox (?:is )?(?:full|unavailable)|returned to the sender|giving up"
)


class TextBounceDetector:
    """Any bounce whose facts are only in its prose."""

    name = "text"
    families: tuple[str, ...] = ()  # the generic prose reader: any mail system

    def detect(self, mail: Mail) -> Finding | None:
        """A bounce if the sender or the subject say so and the text names a failed address."""
        looks_like = mail.from_daemon or prose.SUBJECT.search(mail.subject)
        if not looks_like and not _BODY.search(mail.body):
            return None
        if not looks_like and mail.header("auto-submitted") == "" and not mail.reports:
            # A person's mail that merely talks about delivery needs a stronger sign.
            if len(_BODY.matches(mail.body)) < 2:
                return None
        hits = tuple(prose.read_hits(mail))
        if not hits and mail.from_daemon and prose.SUBJECT.search(mail.subject):
            # A mail system's failure notice that names nobody ("Delivery report unavailable"):
            # the returned message's own recipients are the ones it failed for.
            notice = " ".join(mail.body.split())[: prose.NOTICE_CHARS]
            hits = tuple(
                Hit(
                    address=a,
                    status=find_status(notice, failures_only=True),
                    action="failed",
                    diagnostic=notice,
                )
                for a in sorted(prose.original_recipients(mail.original))
            )
        return prose.finding_of(mail, self.name, hits)
