"""RFC 3464 delivery status notifications (``message/delivery-status``), wherever they appear.

Many MTAs send a DSN part; some put the same fields in a text part or mangle the MIME, so the
fields are also looked for in the notification text when no delivery-status part exists.
"""

from __future__ import annotations

import re

from .base import Finding, Hit, Mail
from .phrase import Phrase, lowered
from .scan import (
    find_command,
    find_reply_code,
    find_status,
    first_address,
    parse_fields,
    strip_type,
    text_about,
)

# Also indented or quoted ("> Final-Recipient: ..."), as a forwarded or pasted report is.
_FIELDS_IN_TEXT = Phrase(
    r"^([ \t>]*)(?:final|original)-recipient:",
    re.MULTILINE,
    needles=("-recipient:",),
    line_start=True,
)
_FAILED = {"failed", "failure", "fail"}
_DELAYED = {"delayed", "delay"}
# RFC 3464 s2.3.3: the message reached the recipient, a non-DSN system, or a list's members.
# None of these is a failure, whatever Status, Diagnostic-Code or prose sit beside it.
DELIVERED = frozenset({"delivered", "relayed", "expanded"})
_WORD = re.compile(r"[a-z]+")


class DSNDetector:
    """RFC 3464: one per-recipient field block per recipient."""

    name = "dsn"
    families: tuple[str, ...] = ()  # RFC 3464: any mail system

    def detect(self, mail: Mail) -> Finding | None:
        """Read the per-recipient blocks of every delivery-status part."""
        by_address: dict[str, Hit] = {}
        texts = _field_texts(mail)
        if texts and not any(_named(text) for text in texts):
            texts = _fields_in_text(mail)  # a report part naming nobody: the text may
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
            hits = [h for h in hits if h.action not in DELIVERED]
        elif actions & _DELAYED:
            kind = "delayed"
            hits = [h for h in hits if h.action in _DELAYED]
        elif actions <= DELIVERED:
            kind = "delivered"
        else:
            kind = "bounce"
            hits = [h for h in hits if h.action not in DELIVERED]
        return Finding(kind=kind, detector=self.name, hits=tuple(hits))


def _field_texts(mail: Mail) -> list[str]:
    """The delivery-status parts; failing those, the notice text from its first recipient field.

    Many MTAs send the fields in a text part or mangle the MIME; the fields are RFC 3464's
    wherever they are written.
    """
    texts = [text for ctype, text in mail.reports if "delivery-status" in ctype]
    return texts or _fields_in_text(mail)


def _fields_in_text(mail: Mail) -> list[str]:
    """The notice text from its first recipient field, with that field's indent taken off."""
    text = mail.body + "\n" + mail.original
    start = _FIELDS_IN_TEXT.search(text)
    if start is None:
        return []
    text = text[start.start() :]
    indent = start.group(1)
    if indent:
        cut = len(indent)
        text = "\n".join(line[cut:] if line.startswith(indent) else "" for line in text.split("\n"))
    return [text]


def _named(text: str) -> bool:
    return "-recipient" in lowered(text)


def action_of(value: str) -> str | None:
    """The RFC 3464 Action keyword: ``" Delivered (to mailbox);"`` -> ``"delivered"``."""
    found = _WORD.search(value.lower())
    return found.group(0) if found else None


def stated_actions(mail: Mail) -> list[tuple[str | None, str]]:
    """``(recipient or None, action)`` for every per-recipient block that states an Action.

    Read apart from any detector's finding, so that what the DSN fields say about a recipient
    (delivered, relayed, expanded) holds against a prose reading of the same notice.
    """
    stated: list[tuple[str | None, str]] = []
    if not mail.reports and not any("action" in lowered(t) for t in (mail.body, mail.original)):
        return stated  # no report part and no Action field anywhere: nothing is stated
    for text in _field_texts(mail):
        for block in parse_fields(text):
            action = action_of(block.get("action", ""))
            if action is None:
                continue
            raw = block.get("final-recipient") or block.get("original-recipient") or ""
            stated.append((first_address(strip_type(raw)) if raw else None, action))
    return stated


def _hit(block: dict[str, str], notice: str) -> Hit | None:
    raw = block.get("final-recipient") or block.get("original-recipient") or ""
    address = first_address(strip_type(raw)) if raw else None
    if address is None:
        return None
    action = action_of(block.get("action", ""))
    diagnostic = strip_type(block.get("diagnostic-code", ""))
    stated = find_status(diagnostic)
    status = _better_status(find_status(block.get("status", "")), stated, action)
    about = text_about(notice, address)
    if about and (not diagnostic or not stated):
        # Some MTAs (OpenSMTPD, Exchange) keep the remote reply only in the human-readable part.
        if not diagnostic or find_status(about) or find_reply_code(about):
            diagnostic = f"{diagnostic} {about}".strip()
        if status is None or status.endswith(".0.0"):
            status = _better_status(status, find_status(about), action)
    command = find_command(diagnostic) or find_command(about) or find_command(notice)
    if action is None and status:
        # No Action field: the Status class says how it ended (RFC 3463 s3.1: 2 is success).
        action = {"5": "failed", "4": "delayed", "2": "delivered"}.get(status[0])
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
