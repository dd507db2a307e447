"""The dev capture viewer: the Maildir reader (dunmail/capture_reader.py) and its routes.

Messages reach the Maildir the way the capture server files them (``MaildirHandler``'s prefix
of Return-Path and X-Original-To); the routes are served by a real uvicorn (conftest's
``web_server``) on SQLite only, since they never touch the database.
"""

from __future__ import annotations

import mailbox
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dunmail.capture_reader import CaptureBox, safe_filename, viewer_box

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
HOSTILE_SUBJECT = "Invoice <script>alert(1)</script>"
HOSTILE_HTML = "<p>Dear customer</p><script>parent.document.title='pwned'</script>"


def invoice_mail(
    *,
    to: str = "ap@globex.example",
    subject: str = "Invoice INV-1042",
    html: str = "<p>Please find <b>INV-1042</b> attached.</p>",
    filename: str = "INV-1042.pdf",
) -> bytes:
    """multipart/mixed: multipart/alternative (text, HTML) and a PDF attachment."""
    msg = EmailMessage()
    msg["From"] = "Acme Supplies <ar@acme.example>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Fri, 04 Dec 2026 10:00:00 +0000"
    msg["Message-ID"] = "<1@acme.example>"
    msg.set_content("Please find INV-1042 attached.\nAmount due: 120.00 EUR\n")
    msg.add_alternative(html, subtype="html")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename=filename)
    return msg.as_bytes()


def file_into(maildir: Path, raw: bytes, rcpt: str = "ap@globex.example") -> str:
    """Files ``raw`` as ``dunmail.capture.MaildirHandler`` does; returns its key."""
    maildir.parent.mkdir(parents=True, exist_ok=True)
    box = mailbox.Maildir(maildir, create=True)
    prefix = f"Return-Path: <bounces@relay.example>\r\nX-Original-To: {rcpt}\r\n".encode()
    return box.add(prefix + raw)


def test_alternative_with_a_pdf_is_taken_apart(tmp_path: Path) -> None:
    key = file_into(tmp_path / "md", invoice_mail(filename='../../etc/pass"wd.pdf'))
    found = CaptureBox(tmp_path / "md").message(key)
    assert found is not None
    assert found.subject == "Invoice INV-1042"
    assert found.text == "Please find INV-1042 attached.\nAmount due: 120.00 EUR\n"
    assert found.has_html
    assert ("X-Original-To", "ap@globex.example") in found.headers
    [pdf] = found.attachments
    assert (pdf.filename, pdf.content_type, pdf.size) == (
        "pass_wd.pdf",
        "application/pdf",
        len(PDF),
    )
    download = CaptureBox(tmp_path / "md").attachment(key, pdf.index)
    assert download is not None and download.data == PDF
    assert download.content_type == "application/pdf"
    assert "INV-1042" in (CaptureBox(tmp_path / "md").html(key) or "")
    raw = CaptureBox(tmp_path / "md").raw(key)
    assert raw is not None and raw.data.startswith(b"Return-Path: <bounces@relay.example>")
    # A body part or a container is no attachment; past the end is nothing.
    assert CaptureBox(tmp_path / "md").attachment(key, 0) is None  # multipart/mixed itself
    assert CaptureBox(tmp_path / "md").attachment(key, 99) is None


def test_an_inline_logo_shows_as_a_data_uri(tmp_path: Path) -> None:
    """multipart/related: the HTML's cid: image becomes the one URL the frame may load."""
    msg = EmailMessage()
    msg["Subject"] = "logo"
    msg.set_content("text")
    msg.add_alternative('<img src="cid:logo@acme" alt="Acme"><img src="cid:gone@acme">', "html")
    html_part = msg.get_body(preferencelist=("html",))
    assert isinstance(html_part, EmailMessage)
    html_part.add_related(b"\x89PNG\r\n", maintype="image", subtype="png", cid="<logo@acme>")
    key = file_into(tmp_path / "md", msg.as_bytes())
    shown = CaptureBox(tmp_path / "md").html(key)
    assert shown is not None
    assert '<img src="data:image/png;base64,iVBORw0K" alt="Acme">' in shown
    assert '<img src="cid:gone@acme">' in shown  # no such part: left as it was


def test_non_ascii_headers_are_decoded_and_searchable(tmp_path: Path) -> None:
    file_into(tmp_path / "md", invoice_mail(to="Ștefan Îonescu <ap@globex.example>"))
    file_into(tmp_path / "md", invoice_mail(subject="Facture n° 42 — échéance dépassée"))
    box = CaptureBox(tmp_path / "md")
    listed = box.page()
    assert [row.subject for row in listed.rows] == [
        "Facture n° 42 — échéance dépassée",
        "Invoice INV-1042",
    ]
    assert listed.rows[1].to == "Ștefan Îonescu <ap@globex.example>"
    assert [r.subject for r in box.page(query="ÉCHÉANCE").rows] == [listed.rows[0].subject]
    assert [r.to for r in box.page(query="ștefan").rows] == [listed.rows[1].to]
    assert box.page(query="nobody").rows == []


