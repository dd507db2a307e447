"""Message composition: exact CRLF, stable ids, RFC 3834 headers, and no header injection."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy

import pytest

from mailer.address import make_address
from mailer.errors import AddressError, HeaderInjectionError
from mailer.outbound.compose import (
    Attachment,
    Draft,
    Envelope,
    Rendered,
    build_message,
    safe_header,
    to_bytes,
)

WHEN = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _draft(**overrides: object) -> Draft:
    values: dict[str, object] = {
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
    return Draft(**values)  # type: ignore[arg-type]


RENDERED = Rendered(subject="Invoice INV-1 from Acme", text="Hello\nworld\n", html="<p>Hello</p>")


def test_serialises_with_crlf_only() -> None:
    data = to_bytes(build_message(RENDERED, _draft()))
    assert b"\r\n" in data
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_headers_and_parts() -> None:
    msg = email.message_from_bytes(
        to_bytes(build_message(RENDERED, _draft())), policy=policy.default
    )
    assert msg["Message-ID"] == "<0123456789abcdef0123@acme.example>"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Dunmail-Message"] == "0123456789abcdef0123"
    assert msg["From"] == "Acme Supplies <noreply-invoice@relay.example>"
    assert msg["Reply-To"] == "Acme Supplies <ar@acme.example>"
    assert msg["Date"] == "Mon, 02 Mar 2026 09:00:00 +0000"
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert text.replace("\r\n", "\n") == "Hello\nworld\n"
    assert html.replace("\r\n", "\n") == "<p>Hello</p>"


def test_message_is_stable_for_the_same_row() -> None:
    assert to_bytes(build_message(RENDERED, _draft())) == to_bytes(
        build_message(RENDERED, _draft())
    )


def test_attachment_is_carried() -> None:
    pdf = Attachment("INV-1.pdf", b"%PDF-1.7 fake")
    msg = email.message_from_bytes(
        to_bytes(build_message(RENDERED, _draft(attachments=[pdf]))), policy=policy.default
    )
    parts = list(msg.iter_attachments())  # type: ignore[attr-defined]
    assert [p.get_filename() for p in parts] == ["INV-1.pdf"]
    assert parts[0].get_content() == b"%PDF-1.7 fake"


@pytest.mark.parametrize("evil", ["Hi\r\nBcc: victim@x.test", "Hi\nBcc: v@x.test", "Hi\rX", "a\0b"])
def test_subject_injection_refused(evil: str) -> None:
    with pytest.raises(HeaderInjectionError):
        build_message(Rendered(subject=evil, text="t"), _draft())


@pytest.mark.parametrize("evil", ["Evil\r\nBcc: x@y.test", "Evil\nX-Hdr: 1"])
def test_display_name_injection_refused(evil: str) -> None:
    with pytest.raises(HeaderInjectionError):
        make_address("ap@globex.example", evil)


@pytest.mark.parametrize(
    "bad",
    [
        "no-at-sign",
        "a@",
        "@b.test",
        "a b@c.test",
        "a@b.test, c@d.test",
        "x@y.test\r\nBcc: z@w.test",
    ],
)
def test_bad_addresses_refused(bad: str) -> None:
    with pytest.raises((AddressError, HeaderInjectionError)):
        make_address(bad)


def test_display_name_with_specials_is_quoted_not_broken() -> None:
    to = [make_address("ap@globex.example", 'Smith, "Jo" <x@evil.test>')]
    msg = email.message_from_bytes(
        to_bytes(build_message(RENDERED, _draft(to=to))), policy=policy.default
    )
    assert msg["To"].addresses[0].addr_spec == "ap@globex.example"  # type: ignore[attr-defined]
    assert len(msg["To"].addresses) == 1  # type: ignore[attr-defined]


def test_safe_header_passes_ordinary_text() -> None:
    assert safe_header("Invoice INV-1 – 100 €", name="Subject") == "Invoice INV-1 – 100 €"


def test_non_ascii_subject_names_and_filenames_round_trip() -> None:
    rendered = Rendered(subject="Factură FA-7 de la Ştefan – 100 €", text="Bună ziua ✓\n")
    draft = _draft(
        to=[make_address("contabil@firma.example", "Ioana Țurcanu")],
        attachments=[Attachment("Factură FA-7.pdf", b"%PDF-1.7")],
    )
    data = to_bytes(build_message(rendered, draft))
    assert data.isascii()  # 7-bit on the wire: RFC 2047 headers, QP/base64 bodies
    msg = email.message_from_bytes(data, policy=policy.default)
    assert msg["Subject"] == "Factură FA-7 de la Ştefan – 100 €"
    assert msg["To"].addresses[0].display_name == "Ioana Țurcanu"  # type: ignore[attr-defined]
    [part] = list(msg.iter_attachments())  # type: ignore[attr-defined]
    assert part.get_filename() == "Factură FA-7.pdf"
    body = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert body.replace("\r\n", "\n") == "Bună ziua ✓\n"


def test_long_subject_is_folded_within_the_line_limit() -> None:
    subject = "Reminder: " + " ".join(f"INV-{n}" for n in range(60))
    data = to_bytes(build_message(Rendered(subject=subject, text="t"), _draft()))
    assert max(len(line) for line in data.split(b"\r\n")) <= 998  # RFC 5322 s2.1.1
    msg = email.message_from_bytes(data, policy=policy.default)
    assert msg["Subject"] == subject
