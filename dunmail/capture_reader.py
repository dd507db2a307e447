"""Reads the capture server's Maildir for the dev viewer (``dunmail/web/capture_views.py``).

The capture server (``dunmail/capture.py``) files every message it accepts; this module is the
one place that opens those files again: a page of summaries (newest first, filtered by recipient
or subject), one message taken apart (headers, text, HTML, attachments) and a part's or the raw
message's bytes for a download. Nothing here renders HTML: the viewer shows the message's HTML
only in a sandboxed frame, and every value it returns is plain text for an autoescaped page.

Keys are Maildir's own unique names. A key from a URL is checked against a strict pattern and
then looked up in the Maildir's table of contents, so a path never reaches ``open``.
"""

from __future__ import annotations

import base64
import mailbox
import re
import unicodedata
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from pathlib import Path
from urllib.parse import unquote

PER_PAGE = 25
MAX_QUERY = 200  # characters of a search; more is refused by the route as invalid
HEADER_BYTES = 65536  # a summary reads at most this much of a file: headers come first
# What Maildir.add names a file: "<seconds>.M<microseconds>P<pid>Q<counter>.<host>".
_KEY = re.compile(r"[A-Za-z0-9._\-\\,=]{1,255}")
_ORDER = re.compile(r"(\d+)\.M(\d+)P\d+Q(\d+)")
_MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+\-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+\-]{0,126}")
_UNSAFE_NAME = re.compile(r"[^\w.\- ()+,]")  # \w is Unicode: accented names stay readable
SUMMARY_HEADERS = ("To", "X-Original-To", "Cc", "Subject")  # what a search looks in
_CID = re.compile(r"cid:([^\s\"'()<>]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Summary:
    """One row of the list."""

    key: str
    date: str
    sender: str
    to: str
    subject: str


@dataclass(frozen=True)
class Page:
    """A page of the list; ``page`` is 1-based and ``pages`` at least 1."""

    rows: list[Summary]
    page: int
    pages: int
    total: int
    query: str


@dataclass(frozen=True)
class Part:
    """An attachment (or any part that is not the message's text or HTML body)."""

    index: int  # its position in the message's walk, the id of its download
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class Captured:
    """One message, taken apart for the viewer."""

    key: str
    subject: str
    headers: list[tuple[str, str]]
    text: str | None
    has_html: bool
    attachments: list[Part]


@dataclass(frozen=True)
class Download:
    """Bytes to send with their declared type and a safe file name."""

    filename: str
    content_type: str
    data: bytes


def _order(key: str) -> tuple[int, int, int, str]:
    """Arrival order from the key Maildir gave the file; foreign names sort first."""
    found = _ORDER.match(key)
    if found is None:
        return (0, 0, 0, key)
    return (int(found[1]), int(found[2]), int(found[3]), key)


def _text(value: object) -> str:
    """A header as one line of text (RFC 2047 decoded by the policy), controls removed."""
    text = str(value or "")
    return "".join(" " if unicodedata.category(c).startswith("C") else c for c in text).strip()


def safe_filename(name: str | None, fallback: str) -> str:
    """A file name that is only a name: no directory, no control character, no quote, at most
    100 characters; ``fallback`` when nothing usable is left."""
    base = re.split(r"[\\/]", _text(name))[-1]
    cleaned = _UNSAFE_NAME.sub("_", base).strip(" .")[:100]
    return cleaned or fallback


def _content_type(part: EmailMessage) -> str:
    declared = part.get_content_type()
    return declared if _MIME_TYPE.fullmatch(declared) else "application/octet-stream"


class CaptureBox:
    """The Maildir at ``path``, read only. A missing Maildir reads as empty."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def _box(self) -> mailbox.Maildir | None:
        if not (self._path / "new").is_dir():
            return None
        return mailbox.Maildir(self._path, factory=None, create=False)

    def _read(self, key: str, limit: int = -1) -> bytes | None:
        box = self._box()
        if box is None or not _KEY.fullmatch(key):
            return None
        try:
            with box.get_file(key) as handle:
                return bytes(handle.read(limit))
        except (KeyError, FileNotFoundError):  # unknown, or removed since the listing
            return None

    def _summary(self, key: str) -> Summary | None:
        head = self._read(key, HEADER_BYTES)
        if head is None:
            return None
        headers = BytesHeaderParser(policy=policy.default).parsebytes(head)
        return Summary(
            key=key,
            date=_text(headers["Date"]),
            sender=_text(headers["From"]),
            to=_text(headers["To"] or headers["X-Original-To"]),
            subject=_text(headers["Subject"]),
        )

    def _matches(self, key: str, needle: str) -> bool:
        head = self._read(key, HEADER_BYTES)
        if head is None:
            return False
        headers = BytesHeaderParser(policy=policy.default).parsebytes(head)
        return any(needle in _text(headers[name]).casefold() for name in SUMMARY_HEADERS)

    def page(self, *, query: str = "", page: int = 1, per_page: int = PER_PAGE) -> Page:
        """The newest messages first, ``per_page`` at a time; with ``query``, only those whose
        recipients (To, Cc, the envelope's) or subject contain it, case-insensitively."""
        box = self._box()
        keys = sorted(box.keys(), key=_order, reverse=True) if box is not None else []
        needle = query.strip().casefold()
        if needle:
            keys = [key for key in keys if self._matches(key, needle)]
        pages = max(1, -(-len(keys) // per_page))
        page = min(max(1, page), pages)
        chosen = keys[(page - 1) * per_page : page * per_page]
        rows = [row for key in chosen if (row := self._summary(key)) is not None]
        return Page(rows=rows, page=page, pages=pages, total=len(keys), query=query.strip())

    def _message(self, key: str) -> EmailMessage | None:
        raw = self._read(key)
        if raw is None:
            return None
        return BytesParser(policy=policy.default).parsebytes(raw)

    def message(self, key: str) -> Captured | None:
        """The message ``key`` taken apart, or None when there is no such message."""
        msg = self._message(key)
        if msg is None:
            return None
        text_part = msg.get_body(preferencelist=("plain",))
        html_part = msg.get_body(preferencelist=("html",))
        bodies = {id(p) for p in (text_part, html_part) if p is not None}
        attachments = [
            Part(
                index=index,
                filename=safe_filename(part.get_filename(), f"part-{index}"),
                content_type=_content_type(part),
                size=len(_payload(part)),
            )
            for index, part in enumerate(msg.walk())
            if not part.is_multipart() and id(part) not in bodies
        ]
        return Captured(
            key=key,
            subject=_text(msg["Subject"]),
            headers=[(name, _text(value)) for name, value in msg.items()],
            text=_body_text(text_part),
            has_html=html_part is not None,
            attachments=attachments,
        )

    def html(self, key: str) -> str | None:
        """The HTML body as the sender wrote it, for the sandboxed frame only, or None.

        Its ``cid:`` images (a logo in multipart/related) become ``data:`` URIs, the one kind
        of image the frame's policy lets load, so the message looks as a mail client shows it.
        """
        msg = self._message(key)
        part = msg.get_body(preferencelist=("html",)) if msg is not None else None
        body = _body_text(part)
        if msg is None or body is None:
            return None
        images = {
            str(p["Content-ID"]).strip().strip("<>"): p
            for p in msg.walk()
            if p["Content-ID"] and p.get_content_maintype() == "image"
        }

        def inline(found: re.Match[str]) -> str:
            image = images.get(unquote(found[1]))
            if image is None:
                return found[0]
            data = base64.b64encode(_payload(image)).decode("ascii")
            return f"data:{_content_type(image)};base64,{data}"

        return _CID.sub(inline, body) if images else body

    def attachment(self, key: str, index: int) -> Download | None:
        """The decoded bytes of part ``index`` (a position in the message's walk), or None."""
        msg = self._message(key)
        if msg is None:
            return None
        parts = list(msg.walk())
        if not 0 <= index < len(parts) or parts[index].is_multipart():
            return None
        part = parts[index]
        return Download(
            filename=safe_filename(part.get_filename(), f"part-{index}"),
            content_type=_content_type(part),
            data=_payload(part),
        )

    def raw(self, key: str) -> Download | None:
        """The message's bytes exactly as they were filed (with the capture's two headers)."""
        data = self._read(key)
        if data is None:
            return None
        return Download(
            filename=f"{safe_filename(key, 'message')}.eml",
            content_type="message/rfc822",
            data=data,
        )


def _body_text(part: object) -> str | None:
    """A text part's content decoded by its charset; an undecodable one replaced, not lost."""
    if not isinstance(part, EmailMessage):
        return None
    try:
        return str(part.get_content())
    except (LookupError, UnicodeError):  # an unknown charset
        return _payload(part).decode("utf-8", "replace")


def _payload(part: EmailMessage) -> bytes:
    """A leaf part's bytes, its transfer encoding undone."""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def viewer_box(*, env: str, enabled: bool, maildir: Path) -> CaptureBox | None:
    """The Maildir the viewer reads, or None where there is no viewer: it exists only in
    ``env = "dev"`` with the capture server on, beside the start page that links to it."""
    return CaptureBox(maildir) if env == "dev" and enabled else None
