"""PURE: build the outgoing MIME message from rendered parts; every header from data is checked.

Messages are built with the stdlib ``email`` package under ``policy.SMTP`` so they serialise with
exact CRLF line endings (RFC 5322 s2.1) and the bytes that are DKIM-signed are the bytes sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from mailer.errors import HeaderInjectionError

_FORBIDDEN = ("\r", "\n", "\0")


@dataclass(frozen=True)
class Rendered:
    """The three rendered parts of an email."""

    subject: str
    text: str
    html: str | None = None


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    mime_type: str = "application/pdf"


@dataclass(frozen=True)
class Envelope:
    """Who the message says it is from, and where replies and bounces go."""

    from_addr: Address
    reply_to: Address | None
    mail_from: str  # the RFC 5321 envelope sender: the VERP bounce address


@dataclass(frozen=True)
class Draft:
    """Everything about one email except its rendering, all of it already validated."""

    uid: str
    message_id_domain: str
    date: datetime
    to: Sequence[Address]
    envelope: Envelope
    attachments: Sequence[Attachment] = ()
    extra_headers: Mapping[str, str] = field(default_factory=dict)


def safe_header(value: str, *, name: str) -> str:
    """Return ``value`` if it can go into header ``name``; refuse CR, LF and NUL.

    A CR/LF in data would end the header and let the data add its own headers or body
    (header injection, as Django's ``forbid_multi_line_headers`` guards against).
    """
    if any(ch in value for ch in _FORBIDDEN):
        raise HeaderInjectionError(f"{name} contains a line break or NUL: {value[:60]!r}")
    return value


def message_id(uid: str, domain: str) -> str:
    """The Message-ID of an outbox row: stable across retries because it derives from the row."""
    return f"<{safe_header(uid, name='uid')}@{safe_header(domain, name='domain')}>"


def build_message(rendered: Rendered, draft: Draft) -> EmailMessage:
    """Assemble the message: text part, optional HTML alternative, then attachments."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = draft.envelope.from_addr
    msg["To"] = list(draft.to)
    if draft.envelope.reply_to is not None:
        msg["Reply-To"] = draft.envelope.reply_to
    msg["Subject"] = safe_header(rendered.subject.strip(), name="Subject")
    msg["Date"] = format_datetime(draft.date)
    msg["Message-ID"] = message_id(draft.uid, draft.message_id_domain)
    # RFC 3834 s5: machine-generated mail, so vacation responders stay quiet.
    msg["Auto-Submitted"] = "auto-generated"
    # Exchange and Outlook ignore Auto-Submitted but honour this for out-of-office replies.
    msg["X-Auto-Response-Suppress"] = "OOF, AutoReply"
    # Bounces of large mail often return headers only, so the row is named here too.
    msg["X-Dunmail-Message"] = draft.uid
    for name, value in draft.extra_headers.items():
        msg[safe_header(name, name="header name")] = safe_header(value, name=name)
    msg.set_content(rendered.text, subtype="plain", cte="quoted-printable")
    if rendered.html is not None:
        msg.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    for attachment in draft.attachments:
        maintype, _, subtype = attachment.mime_type.partition("/")
        msg.add_attachment(
            attachment.content,
            maintype=maintype,
            subtype=subtype,
            filename=safe_header(attachment.filename, name="attachment filename"),
        )
    # Boundaries derive from the uid, not from random(): a retry re-renders to the same bytes.
    # "=_" cannot occur in quoted-printable or base64 bodies (RFC 2045 s6.7, s6.8).
    for depth, part in enumerate(p for p in msg.walk() if p.is_multipart()):
        part.set_boundary(f"=_dunmail_{draft.uid}_{depth}")
    return msg


def to_bytes(msg: EmailMessage) -> bytes:
    """Serialise with CRLF line endings, exactly as it will be signed and sent."""
    return msg.as_bytes(policy=policy.SMTP)
