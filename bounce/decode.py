"""PURE: ``parse(raw) -> Report``, running the detector registry over one message."""

from __future__ import annotations

import logging
import re

from bounce.addresses import normalize_address
from bounce.classify import classify_hard, classify_reason
from bounce.detectors.base import Finding, Mail, read_mail
from bounce.detectors.phrase import Phrase
from bounce.registry import DETECTORS
from bounce.report import Kind, Recipient, Report

log = logging.getLogger(__name__)

# Matched on lower-cased text (see Phrase): the values are sliced from the text by position.
_MESSAGE_ID = Phrase(
    r"^[> \t]*message-id:[ \t]*\n?[ \t]*(<[^>\s]+>)", re.M, needles=("message-id:",)
)
_DUNMAIL_ID = Phrase(
    r"^x-dunmail-message:[ \t]*(\S+)", re.MULTILINE, needles=("x-dunmail-message:",)
)
# mailer/verp.py: bounces+<uid>-<mac>@<domain>; verifying the MAC is the threading step's job.
# The local part starts only where a run of its characters starts (the look-behind): otherwise a
# long run with no "+" is rescanned from every position, quadratic (a 100 KB To: took 2 min).
_VERP = re.compile(
    r"(?<![a-z0-9.-])[a-z0-9.-]+\+[0-9a-f]{8,32}-[a-z2-7]{16}@[a-z0-9.-]+", re.IGNORECASE
)


def parse(raw: bytes) -> Report:
    """Decode one inbound message. Never raises: an unreadable message is ``not_bounce``."""
    try:
        mail = read_mail(raw)
    except Exception:  # read_mail already degrades; this guards the guarantee itself
        log.exception("bounce: unreadable message")
        return Report(kind=Kind.NOT_BOUNCE)
    for detector in DETECTORS:
        try:
            finding = detector.detect(mail)
            if finding is not None:
                return _report(mail, finding)
        except Exception:  # a detector bug must not lose the message: try the next one
            log.exception("bounce: detector %s failed", detector.name)
    return Report(
        kind=Kind.NOT_BOUNCE,
        dunmail_id=_dunmail_id(mail),
        verp=_verp(mail),
    )


def _report(mail: Mail, finding: Finding) -> Report:
    recipients: list[Recipient] = []
    for hit in finding.hits:
        address = normalize_address(hit.address)
        if address is None:
            continue
        if finding.kind == "complaint":
            reason = "feedback"
        elif finding.kind == "auto_reply":
            reason = "vacation"
        else:
            reason = classify_reason(
                hit.status,
                hit.diagnostic,
                action=hit.action,
                command=hit.command,
                domain=address.rpartition("@")[2],
            )
        recipients.append(
            Recipient(
                address=address,
                status=hit.status,
                reply_code=hit.reply_code,
                reason=reason,
                hard=finding.kind == "bounce" and classify_hard(reason, hit.status),
                action=hit.action,
                diagnostic=hit.diagnostic,
                command=hit.command,
            )
        )
    return Report(
        kind=Kind(finding.kind),
        recipients=recipients,
        original_message_id=finding.original_message_id or _original_message_id(mail),
        dunmail_id=_dunmail_id(mail),
        verp=_verp(mail),
        detector=finding.detector,
        feedback_type=finding.feedback_type,
    )


def _original_message_id(mail: Mail) -> str | None:
    """The returned message's Message-ID, or None.

    The first one in the attached copy; failing that, the last one below the notice's own
    headers, since a text bounce quotes the returned message after its prose.
    """
    found = _MESSAGE_ID.search(mail.original)
    if found:
        return mail.original[found.start(1) : found.end(1)]
    for text in (mail.body, mail.raw.partition("\n\n")[2]):
        ids = _MESSAGE_ID.matches(text)
        if ids:
            return text[ids[-1].start(1) : ids[-1].end(1)]
    return None


def _dunmail_id(mail: Mail) -> str | None:
    for text in (mail.original, mail.body):
        found = _DUNMAIL_ID.search(text)
        if found:
            return text[found.start(1) : found.end(1)]
    return None


def _verp(mail: Mail) -> str | None:
    for name in ("to", "delivered-to", "x-original-to", "envelope-to"):
        value = mail.header(name)
        found = _VERP.search(value) if "+" in value else None
        if found:
            return found.group(0).lower()
    return None
