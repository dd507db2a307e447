"""PURE: ``parse(raw) -> Report``, running the detector registry over one message."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import replace

from bounce.addresses import normalize_address
from bounce.classify import classify_hard, classify_reason
from bounce.detectors.base import Detector, Finding, Hit, Mail
from bounce.detectors.dsn import DELIVERED, stated_actions
from bounce.detectors.mime import read_mail
from bounce.detectors.phrase import Phrase
from bounce.registry import DETECTORS
from bounce.report import Kind, Recipient, Report

log = logging.getLogger(__name__)

# Matched on lower-cased text (see Phrase): the values are sliced from the text by position.
_MESSAGE_ID = Phrase(
    r"^[> \t]*message-id:[ \t]*\n?[ \t]*(<[^>\s]+>)",
    re.M,
    needles=("message-id:",),
    line_start=True,
)
_REPORT_TYPE = Phrase(r"report-type=\"?delivery-status", needles=("report-type",))
_ATTACHED_TYPE = re.compile(
    r"^content-type:[ \t]*(?:message/rfc822|text/rfc822-headers|message/rfc822-headers)",
    re.IGNORECASE | re.MULTILINE,
)
_DUNMAIL_ID = Phrase(
    r"^x-dunmail-message:[ \t]*(\S+)",
    re.MULTILINE,
    needles=("x-dunmail-message:",),
    line_start=True,
)
# mailer/outbound/verp.py: bounces+<uid>-<mac>@<domain>; verifying the MAC is the threading step's
# job.
# The local part starts only where a run of its characters starts (the look-behind): otherwise a
# long run with no "+" is rescanned from every position, quadratic (a 100 KB To: took 2 min).
_VERP = re.compile(
    r"(?<![a-z0-9.-])[a-z0-9.-]+\+[0-9a-f]{8,32}-[a-z2-7]{16}@[a-z0-9.-]+", re.IGNORECASE
)


def parse(raw: bytes, *, detectors: Sequence[Detector] = DETECTORS) -> Report:
    """Decode one inbound message. Never raises: an unreadable message is ``not_bounce``.

    ``detectors`` defaults to the registry; the leave-one-family-out measurement passes the
    registry without a family's own detectors.
    """
    try:
        mail = read_mail(raw)
    except Exception:  # read_mail already degrades; this guards the guarantee itself
        log.exception("bounce: unreadable message")
        return Report(kind=Kind.NOT_BOUNCE)
    for detector in detectors:
        try:
            finding = detector.detect(mail)
            if finding is not None:
                return _report(mail, _without_delivered(mail, finding))
        except Exception:  # a detector bug must not lose the message: try the next one
            log.exception("bounce: detector %s failed", detector.name)
    return Report(
        kind=Kind.NOT_BOUNCE,
        dunmail_id=_dunmail_id(mail),
        verp=_verp(mail),
    )


def _without_delivered(mail: Mail, finding: Finding) -> Finding:
    """A failure finding less the recipients the notice says were delivered, relayed or expanded.

    RFC 3464 s2.3.3: those actions are not failures, whatever the Status, Diagnostic-Code,
    prose or subject beside them say, and whichever detector read the notice. A notice whose
    stated actions are all such is a delivery report, even when no block names an address a
    detector could use.
    """
    if finding.kind not in ("bounce", "delayed"):
        return finding
    stated = stated_actions(mail)
    if stated and all(action in DELIVERED for _, action in stated):
        return replace(finding, kind="delivered", hits=_delivered_hits(finding, stated))
    delivered = {address for address, action in stated if action in DELIVERED}
    hits = tuple(
        h for h in finding.hits if h.action not in DELIVERED and h.address.lower() not in delivered
    )
    if len(hits) == len(finding.hits):
        return finding
    if hits:
        return replace(finding, hits=hits)
    return replace(finding, kind="delivered", hits=_delivered_hits(finding, stated))


def _delivered_hits(finding: Finding, stated: list[tuple[str | None, str]]) -> tuple[Hit, ...]:
    """The recipients of a delivery report, each with the action its block stated."""
    actions = {address: action for address, action in stated if address}
    if actions:
        return tuple(Hit(address=a, action=action) for a, action in actions.items())
    return tuple(replace(h, action="delivered") for h in finding.hits)


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
                reply_code=hit.reply_code,
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
    original = _innermost(mail.original)
    found = _MESSAGE_ID.search(original)
    if found:
        return original[found.start(1) : found.end(1)]
    for text in (mail.body, mail.raw.partition("\n\n")[2]):
        ids = _MESSAGE_ID.matches(text)
        if ids:
            return text[ids[-1].start(1) : ids[-1].end(1)]
    return None


def _innermost(original: str) -> str:
    """The message a returned bounce was about, when the returned message is itself a bounce.

    A notice about a notice (a DSN sent back to a daemon that forwarded it) attaches a report
    whose own attachment is the mail that failed: its Message-ID is the one to thread on.
    """
    for _ in range(3):  # a bounce of a bounce of a bounce at most; deeper is not worth reading
        head = original.partition("\n\n")[0]
        if not _REPORT_TYPE.found(head):
            return original
        inner = _ATTACHED_TYPE.search(original, len(head))
        if inner is None:
            return original
        original = original[inner.end() :]
    return original


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
