"""RFC 5965 abuse reports (ARF): a complaint about a message, never a bounce."""

from __future__ import annotations

import re

from .base import Finding, Hit, Mail
from .phrase import Phrase
from .scan import first_address, message_id, parse_fields

_FEEDBACK_SUBJECT = re.compile(r"\b(?:abuse report|complaint|feedback report|spam report)\b", re.I)
# Asked of every message that reaches this detector: gated on its literal, not tried at every
# position of the body as a case-insensitive search would be.
_FEEDBACK_FIELD = Phrase(r"^feedback-type:", re.MULTILINE, line_start=True)


class ARFDetector:
    """``multipart/report; report-type=feedback-report`` and its loose text variants."""

    name = "arf"
    families: tuple[str, ...] = ()  # RFC 5965: any mail system

    def detect(self, mail: Mail) -> Finding | None:
        """Find the feedback-report part (or its fields in the text) and the recipient."""
        texts = [text for ctype, text in mail.reports if ctype == "message/feedback-report"]
        ctype = mail.header("content-type").lower()
        if not texts and "feedback-report" not in ctype:
            if not _FEEDBACK_FIELD.found(mail.body):
                return None
            texts = [mail.body]
        fields: dict[str, str] = {}
        for text in texts:
            for block in parse_fields(text):
                for key, value in block.items():
                    fields.setdefault(key, value)
        address = None
        for key in ("original-rcpt-to", "removal-recipient"):
            if fields.get(key):
                address = first_address(fields[key])
                break
        if address is None:
            address = first_address(_original_header(mail.original, "to"))
        hits = (Hit(address=address),) if address else ()
        return Finding(
            kind="complaint",
            detector=self.name,
            hits=hits,
            original_message_id=message_id(mail.original),
            feedback_type=(fields.get("feedback-type") or "abuse").lower(),
        )


def _original_header(text: str, name: str) -> str:
    found = re.search(rf"^{name}:[ \t]*(.*)$", text, re.IGNORECASE | re.MULTILINE)
    return found.group(1) if found else ""
