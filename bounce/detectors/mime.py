"""Reading a returned message into a :class:`Mail`: MIME walked, parts sorted, original cut off.

Malformed or hostile MIME degrades to plain text instead of raising, and the stdlib parser's
costly corners (over-long or thousand-deep boundaries) are bounded before it sees them.
"""

from __future__ import annotations

import html
import re
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.policy import compat32
from typing import Any

from .base import Mail
from .phrase import Phrase
from .scan import ADDRESS

_ORIGINAL_MARKERS = Phrase(
    r"^[\s>|*=_-]*(?:"
    r"this is a copy of the message"
    r"|below this line is a copy of the message"
    r"|original message (?:follows|headers?)"
    r"|-+ ?original message ?-+"
    r"|the original message (?:headers|follows|is attached)"
    r"|(?:returned|unsent|undelivered) message"
    r"|message header(?:s)? follows?"
    r"|(?:the )?headers? of the original message"
    r"|(?:included is )?a copy of the (?:original )?message header"
    r"|original message header"
    r")",
    re.MULTILINE,
    needles=("message",),  # every one of these headings names the message
)
_TAG = re.compile(r"<(?:script|style)\b.*?</(?:script|style)>|<[^>]+>", re.IGNORECASE | re.DOTALL)
_BREAK = re.compile(r"<\s*(?:br|/p|/div|/tr|/li|/h\d)\b[^>]*>", re.IGNORECASE)


