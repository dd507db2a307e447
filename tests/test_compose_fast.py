"""The skeleton composer (mailer/outbound/mime.py) against the stdlib reference (compose.py).

Both outputs are parsed back with ``email.policy.default``: the same MIME tree, the same header
fields in the same order with the same decoded values, the same decoded parts. The header
blocks are compared byte for byte too (parsed with compat32, which keeps them raw), and so are
the base64 attachments: only quoted-printable bodies may break their soft lines elsewhere.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.address import make_address
from mailer.errors import HeaderInjectionError
from mailer.outbound.compose import (
    Attachment,
    Draft,
    Envelope,
    Rendered,
    build_message,
    to_bytes,
)
from mailer.outbound.mime import LINE_ENDS, base64_lines, compose, quoted_printable

WHEN = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _draft(**overrides: Any) -> Draft:
    values: dict[str, Any] = {
        "uid": "0123456789abcdef0123",
        "message_id_domain": "acme.example",
        "date": WHEN,
        "to": [make_address("ap@globex.example", "Globex AP")],
        "envelope": Envelope(
            from_addr=make_address("noreply-invoice@relay.example", "Acme Supplies"),
            reply_to=make_address("ar@acme.example", "Acme Supplies"),
            mail_from="bounces+x@relay.example",
        ),
    }
    values.update(overrides)
    return Draft(**values)


def _reference(rendered: Rendered, draft: Draft) -> bytes:
    return to_bytes(build_message(rendered, draft))


def _tree(msg: Message) -> list[tuple[str, list[str]]]:
    return [(p.get_content_type(), list(p.keys())) for p in msg.walk()]


_ADDRESSES = ("From", "To", "Reply-To")


def _rfc2047(raw: str) -> str:
    """An address header's value by RFC 2047 s6.2, adjacent encoded-words joined with no space
    (``policy.default``'s address parser puts one between them, unlike mail readers)."""
    return str(make_header(decode_header(raw.replace("\r\n", ""))))


def _contents(msg: EmailMessage, raw: list[list[tuple[str, str]]] | None = None) -> list[Any]:
    """Each leaf part's decoded content, and each header's decoded value.

    With ``raw`` (the raw header fields, :func:`_raw_headers`): address headers as RFC 2047 reads
    them (the skeleton splits a display name too long for a line into several encoded-words)."""
    found: list[Any] = []
    for n, part in enumerate(msg.walk()):
        assert isinstance(part, EmailMessage)
        for i, (name, value) in enumerate(part.items()):
            if raw is not None and name in _ADDRESSES:
                addresses = [a.addr_spec for a in value.addresses]
                found.append((name, addresses, _rfc2047(raw[n][i][1])))
            elif raw is not None:  # the reference folds before a word it cannot split
                found.append((name, str(value).strip()))
            else:
                found.append((name, str(value)))
        if not part.is_multipart():
            found.append(part.get_filename())
            found.append(part.get_content())
    return found


def _raw_headers(data: bytes) -> list[list[tuple[str, str]]]:
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    return [list(part.raw_items()) for part in msg.walk()]


def _attachment_bodies(data: bytes) -> list[bytes]:
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    return [
        str(p.get_payload()).encode("ascii")
        for p in msg.walk()
        if p.get_content_maintype() == "application"
    ]


def assert_same_message(fast: bytes, reference: bytes) -> None:
    # Every line ends in CRLF, none is over RFC 5322's 998 octets, and it is all 7-bit.
    assert b"\r" not in fast.replace(b"\r\n", b"") and b"\n" not in fast.replace(b"\r\n", b"")
    assert max(len(line) for line in fast.split(b"\r\n")) <= 998
    assert fast.isascii()
    new = email.message_from_bytes(fast, policy=email.policy.default)
    old = email.message_from_bytes(reference, policy=email.policy.default)
    assert isinstance(new, EmailMessage) and isinstance(old, EmailMessage)
    assert not new.defects and not any(p.defects for p in new.walk())
    assert _tree(new) == _tree(old)
    assert _attachment_bodies(fast) == _attachment_bodies(reference)
    if max(len(line) for line in reference.split(b"\r\n")) <= 998:
        assert _contents(new) == _contents(old)
        assert _raw_headers(fast) == _raw_headers(reference)
    else:  # a word too long for a line, which the reference leaves as it is
        new_raw, old_raw = _raw_headers(fast), _raw_headers(reference)
        assert _contents(new, new_raw) == _contents(old, old_raw)


_SURROGATES: list[Any] = ["Cs"]  # not text: UTF-8 cannot encode them
# Text that tries everything: line breaks of every kind, trailing white space, lone dots, "=",
# "From " at a line start, NUL and other controls, non-ASCII from several scripts, long words.
_BODY_CHARS = st.sampled_from(
    [" ", "\t", ".", "=", "\n", "\r", "\r\n", "\0", "\x0b", "\x85", "\u2028", "From ", "a", "Z"]
    + ["é", "€", "ş", "日本", "🚀", "שלום", "\xa0", "-", "x" * 90, "é" * 40, "<p>", "&amp;"]
)
_BODIES = st.lists(_BODY_CHARS, max_size=60).map("".join) | st.text(
    st.characters(exclude_categories=_SURROGATES), max_size=300
)
_HEADER_TEXT = st.text(st.characters(exclude_categories=_SURROGATES), max_size=120) | st.lists(
    st.sampled_from(["Invoice", "INV-1042", " ", "é", "Ştefan", "€", "日本", ",", '"', "x" * 80]),
    max_size=40,
).map("".join)
_NAMES = st.text(
    st.characters(exclude_categories=_SURROGATES, exclude_characters="\r\n\0"), max_size=80
) | st.sampled_from(["", "Globex AP", 'Smith, "Jo" <x@evil.test>', "Ioana Țurcanu", "é" * 400])
_FILENAMES = st.sampled_from(["INV-1042.pdf", "Factură FA-7.pdf", 'a "b".pdf', "", "é" * 300])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=_HEADER_TEXT,
    text=_BODIES,
    html=st.none() | _BODIES,
    to_names=st.lists(_NAMES, min_size=0, max_size=3),
    from_name=_NAMES,
    reply_to=st.none() | _NAMES,
    pdf=st.none() | st.tuples(_FILENAMES, st.binary(max_size=400)),
    extra=st.dictionaries(st.sampled_from(["List-Unsubscribe", "X-Tag"]), _HEADER_TEXT),
    offset=st.integers(-12, 14),
    uid=st.text("0123456789abcdef", min_size=1, max_size=70),
)
def test_same_message_as_the_stdlib(
    subject: str,
    text: str,
    html: str | None,
    to_names: list[str],
    from_name: str,
    reply_to: str | None,
    pdf: tuple[str, bytes] | None,
    extra: dict[str, str],
    offset: int,
    uid: str,
) -> None:
    def message(clean: Callable[[str], str]) -> tuple[Rendered, Draft]:
        rendered = Rendered(subject=clean(subject), text=text, html=html)
        return rendered, _draft(
            uid=uid,
            date=WHEN.astimezone(timezone(timedelta(hours=offset))),
            to=[make_address(f"r{n}@globex.example", clean(x)) for n, x in enumerate(to_names)],
            envelope=Envelope(
                from_addr=make_address("noreply@relay.example", clean(from_name)),
                reply_to=None if reply_to is None else make_address("a@b.example", clean(reply_to)),
                mail_from="bounces+x@relay.example",
            ),
            attachments=[] if pdf is None else [Attachment(clean(pdf[0]), pdf[1])],
            extra_headers={name: clean(value) for name, value in extra.items()},
        )

    try:
        # The skeleton writes the line ends of str.splitlines() in header values as spaces:
        # the stdlib folder breaks the header block at them.
        reference = _reference(*message(lambda value: LINE_ENDS.sub(" ", value)))
    except HeaderInjectionError:  # CR, LF or NUL in the subject or an extra header
        with pytest.raises(HeaderInjectionError):
            compose(*message(lambda value: value))
        return
    fast = compose(*message(lambda value: value))
    assert_same_message(fast, reference)
    assert compose(*message(lambda value: value)) == fast  # a retry is the same bytes


