"""PURE: the wire bytes of an outgoing message, written from a precompiled skeleton.

:func:`compose` writes what ``to_bytes(build_message(rendered, draft))`` writes
(:mod:`mailer.outbound.compose`, the stdlib reference), without building a ``Message`` tree:

* the same MIME tree: text/plain, or multipart/alternative (text/plain + text/html), inside
  multipart/mixed with the attachments when there are any;
* the same header fields in the same order, folded by the same compat32 policy (``WIRE``):
  a short ASCII value is written as is (``WIRE``'s own fast path), anything else (non-ASCII as
  RFC 2047 encoded-words, long lines) goes through that policy's folding, so every header is
  byte for byte the reference's. Lines that never change (MIME-Version, the parts' Content-Type
  lines, From and Reply-To per sender) are encoded once and reused;
* the same boundaries, ``=_dunmail_<uid>_<depth>``: derived from the row, not random, so a
  retry is the same bytes (and its DKIM signature the same);
* the same transfer encodings: quoted-printable text in UTF-8 and base64 attachments, written
  by the C codecs (``binascii.b2a_qp``, ``b2a_base64``). Base64 is byte-identical to the
  reference. Quoted-printable decodes to the same text but may break soft lines at other
  points, and also encodes a lone "." at a line start (=2E) and trailing white space at the
  very end; line breaks (CR, LF or CRLF in the text) are CRLF on the wire in both.

Where the reference writes a broken message, this one does not (so bytes differ there only):

* a word too long for any line (a display name, subject word or file name over ~990 octets):
  the reference writes a line over RFC 5322's 998-octet limit; here a display name or subject
  becomes several RFC 2047 encoded-words and a file name RFC 2231 continuations;
* the line ends of ``str.splitlines()`` besides CR and LF (VT, FF, FS, GS, RS, NEL, U+2028/9)
  in a header value: the stdlib folder starts a new line at them without continuation white
  space, which ends the header block early (or raises ``HeaderParseError``); here each is a
  space;
* an extra header's name must be a field name (RFC 5322 s3.6.8), or HeaderInjectionError.

Every line ends in CRLF (RFC 5322 s2.1), no line is over 998 octets (body lines at most 76) and
the output is 7-bit. tests/test_compose_fast.py checks all of this against the reference.
"""

from __future__ import annotations

import re
from binascii import b2a_base64, b2a_qp
from collections.abc import Sequence
from email.header import Header
from email.utils import encode_rfc2231, format_datetime, formataddr, quote
from functools import lru_cache

from mailer.errors import HeaderInjectionError
from mailer.outbound.compose import (
    WIRE,
    Attachment,
    Draft,
    Rendered,
    message_id,
    safe_header,
)

_MAX = 78  # WIRE.max_line_length: RFC 5322 s2.1.1's recommended limit
_HARD = 998  # and its hard one
_VERSION = b"MIME-Version: 1.0\r\n"
_TEXT_HEAD = {
    subtype: f'Content-Type: text/{subtype}; charset="utf-8"\r\n'.encode()
    + _VERSION
    + b"Content-Transfer-Encoding: quoted-printable\r\n"
    for subtype in ("plain", "html")
}
_AUTO = b"Auto-Submitted: auto-generated\r\nX-Auto-Response-Suppress: OOF, AutoReply\r\n"
# Line ends to str.splitlines() besides CR and LF (which safe_header refuses): the stdlib's
# header folder splits a value at them and writes the rest as a line of its own, without the
# leading white space of a continuation, which ends the header block there (or raises
# HeaderParseError if the rest looks like "Name:"). Here they become spaces.
LINE_ENDS = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_FIELD_NAME = re.compile("[!-9;-~]+")  # RFC 5322 s3.6.8: printable ASCII except ":"
# A boundary of these characters folds like any other word of its length (the folder splits
# at white space, ";" and ","), so the folded Content-Type line can be cached by length.
_PLAIN_BOUNDARY = re.compile(r"[A-Za-z0-9_.=+-]*")


def _line(name: str, value: str | Header) -> bytes:
    """One header field as ``to_bytes`` writes it (``WIRE``'s fast path, else its folding)."""
    if (
        isinstance(value, str)
        and value.isascii()
        and len(name) + len(value) + 2 <= _MAX
        and "\r" not in value
        and "\n" not in value
        and "\0" not in value
    ):
        return f"{name}: {value}\r\n".encode("ascii")
    # compat32 takes a Header as well as a str (typeshed lists only str).
    return WIRE.fold_binary(name, value)  # type: ignore[arg-type]