def _decode(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # a broken transfer encoding: keep what is there
        payload = None
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("latin-1")


def html_to_text(text: str) -> str:
    """Just enough HTML-to-text for bounce notices: line breaks kept, tags dropped."""
    return html.unescape(_TAG.sub("", _BREAK.sub("\n", text)))


def _attached_text(part: Message) -> str:
    payload = part.get_payload()
    if isinstance(payload, list):
        return "\n\n".join(_as_text(sub) for sub in payload if isinstance(sub, Message))
    return _decode(part)


def _as_text(message: Message) -> str:
    """An attached message as text: its headers as received, then its body.

    Written out by hand rather than by ``as_string()``: the generator re-folds every header
    (a third of a parse's time) and detectors only search this text, they never send it.
    """
    fetch = message.policy.header_fetch_parse  # what items() applies; plain ASCII it keeps as is
    head = "\n".join(
        f"{k}: {v if isinstance(v, str) and v.isascii() else fetch(k, v)}"
        for k, v in message.raw_items()
    )
    payload = message.get_payload()
    if isinstance(payload, list):
        body = "\n\n".join(_as_text(sub) for sub in payload if isinstance(sub, Message))
    else:
        body = payload if isinstance(payload, str) else ""
    return f"{head}\n\n{body}"


def split_original(text: str) -> tuple[str, str]:
    """Cut a text bounce at its "original message follows" line: (notification, original)."""
    match = _ORIGINAL_MARKERS.search(text)
    if match is None:
        return text, ""
    return text[: match.start()], text[match.start() :]


def _header_block(text: str) -> tuple[dict[str, str], str]:
    head, _, body = text.partition("\n\n")
    headers: dict[str, str] = {}
    name = ""
    for line in head.split("\n"):
        if line[:1] in (" ", "\t") and name:
            headers[name] += " " + line.strip()
        elif ":" in line:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            headers.setdefault(name, value.strip())
    return headers, body


# RFC 2046 s5.1.1 allows 70 characters; some MTAs go a little over. The stdlib parser compiles
# each boundary into a regex, so a megabyte-long one (hostile or corrupt) cost seconds.
_MAX_BOUNDARY = 200


class _BoundedMessage(Message):
    """A compat32 message whose over-long boundary counts as none: the part reads as text."""

    def get_boundary(self, failobj: Any = None) -> Any:
        boundary = super().get_boundary(failobj)
        if isinstance(boundary, str) and len(boundary) > _MAX_BOUNDARY:
            return failobj
        return boundary


# The stdlib parser checks every line against every open boundary, so parts nested a thousand
# deep cost depth x lines. Real notices nest a handful; past this many boundary parameters the
# rest are renamed (``x-nested-boundary=``), and those parts read as text.
_MAX_BOUNDARIES = 50
_BOUNDARY_PARAM = re.compile(rb"boundary[ \t]*=", re.IGNORECASE)


def _few_boundaries(data: bytes) -> bytes:
    if data.count(b"oundary") + data.count(b"OUNDARY") <= _MAX_BOUNDARIES:
        return data  # a substring count in C; the regex below scans case-insensitively
    first = zip(range(_MAX_BOUNDARIES + 1), _BOUNDARY_PARAM.finditer(data), strict=False)
    if sum(1 for _ in first) <= _MAX_BOUNDARIES:
        return data
    count = 0

    def rename(match: re.Match[bytes]) -> bytes:
        nonlocal count
        count += 1
        return match.group(0) if count <= _MAX_BOUNDARIES else b"x-nested-" + match.group(0)

    return _BOUNDARY_PARAM.sub(rename, data)


def read_mail(raw: bytes) -> Mail:
    """Parse ``raw`` into a Mail; malformed MIME degrades to the raw text instead of raising."""
    data = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if data.startswith(b"From "):  # an mbox envelope line, not a header
        data = data.partition(b"\n")[2]
    text = data.decode("utf-8", errors="replace")
    mail = Mail(message=None, raw=text)
    try:
        message = message_from_bytes(_few_boundaries(data), _BoundedMessage, policy=compat32)
        mail.message = message
        for key, value in message.raw_items():
            name = key.lower()
            if name in mail.headers:
                continue
            if isinstance(value, str) and value.isascii() and "=?" not in value:
                # Plain ASCII with no RFC 2047 encoded-word (they open with "=?"): compat32's
                # header_fetch_parse and make_header(decode_header()) both give it back as is.
                mail.headers[name] = value
            else:
                mail.headers[name] = _header_text(message.policy.header_fetch_parse(key, value))
        _walk(message, mail)
    except Exception:  # the stdlib parser gave up: read headers and body as plain text
        mail.headers, mail.body = _header_block(text)
        mail.reports = []
    if not mail.headers:
        mail.headers, _ = _header_block(text)
    if not mail.body.strip() and not mail.reports:
        mail.body = _header_block(text)[1]
    if not mail.original:
        mail.body, mail.original = split_original(mail.body)
    mail.subject = mail.header("subject")
    found = ADDRESS.findall(mail.header("from"))
    mail.sender = found[-1].lower() if found else mail.header("from").lower()
    return mail


def _header_text(value: object) -> str:
    text = str(value)
    try:
        return str(make_header(decode_header(text)))
    except Exception:  # undecodable encoded-words: keep them as they are
        return text


# A delivery-status part sent under a type no reader looks at (seen: application/octet-stream,
# application/delivery-status): its fields still say what happened. Other attachments are
# never decoded here, so a PDF costs nothing.
_MISLABELLED = {
    "application/octet-stream",
    "application/delivery-status",
    "application/x-delivery-status",
    "application/global-delivery-status",
}
_DSN_FIELDS = re.compile(
    r"\s*(?:reporting-mta|original-envelope-id|arrival-date|received-from-mta|dsn-gateway"
    r"|final-recipient|original-recipient)[ \t]*:",
    re.IGNORECASE,
)


def _walk(message: Message, mail: Mail) -> None:
    plain: list[str] = []
    markup: list[str] = []
    stack: list[Message] = [message]
    while stack:
        part = stack.pop(0)
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            mail.original += _attached_text(part) + "\n"
        elif ctype in (
            "message/delivery-status",
            "message/global-delivery-status",
            "message/feedback-report",
        ):
            mail.reports.append((ctype, _attached_text(part)))
        elif part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                stack[:0] = [p for p in payload if isinstance(p, Message)]
            if part.preamble and not payload:
                plain.append(part.preamble)
        elif ctype == "text/html":
            markup.append(html_to_text(_decode(part)))
        elif ctype.partition("/")[0] in ("text", "message") or part is message:
            plain.append(_decode(part))
        elif ctype in _MISLABELLED:
            text = _decode(part)
            if _DSN_FIELDS.match(text):
                mail.reports.append(("message/delivery-status", text))
    mail.body = "\n".join(plain) if any(p.strip() for p in plain) else "\n".join(markup)
