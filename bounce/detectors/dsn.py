"""RFC 3464 delivery status notifications (``message/delivery-status``), wherever they appear.

Many MTAs send a DSN part; some put the same fields in a text part or mangle the MIME, so the
fields are also looked for in the notification text when no delivery-status part exists.
"""

from __future__ import annotations

import re

from .base import (
    Finding,
    Hit,
    Mail,
    find_command,
    find_reply_code,
    find_status,
    first_address,
    parse_fields,
    strip_type,
    text_about,
)
from .phrase import Phrase

_FIELDS_IN_TEXT = Phrase(r"^(?:final|original)-recipient:", re.MULTILINE, needles=("-recipient:",))
_FAILED = {"failed", "failure", "fail"}
_DELAYED = {"delayed", "delay"}
_DELIVERED = {"delivered", "relayed", "expanded"}


class DSNDetector:
    """RFC 3464: one per-recipient field block per recipient."""

    name = "dsn"

    def detect(self, mail: Mail) -> Finding | None:
        """Read the per-recipient blocks of every delivery-status part."""
        texts = [text for ctype, text in mail.reports if "delivery-status" in ctype]
        if not texts:
            text = mail.body + "\n" + mail.original
            start = _FIELDS_IN_TEXT.search(text)
            if start is None:
                return None
            texts = [text[start.start() :]]
        by_address: dict[str, Hit] = {}
        for text in texts:
            for block in parse_fields(text):
                hit = _hit(block, mail.body)
                if hit is None:
                    continue
                seen = by_address.get(hit.address)
                # One block per recipient; if a recipient has several (a broken or hostile
                # notice), the first that says how it ended counts.
                if seen is None or (seen.status is None and hit.status is not None):
                    by_address[hit.address] = hit
        hits = list(by_address.values())
        if not hits:
            return None
        actions = {h.action for h in hits}
        if actions & _FAILED:
            # Recipients still being retried stay in the report with their own action.
            kind = "bounce"
            hits = [h for h in hits if h.action not in _DELIVERED]
        elif actions & _DELAYED:
            kind = "delayed"
            hits = [h for h in hits if h.action in _DELAYED]
        elif actions <= _DELIVERED:
            kind = "delivered"
        else:
            kind = "bounce"
        return Finding(kind=kind, detector=self.name, hits=tuple(hits))


def _hit(block: dict[str, str], notice: str) -> Hit | None:
    raw = block.get("final-recipient") or block.get("original-recipient") or ""
    address = first_address(strip_type(raw)) if raw else None
    if address is None:
        return None
    action = block.get("action", "").strip().lower().split(" ")[0] or None
    diagnostic = strip_type(block.get("diagnostic-code", ""))
    status = _better_status(find_status(block.get("status", "")), find_status(diagnostic), action)
    about = text_about(notice, address)
    if about and (not diagnostic or not find_status(diagnostic)):
        # Some MTAs (OpenSMTPD, Exchange) keep the remote reply only in the human-readable part.
        if not diagnostic or find_status(about) or find_reply_code(about):
            diagnostic = f"{diagnostic} {about}".strip()
        if status is None or status.endswith(".0.0"):
            status = _better_status(status, find_status(about), action)
    command = find_command(diagnostic) or find_command(about) or find_command(notice)
    if action is None and status:
        action = "failed" if status[0] == "5" else "delayed"
    return Hit(
        address=address,
        status=status,
        reply_code=find_reply_code(diagnostic),
        action=action,
        diagnostic=" ".join(diagnostic.split()),
        command=command,
    )


def _better_status(status: str | None, specific: str | None, action: str | None) -> str | None:
    """The remote server's own code beats the reporting MTA's summary in ``Status:``.

    A generic "5.0.0" (RFC 3463 s3.1: "other or undefined") gives way to "550 5.1.1", and so
    does Sendmail's own "4.4.7" to the "450 4.7.1" it was given; a generic code never replaces
    a specific one, and a success code never replaces a failure.
    """
    if specific is None or specific[0] == "2":
        return status
    if status is None:
        return specific
    if specific.endswith(".0.0") and not status.endswith(".0.0"):
        return status
    if status[0] == specific[0] or action == "failed":
        return specific
    return status