@pytest.mark.parametrize("brk", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028"])
def test_other_line_ends_in_header_values_cannot_break_the_header_block(brk: str) -> None:
    """The stdlib writes "To: \\r\\nBcc: ..." (or raises HeaderParseError) for these."""
    long = "Invoice INV-1042 from Acme Supplies, to be paid this week "
    rendered = Rendered(subject=long + brk + "Bcc: victim@evil.test", text="t")
    draft = _draft(
        to=[make_address("ap@globex.example", long + brk + "Cc: other@evil.test")],
        extra_headers={"X-Tag": long + brk + "0 <a@b.test>"},
        attachments=[Attachment(long + brk + "Cc: x.pdf", b"%PDF")],
    )
    data = compose(rendered, draft)
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert not any(part.defects for part in msg.walk())
    assert msg["Bcc"] is None and msg["Cc"] is None
    assert msg["Subject"] == long + " Bcc: victim@evil.test"
    assert msg["To"].addresses[0].display_name == long + " Cc: other@evil.test"
    [attachment] = msg.iter_attachments()
    assert attachment.get_filename() == long + " Cc: x.pdf"


@pytest.mark.parametrize("name", ["X-A: b", "X A", "", "X-Ä", "X\x1cY"])
def test_extra_header_names_are_field_names(name: str) -> None:
    with pytest.raises(HeaderInjectionError):
        compose(Rendered(subject="s", text="t"), _draft(extra_headers={name: "v"}))


def test_byte_identical_to_the_stdlib_for_ordinary_mail() -> None:
    rendered = Rendered(
        subject="Factură FA-7 de la Ştefan – 100 €",
        text="Bună ziua,\n\nInvoice INV-1042 is overdue.\n",
        html="<p>Bună ziua,</p>\n<p>Invoice INV-1042 is overdue.</p>",
    )
    pdf = Attachment("INV-1042.pdf", bytes(range(256)) * 40)
    for draft in (
        _draft(),
        _draft(attachments=[pdf]),
        _draft(envelope=replace(_draft().envelope, reply_to=None)),
    ):
        for each in (rendered, replace(rendered, html=None)):
            assert compose(each, draft) == _reference(each, draft)


@pytest.mark.parametrize(
    "subject",
    ["Hi\r\nBcc: victim@x.test", "Hi\nBcc: v@x.test", "Hi\rX", "a\0b"],
)
def test_header_injection_refused(subject: str) -> None:
    with pytest.raises(HeaderInjectionError):
        compose(Rendered(subject=subject, text="t"), _draft())
    with pytest.raises(HeaderInjectionError):
        compose(Rendered(subject="s", text="t"), _draft(extra_headers={"X-Tag": subject}))
    with pytest.raises(HeaderInjectionError):
        compose(Rendered(subject="s", text="t"), _draft(extra_headers={subject: "v"}))
    with pytest.raises(HeaderInjectionError):
        pdf = Attachment(subject + ".pdf", b"%PDF")
        compose(Rendered(subject="s", text="t"), _draft(attachments=[pdf]))
    with pytest.raises(HeaderInjectionError):
        compose(Rendered(subject="s", text="t"), _draft(uid=subject))


def test_overlong_words_are_split_where_the_stdlib_leaves_them() -> None:
    """A display name, subject word or file name longer than a line: the reference writes one
    word of over 998 octets; the skeleton splits it (RFC 2047 words, RFC 2231 continuations)."""
    rendered = Rendered(subject="x" * 1200, text="t\n")
    draft = _draft(
        to=[make_address("ap@globex.example", "Ştefan " * 200 + "é" * 500)],
        attachments=[Attachment("Factură " * 150 + ".pdf", b"%PDF")],
    )
    reference = _reference(rendered, draft)
    assert max(len(line) for line in reference.split(b"\r\n")) > 998
    assert_same_message(compose(rendered, draft), reference)


@pytest.mark.parametrize(
    "text",
    ["", "a", ".", "a \n", "a\t", ".\n.\r\n.\r", "=" * 200, "é" * 100, "x" * 300 + " \n"],
)
def test_quoted_printable_decodes_to_the_text(text: str) -> None:
    encoded = quoted_printable(text)
    assert max((len(line) for line in encoded.split(b"\r\n")), default=0) <= 76
    from binascii import a2b_qp

    expected = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    assert a2b_qp(encoded).decode("utf-8") == expected


@pytest.mark.parametrize("size", [0, 1, 56, 57, 58, 114, 30 * 1024])
def test_base64_has_the_stdlib_layout(size: int) -> None:
    from base64 import encodebytes

    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    assert base64_lines(data) == encodebytes(data).replace(b"\n", b"\r\n")


@pytest.mark.parametrize("uid", ["u1", "a;b c,d", "x" * 90])
def test_boundaries_and_their_header_lines_are_the_references(uid: str) -> None:
    rendered = Rendered(subject="s", text="t\n", html="<p>t</p>")
    draft = _draft(uid=uid, attachments=[Attachment("a.pdf", b"%PDF")])
    assert compose(rendered, draft) == _reference(rendered, draft)


def test_a_non_ascii_uid_makes_no_boundary() -> None:
    """uids are ``secrets.token_hex``; a boundary is ASCII (RFC 2046 s5.1.1)."""
    with pytest.raises(UnicodeEncodeError):
        compose(Rendered(subject="s", text="t", html="h"), _draft(uid="é-uid"))
