"""What every detector sees and returns: a read-only view of one returned message, and findings.

Detectors import only the standard library and each other (relatively), so the detection code
stays a self-contained, reusable library. Classification (reason, hard/soft) happens later, in
``bounce.classify``, over the plain fields a detector reports.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.policy import compat32
from functools import lru_cache
from typing import Any, Protocol

from .phrase import Phrase, comparable, lowered

# Good enough for the addresses MTAs print, including simple quoted local parts ("a..b"@c).
# An unquoted local part starts only where a run of its characters starts (the look-behind):
# without it, a long run with no "@" after it is rescanned from every position, quadratic in
# the line's length (a 250 KB line held one parse for minutes). The leftmost match is the same.
ADDRESS = re.compile(
    r"(?:\"[^\"\s<>@]+\"|(?<![A-Za-z0-9.!#$%&'*+/=?^_`{|}~-])[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+)@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]*[A-Za-z0-9]"
)
# RFC 3463 enhanced status codes; the subject and detail are at most three digits. The
# look-behind follows the class digit (see below): "(?<![\d.])([245])" means the same.
STATUS = re.compile(r"([245])(?<![\d.][245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
# Each look-behind follows the first digit rather than preceding it ("\b[245]" is written
# "[245](?<!\w[245])"): the same match, but a pattern opening on a character class lets the
# regex engine skip ahead instead of trying every position.
_ATTACHED = re.compile(
    r"[245](?<!\w[245])\d\d[ -]+['\"#(]?([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)"
)
# RFC 5321 s4.2 reply codes, as printed at the start of a reply or after "smtp;".
REPLY_CODE = re.compile(
    r"([245](?<![\w.#-][245])[0-7]\d)(?:[ -]|$)(?!\s*(?:bytes|kb|mb|days|hours))"
)


DAEMON_LOCALS = {
    "mailer-daemon",
    "postmaster",
    "mail-daemon",
    "mailerdaemon",
    "mdaemon",
    "mailer_daemon",
}

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
_DAEMON_LIKE = re.compile(r"post_?master|mailer[-_]?daemon")
_TAG = re.compile(r"<(?:script|style)\b.*?</(?:script|style)>|<[^>]+>", re.IGNORECASE | re.DOTALL)
_BREAK = re.compile(r"<\s*(?:br|/p|/div|/tr|/li|/h\d)\b[^>]*>", re.IGNORECASE)


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


@lru_cache(maxsize=8)
def parse_fields(text: str) -> tuple[dict[str, str], ...]:
    """RFC 3464 / RFC 5965 field blocks: groups of ``Name: value`` separated by blank lines.

    Cached, so read-only to callers: the DSN detector and then ``stated_actions`` read the same
    delivery-status part of one message.
    """
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    name = ""
    for line in text.split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
            current, name = {}, ""
        elif line[:1] in (" ", "\t") and name:
            current[name] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            name = key.strip().lower()
            if name == "final-recipient" and name in current:
                # Some MTAs (AOL) run the per-recipient blocks together without a blank line.
                blocks.append(current)
                current = {}
            if name and " " not in name:
                current.setdefault(name, value.strip())
            else:
                name = ""
    if current:
        blocks.append(current)
    return tuple(blocks)


def strip_type(value: str) -> str:
    """``rfc822; a@b`` -> ``a@b`` (RFC 3464 s2.3.2 address-type prefix)."""
    _, sep, rest = value.partition(";")
    return (rest if sep else value).strip()


def first_address(text: str) -> str | None:
    """The first e-mail address in ``text``, lower-cased."""
    found = ADDRESS.search(text) if "@" in text else None  # every address holds an "@"
    return found.group(0).lower().strip(".") if found else None


def find_status(text: str, *, failures_only: bool = False) -> str | None:
    """The enhanced status code in ``text``: the one written after a reply code, else the first.

    "550 5.7.1 ..." is the remote server's own answer, so it beats a code the reporting MTA
    added in front ("5.1.0 - Unknown address error 550-'5.7.1 ...").
    """
    attached = _ATTACHED.search(text)
    if attached and not (failures_only and attached.group(1) == "2"):
        return ".".join(attached.groups())
    for found in STATUS.finditer(text):
        if not (failures_only and found.group(1) == "2"):
            return ".".join(found.groups())
    return None


def find_reply_code(text: str) -> int | None:
    """The first SMTP reply code in ``text``."""
    found = REPLY_CODE.search(text)
    return int(found.group(1)) if found else None


def message_id(text: str) -> str | None:
    """The Message-ID header of the first message in ``text`` (an attached original)."""
    found = re.search(r"^message-id:[ \t]*\n?[ \t]*(<[^>\s]+>)", text, re.IGNORECASE | re.MULTILINE)
    return found.group(1) if found else None


@lru_cache(maxsize=8)
def text_about(text: str, address: str) -> str:
    """Every line of ``text`` naming ``address``, each with the lines after it up to a blank.

    Sendmail names the address once in its list and again in the session transcript; both say
    something about the failure. Cached: a notice repeating one recipient's block a thousand
    times asked the same question of the same text a thousand times.
    """
    lower = lowered(text)
    if address not in lower:
        return ""  # no line names it: lower-casing never makes or takes away a line break
    lines = text.split("\n")
    said: list[str] = []
    for index in _lines_naming(lower, address):
        out = [lines[index].strip()]
        for follow in lines[index + 1 : index + 8]:
            if not follow.strip() or ("@" in follow and ADDRESS.search(follow)):
                break
            out.append(follow.strip())
        paragraph = " ".join(" ".join(out).split())
        if paragraph not in said:
            said.append(paragraph)
    return " ".join(said)


def _lines_naming(lower: str, needle: str) -> list[int]:
    """The indexes of the lines of ``lower`` holding ``needle`` (which holds no line break)."""
    indexes: list[int] = []
    at = lower.find(needle)
    while at != -1:
        indexes.append(lower.count("\n", 0, at))
        end = lower.find("\n", at)
        if end == -1:
            break
        at = lower.find(needle, end)
    return indexes


# "\bword\b" is written "word\b(?<!\wword)", which means the same: a pattern opening on a
# literal lets the regex engine skip ahead to it instead of trying every position.
_COMMANDS = [
    ("DATA", Phrase(r"end of data|data\b(?<!\wdata)|after data|final data")),
    ("RCPT", Phrase(r"rcpt\b(?<!\wrcpt)|rcpt_to|does not like recipient")),
    ("MAIL", Phrase(r"mail from\b(?<!\wmail from)|mail_from\b(?<!\wmail_from)")),
    (
        "CONNECT",
        Phrase(
            r"initial connection|greeting\b(?<!\wgreeting)|banner\b(?<!\wbanner)"
            r"|helo\b(?<!\whelo)|ehlo\b(?<!\wehlo)"
        ),
    ),
]
_IN_REPLY = Phrase(
    r"(?:in reply to|after|did not like our|>>>)\s*(?:the\s*)?(end of data|data|rcpt|mail from|"
    r"initial connection|helo|ehlo)",
    needles=("data", "rcpt", "mail from", "initial connection", "helo", "ehlo"),
)
# Every match of every pattern above holds one of these: a text naming none names no command.
_ALL_NEEDLES = {n for p in (_IN_REPLY, *(p for _, p in _COMMANDS)) for n in p.needles}
_COMMAND_NEEDLES = tuple(
    sorted(n for n in _ALL_NEEDLES if not any(o != n and o in n for o in _ALL_NEEDLES))
)


@lru_cache(maxsize=8)
def find_command(text: str) -> str | None:
    """The SMTP command (RFC 5321 s4.1) a failure answered: RCPT, DATA, MAIL or CONNECT.

    Cached: detectors ask it of the whole notice once per recipient, the costliest search here.
    """
    lower = comparable(text)
    if lower is not None:
        for needle in _COMMAND_NEEDLES:
            if needle in lower:
                break
        else:
            return None  # one pass over the needles instead of five searches' gates
    said = _IN_REPLY.search(text)
    if said:
        text = said.group(1)
    for command, pattern in _COMMANDS:
        if pattern.found(text):
            return command
    return None