def _field_name(name: str) -> str:
    if not _FIELD_NAME.fullmatch(safe_header(name, name="header name")):
        raise HeaderInjectionError(f"not a header field name: {name[:60]!r}")
    return name


def _too_long(folded: bytes) -> bool:
    """A line over RFC 5322 s2.1.1's hard limit of 998 octets: a word the folder cannot split."""
    return len(folded) > _HARD and any(len(line) > _HARD for line in folded.split(b"\r\n"))


def _unstructured(name: str, value: str) -> bytes:
    """ASCII as is, anything else RFC 2047-encoded, as ``compose._add_unstructured`` does."""
    value = LINE_ENDS.sub(" ", safe_header(value, name=name))
    folded = _line(name, value if value.isascii() else Header(value, "utf-8", header_name=name))
    if _too_long(folded):  # as encoded-words, which split anywhere (the reference leaves it)
        return _line(name, Header(value, "utf-8", header_name=name))
    return folded


@lru_cache(maxsize=4096)
def _mailbox(display_name: str, addr_spec: str) -> str:
    display_name = LINE_ENDS.sub(" ", display_name)
    return formataddr((display_name, addr_spec), charset="utf-8")


def _short_words(display_name: str, addr_spec: str) -> str:
    """The mailbox with its display name as encoded-words of at most 75 characters, which the
    folder can break between (``formataddr`` writes one word, however long)."""
    display_name = LINE_ENDS.sub(" ", display_name)
    return f"{Header(display_name, 'utf-8').encode(linesep='')} <{addr_spec}>"


def _addresses(name: str, addresses: Sequence[tuple[str, str]]) -> bytes:
    mailboxes = [_mailbox(*a) for a in addresses]
    folded = _line(name, ", ".join(mailboxes))
    if _too_long(folded):  # a display name longer than a line (the reference leaves it)
        fit = _HARD - len("Reply-To: ,")
        pairs = zip(mailboxes, addresses, strict=True)
        mailboxes = [m if len(m) <= fit else _short_words(*a) for m, a in pairs]
        return _line(name, ", ".join(mailboxes))
    return folded


@lru_cache(maxsize=1024)
def _sender_line(name: str, display_name: str, addr_spec: str) -> bytes:
    """From or Reply-To: the same for every email of a sender, so encoded once."""
    return _addresses(name, [(display_name, addr_spec)])


@lru_cache(maxsize=64)
def _multipart_template(subtype: str, length: int) -> bytes:
    """The folded Content-Type line of a multipart whose boundary has ``length`` characters,
    the boundary left as a run of NULs (which no header line contains) to fill in."""
    folded = WIRE.fold_binary("Content-Type", f'multipart/{subtype}; boundary="{"_" * length}"')
    head, _, tail = folded.rpartition(b'"' + b"_" * length + b'"')
    return head + b'"' + b"\0" * length + b'"' + tail + _VERSION


def _multipart_head(subtype: str, boundary: str) -> bytes:
    if _PLAIN_BOUNDARY.fullmatch(boundary):
        template = _multipart_template(subtype, len(boundary))
        return template.replace(b"\0" * len(boundary), boundary.encode("ascii"))
    value = f'multipart/{subtype}; boundary="{boundary}"'
    return WIRE.fold_binary("Content-Type", value) + _VERSION


def _multipart(boundary: str, parts: Sequence[bytes]) -> bytes:
    """The body of a multipart: the compat32 generator's framing, no preamble or epilogue."""
    dash = b"--" + boundary.encode("ascii")
    return dash + b"\r\n" + (b"\r\n" + dash + b"\r\n").join(parts) + b"\r\n" + dash + b"--\r\n"


