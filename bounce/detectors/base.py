"""What every detector sees and returns: a read-only view of one returned message, and findings.

Detectors import only the standard library and each other (relatively), so the detection code
stays a self-contained, reusable library. Classification (reason, hard/soft) happens later, in
``bounce.classify``, over the plain fields a detector reports. The message is read into a
:class:`Mail` by ``mime.read_mail``; ``scan`` holds the searches detectors run over its text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message
from typing import Protocol

DAEMON_LOCALS = {
    "mailer-daemon",
    "postmaster",
    "mail-daemon",
    "mailerdaemon",
    "mdaemon",
    "mailer_daemon",
}

_DAEMON_LIKE = re.compile(r"post_?master|mailer[-_]?daemon")


@dataclass(frozen=True)
class Hit:
    """One recipient as a detector read it; every field but the address may be unknown."""

    address: str
    status: str | None = None
    reply_code: int | None = None
    action: str | None = None
    diagnostic: str = ""
    command: str | None = None  # the SMTP command the remote server was answering


@dataclass(frozen=True)
class Finding:
    """What a detector concluded: the kind of message and the recipients it concerns."""

    kind: str
    detector: str
    hits: tuple[Hit, ...] = ()
    original_message_id: str | None = None
    feedback_type: str | None = None


class Detector(Protocol):
    """One family of returned mail. ``detect`` returns None when the message is not its own.

    ``families`` names the mail systems (the corpus's ``mta`` labels) whose notices the detector
    was written against; an empty tuple marks a generic reader (a standard or the common
    shape). Leave-one-family-out measurement switches a family's own detectors off to see
    whether the generic ones still read its notices, as they must for a system nobody wrote for.
    """

    name: str
    families: tuple[str, ...]

    def detect(self, mail: Mail) -> Finding | None:
        """Read ``mail``; never raise for a message of another family."""
        ...


@dataclass
class Mail:
    """A returned message split into the parts detectors care about."""

    message: Message | None
    raw: str
    subject: str = ""
    sender: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""  # the notification text, with any attached original cut off
    original: str = ""  # the returned message or its headers, as text
    reports: list[tuple[str, str]] = field(default_factory=list)  # (content type, text)

    def header(self, name: str) -> str:
        """A top-level header's value ('' when absent)."""
        return self.headers.get(name.lower(), "")

    @property
    def from_daemon(self) -> bool:
        """Whether the message comes from a mail system rather than a person."""
        local = self.sender.partition("@")[0]
        display = self.header("from").lower()
        return (
            local in DAEMON_LOCALS
            or _DAEMON_LIKE.search(local) is not None
            or "mail delivery" in display
            or "mailer" in display
        )
