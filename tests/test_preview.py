"""``dunmail preview``: the email exactly as it would be sent, and nothing sent or recorded."""

from __future__ import annotations

import json
from email import message_from_bytes, message_from_string, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import DEMO_DOC, WEASYPRINT_SKIP
from tests.test_cli import AT, dunmail, write_config

# WeasyPrint and its system libraries are optional: without them the email goes without its PDF.
HAS_PDF = WEASYPRINT_SKIP is None


@pytest.fixture
def imported(tmp_path: Path) -> Path:
    # Port 9 (discard) on loopback: nothing listens there, and a preview never connects.
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'preview.db'}", 9, pdfs=True)
    config.write_text(
        config.read_text().replace(
            "[[tenants.acme.dkim]]",
            "[tenants.acme.branding]\nbrand_color = '#aa3300'\naddress = ['Acme SRL', 'Strada 1']"
            "\n\n[[tenants.acme.dkim]]",
        )
    )
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(DEMO_DOC))
    result = dunmail(config, "import", str(doc), "--at", AT)
    assert result.returncode == 0, result.stderr
    return config


def _parts(message: EmailMessage) -> dict[str, str | bytes]:
    found: dict[str, str | bytes] = {}
    for part in message.walk():
        kind = part.get_content_type()
        if kind in ("text/plain", "text/html", "application/pdf") and isinstance(
            part, EmailMessage
        ):
            found[kind] = part.get_content()
    return found


def _outbox_is_empty(config: Path, tmp_path: Path) -> None:
    assert json.loads(dunmail(config, "outbox", "--json").stdout) == []
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'preview.db'}")
    with engine.connect() as connection:
        assert connection.execute(sa.text("select count(*) from message")).scalar() == 0
    engine.dispose()


def test_preview_writes_the_signed_email_and_records_nothing(
    imported: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reminder.eml"
    result = dunmail(
        imported,
        *("preview", "invoice_reminder", "--invoice", "INV-1042", "--locale", "es"),
        *("--out", str(out), "--at", AT),
    )
    assert result.returncode == 0, result.stderr
    assert "nothing was sent or recorded" in result.stderr
    message = message_from_bytes(out.read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message["Subject"].startswith("Recordatorio: la factura INV-1042")
    assert message["DKIM-Signature"] is not None and "s=s1" in message["DKIM-Signature"]
    assert message["To"] == "billing@globex.example, ap@globex.example"  # billing ranks first
    assert message["Reply-To"] == "Acme Supplies <ar@acme.example>"
    parts = _parts(message)
    text, html = parts["text/plain"], parts["text/html"]
    assert isinstance(text, str) and isinstance(html, str)
    assert "Estimado/a Globex" in text and "Strada 1" in text
    assert "#aa3300" in html
    if HAS_PDF:
        pdf = parts["application/pdf"]
        assert isinstance(pdf, bytes) and pdf.startswith(b"%PDF-")
    _outbox_is_empty(imported, tmp_path)


def test_preview_of_a_sample_goes_to_stdout(imported: Path, tmp_path: Path) -> None:
    result = dunmail(imported, "preview", "autopay_failed", "--sample", "--locale", "fr")
    assert result.returncode == 0, result.stderr
    message = message_from_string(result.stdout, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message["To"] == "customer@example.com"
    assert "Acme Supplies" in message["From"]
    text = _parts(message)["text/plain"]
    assert isinstance(text, str) and text.startswith("Bonjour ")
    assert "application/pdf" not in _parts(message)  # this kind has no PDF
    _outbox_is_empty(imported, tmp_path)


def test_preview_mistakes_are_clear(imported: Path) -> None:
    not_invoice = dunmail(imported, "preview", "payment_plan", "--invoice", "INV-1042")
    assert not_invoice.returncode == 2 and "--sample" in not_invoice.stderr
    unknown = dunmail(imported, "preview", "invoice_remind", "--invoice", "INV-1042")
    assert unknown.returncode == 2 and "'invoice_remind'" in unknown.stderr
    missing = dunmail(imported, "preview", "new_invoice", "--invoice", "INV-404")
    assert missing.returncode == 2 and "INV-404" in missing.stderr
    for result in (not_invoice, unknown, missing):
        assert "Traceback" not in result.stderr