def quoted_printable(text: str) -> bytes:
    """UTF-8 quoted-printable (RFC 2045 s6.7) with CRLF line breaks, by ``binascii``.

    CR, LF and CRLF in ``text`` are each one line break, as in the stdlib's encoder."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    encoded = b2a_qp(text.encode("utf-8"), istext=True)
    if b"=20\n" in encoded or b"=09\n" in encoded or encoded.endswith((b"=20", b"=09")):
        encoded = _within_76(encoded)
    return encoded.replace(b"\n", b"\r\n")


def _within_76(encoded: bytes) -> bytes:
    """``b2a_qp`` writes a line's encoded trailing blank past the 76 characters RFC 2045 s6.7
    allows (a 75-character line and "=20": 78); such a line gets one more soft break."""
    lines = encoded.split(b"\n")
    for n, line in enumerate(lines):
        if len(line) > 76:
            cut = 73 if line[71:73].find(b"=") == -1 else 71 + line[71:73].find(b"=")
            lines[n] = line[:cut] + b"=\n" + line[cut:]
    return b"\n".join(lines)


def base64_lines(data: bytes) -> bytes:
    """Base64 in lines of 76 characters, each ending in CRLF (``encodebytes``' layout)."""
    if not data:
        return b""
    encoded = b2a_base64(data, newline=False)
    lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    return b"\r\n".join(lines) + b"\r\n"


def _text_part(subtype: str, text: str) -> bytes:
    return _TEXT_HEAD[subtype] + b"\r\n" + quoted_printable(text)


def _attachment_part(attachment: Attachment) -> bytes:
    maintype, _, subtype = attachment.mime_type.partition("/")
    name = LINE_ENDS.sub(" ", safe_header(attachment.filename, name="attachment filename"))
    if not name:
        disposition = "attachment; filename"
    elif name.isascii():
        disposition = f'attachment; filename="{quote(name)}"'
    else:  # RFC 2231 parameter encoding for a non-ASCII file name
        disposition = f"attachment; filename*={encode_rfc2231(name, 'utf-8', '')}"
    folded = _line("Content-Disposition", disposition)
    if _too_long(folded):  # RFC 2231 s3 continuations (the reference writes one long word)
        encoded = encode_rfc2231(name, "utf-8", "")
        chunks = [encoded[i : i + 60] for i in range(0, len(encoded), 60)]
        # never split a %XX escape
        for i in range(len(chunks) - 1):
            cut = chunks[i].rfind("%", len(chunks[i]) - 2)
            if cut != -1:
                chunks[i], chunks[i + 1] = chunks[i][:cut], chunks[i][cut:] + chunks[i + 1]
        params = "; ".join(f"filename*{n}*={chunk}" for n, chunk in enumerate(chunks))
        folded = _line("Content-Disposition", f"attachment; {params}")
    return (
        _line("Content-Type", f"{maintype}/{subtype}")
        + _VERSION
        + b"Content-Transfer-Encoding: base64\r\n"
        + folded
        + b"\r\n"
        + base64_lines(attachment.content)
    )


def _body(rendered: Rendered, draft: Draft) -> tuple[bytes, bytes]:
    """The root's MIME header lines and everything after its header block's blank line."""
    uid = draft.uid
    if rendered.html is None:
        main_head = _TEXT_HEAD["plain"]
        main = quoted_printable(rendered.text)
    else:
        boundary = f"=_dunmail_{uid}_{1 if draft.attachments else 0}"
        parts = [_text_part("plain", rendered.text), _text_part("html", rendered.html)]
        main_head = _multipart_head("alternative", boundary)
        main = _multipart(boundary, parts)
    if not draft.attachments:
        return main_head, main
    attachments = [_attachment_part(a) for a in draft.attachments]
    boundary = f"=_dunmail_{uid}_0"
    mixed = _multipart(boundary, [main_head + b"\r\n" + main, *attachments])
    return _multipart_head("mixed", boundary), mixed


def compose(rendered: Rendered, draft: Draft) -> bytes:
    """The message's bytes, as they are DKIM-signed and sent: the same message as
    ``to_bytes(build_message(rendered, draft))``, refusing the same header injections."""
    subject = _unstructured("Subject", rendered.subject.strip())
    mid = message_id(draft.uid, draft.message_id_domain)
    uid = safe_header(draft.uid, name="uid")
    extra = [_unstructured(_field_name(name), value) for name, value in draft.extra_headers.items()]
    mime_head, body = _body(rendered, draft)
    sender = draft.envelope.from_addr
    reply_to = draft.envelope.reply_to
    return b"".join(
        [
            mime_head,
            _sender_line("From", sender.display_name, sender.addr_spec),
            _addresses("To", [(a.display_name, a.addr_spec) for a in draft.to]),
            _addresses("Cc", [(a.display_name, a.addr_spec) for a in draft.cc])
            if draft.cc
            else b"",
            b""
            if reply_to is None
            else _sender_line("Reply-To", reply_to.display_name, reply_to.addr_spec),
            subject,
            _line("Date", format_datetime(draft.date)),
            _line("Message-ID", mid),
            _AUTO,
            _line("X-Dunmail-Message", uid),
            *extra,
            b"\r\n",
            body,
        ]
    )