def test_newest_first_a_page_at_a_time(tmp_path: Path) -> None:
    for n in range(7):
        file_into(tmp_path / "md", invoice_mail(subject=f"mail {n}", to=f"c{n % 2}@x.example"))
    box = CaptureBox(tmp_path / "md")
    first, last = box.page(per_page=3), box.page(page=3, per_page=3)
    assert [r.subject for r in first.rows] == ["mail 6", "mail 5", "mail 4"]
    assert (first.pages, first.total) == (3, 7)
    assert [r.subject for r in last.rows] == ["mail 0"]
    assert box.page(page=50, per_page=3).page == 3  # past the end: the last page
    assert [r.subject for r in box.page(query="c1@", per_page=10).rows] == [
        "mail 5",
        "mail 3",
        "mail 1",
    ]


def test_keys_that_are_paths_or_unknown_find_nothing(tmp_path: Path) -> None:
    file_into(tmp_path / "md", invoice_mail())
    (tmp_path / "md" / "secret").write_bytes(b"Subject: not mail\r\n\r\n")
    box = CaptureBox(tmp_path / "md")
    for key in ("../secret", "new/../../secret", "secret", "", "x" * 300, "1.M2P3Q4.host"):
        assert box.message(key) is None and box.raw(key) is None
    assert CaptureBox(tmp_path / "absent").page().rows == []  # no Maildir yet: empty


def test_the_viewer_exists_only_in_dev_with_capture_on(tmp_path: Path) -> None:
    assert viewer_box(env="dev", enabled=True, maildir=tmp_path) is not None
    assert viewer_box(env="dev", enabled=False, maildir=tmp_path) is None
    assert viewer_box(env="production", enabled=True, maildir=tmp_path) is None


@given(st.text(max_size=300))
def test_a_safe_filename_is_only_a_name(name: str) -> None:
    cleaned = safe_filename(name, "part-1")
    assert cleaned and len(cleaned) <= 100
    assert not any(c in cleaned for c in "/\\\"'\r\n\t\x00;")
    assert not cleaned.startswith(".") and cleaned not in (".", "..")


# The routes, served by uvicorn.

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def services_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Capture on, into ``tmp_path/maildir``, unless the test's marker says otherwise."""
    marker = request.node.get_closest_marker("services_config")
    capture = {"enabled": True, "maildir": str(tmp_path / "maildir")}
    return dict(marker.kwargs) if marker else {"capture": capture}


@SQLITE
async def test_script_is_escaped_in_the_list_and_framed_in_a_sandbox(
    web_server: str, tmp_path: Path
) -> None:
    key = file_into(tmp_path / "maildir", invoice_mail(subject=HOSTILE_SUBJECT, html=HOSTILE_HTML))
    async with httpx.AsyncClient(base_url=web_server) as client:
        listed = await client.get("/capture")
        opened = await client.get(f"/capture/{key}")
        frame = await client.get(f"/capture/{key}/html")
        pdf = await client.get(f"/capture/{key}/parts/{_pdf_index(tmp_path, key)}")
        raw = await client.get(f"/capture/{key}/raw")
        searched = await client.get("/capture", params={"q": "<script>"})
        missing = await client.get("/capture/..%2Fsecret")
    assert listed.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in listed.text
    assert "<script>" not in listed.text and "<script>" not in opened.text
    assert '<iframe id="html" sandbox=""' in opened.text
    assert "allow-scripts" not in opened.text
    assert "frame-src 'self'" in opened.headers["content-security-policy"]
    policy = frame.headers["content-security-policy"]
    assert policy.startswith("default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'")
    assert "script-src" not in policy and frame.text.rstrip() == HOSTILE_HTML  # as sent, never run
    assert pdf.content.startswith(b"%PDF") and pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["content-disposition"].startswith('attachment; filename="INV-1042.pdf"')
    assert raw.headers["content-type"].startswith("message/rfc822")
    assert raw.content.startswith(b"Return-Path:")
    assert "1 message matching" in searched.text
    assert missing.status_code == 404


def _pdf_index(tmp_path: Path, key: str) -> int:
    found = CaptureBox(tmp_path / "maildir").message(key)
    assert found is not None
    return found.attachments[0].index


@SQLITE
@pytest.mark.services_config(capture={"enabled": False})
async def test_no_viewer_without_capture(web_server: str) -> None:
    async with httpx.AsyncClient(base_url=web_server) as client:
        assert (await client.get("/capture")).status_code == 404
        assert (await client.get("/capture/1.M2P3Q4.host/raw")).status_code == 404
