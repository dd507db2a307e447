"""RFC 3834 automatic replies (vacation, out-of-office): answers from a person's mailbox."""

from __future__ import annotations

import re

from .base import Finding, Hit, Mail
from .scan import first_address

_SUBJECT = re.compile(
    r"^\s*(?:auto(?:matic)?[ -]?(?:reply|response|antwort)|auto:|out of (?:the )?office"
    r"|vacation|away from|abwesenheit|absence|r[ée]ponse automatique|自動応答|不在)",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(r"undeliver|delivery|failure|returned|bounce|fail", re.IGNORECASE)


class AutoReplyDetector:
    """``Auto-Submitted: auto-replied`` and the vendor headers and subjects that mean the same."""

    name = "autoreply"
    families: tuple[str, ...] = ()  # RFC 3834: any mailbox

    def detect(self, mail: Mail) -> Finding | None:
        """An automatic reply from a person's address, not from a mail system."""
        if mail.from_daemon or _BOUNCE_SUBJECT.search(mail.subject):
            return None
        auto = mail.header("auto-submitted").lower()
        signals = (
            auto.startswith("auto-replied"),
            bool(mail.header("x-autoreply") or mail.header("x-autorespond")),
            mail.header("precedence").lower() == "auto_reply",
            bool(_SUBJECT.search(mail.subject)),
        )
        if not any(signals):
            return None
        address = first_address(mail.header("from"))
        hits = (Hit(address=address),) if address else ()
        return Finding(kind="auto_reply", detector=self.name, hits=hits)
