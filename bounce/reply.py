"""PURE: a person's mail as the inbox shows it: its sender, its subject and its text.

Everything here comes from a stranger: headers are decoded and flattened to one line, an HTML
body is reduced to text (no script from mail may run in the inbox), and malformed MIME shows as
nothing rather than failing the page.
"""

from __future__ import annotations

import email.errors
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser

from inscriptis import get_text

from bounce.report import Kind

# Inbound kinds that are a person's (or their autoresponder's) answer rather than a report
# about delivery: shown as one "reply" entry each.
REPLY_KINDS = (Kind.AUTO_REPLY.value, Kind.NOT_BOUNCE.value)
REPLY_TEXT_CHARS = 4000


def reply_text(raw: bytes) -> str:
    """What the person wrote, as plain text: the text part, else the HTML part's text (an
    HTML body is never shown as HTML: no script from mail may run in the inbox)."""
    try:
        parsed = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(parsed, EmailMessage)
        part = parsed.get_body(preferencelist=("plain", "html"))
        if part is None:
            return ""
        content = part.get_content()
    except Exception:  # malformed MIME from a stranger: show nothing rather than fail
        return ""
    if not isinstance(content, str):
        return ""
    if part.get_content_subtype() == "html":
        content = str(get_text(content))
    return content.strip()[:REPLY_TEXT_CHARS]


def from_and_subject(raw: bytes) -> tuple[str, str]:
    headers = BytesHeaderParser().parsebytes(raw)
    return _header(headers.get("From")), _header(headers.get("Subject"))


def _header(value: object) -> str:
    if value is None:
        return ""
    try:
        text = str(make_header(decode_header(str(value))))
    except (email.errors.HeaderParseError, UnicodeError, LookupError, ValueError):
        text = str(value)
    return " ".join(text.split())[:300]
