"""An independent verifier (OpenDKIM) accepts what dunmail signs and sends over real SMTP.

OpenDKIM's ``TestPublicKeys`` serves the public keys from a file, so no DNS is needed. Skips
with a visible reason where Debian's ``opendkim`` is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import mailbox
import shutil
import subprocess
from pathlib import Path

import pytest

from dunmail.app import build_services
from dunmail.capture import start_capture
from mailer.clock import FixedClock
from mailer.outbound.dkim import dns_record
from tests.conftest import DEMO_DOC, make_config

OPENDKIM = shutil.which("opendkim") or (
    "/usr/sbin/opendkim" if Path("/usr/sbin/opendkim").exists() else None
)
pytestmark = pytest.mark.skipif(
    OPENDKIM is None, reason="OpenDKIM not installed (Debian package opendkim)"
)


async def test_opendkim_passes_rsa_and_ed25519(tmp_path: Path, clock: FixedClock) -> None:
    maildir = tmp_path / "maildir"
    server = await start_capture("127.0.0.1", 0, maildir)
    port = server.sockets[0].getsockname()[1]
    keys = [
        {
            "domain": "acme.example",
            "selector": "rsa1",
            "algorithm": "rsa-sha256",
            "key_file": str(tmp_path / "k" / "rsa1.pem"),
        },
        {
            "domain": "acme.example",
            "selector": "ed1",
            "algorithm": "ed25519-sha256",
            "key_file": str(tmp_path / "k" / "ed1.key"),
        },
    ]
    config = make_config(
        tmp_path,
        f"sqlite:///{tmp_path / 'db.sqlite'}",
        relay={"host": "127.0.0.1", "port": port},
        tenants={"acme": {"name": "Acme Supplies", "email": "ar@acme.example", "dkim": keys}},
    )
    services = build_services(config, clock)
    try:
        services.ledger.import_document(DEMO_DOC, tenant=None)
        services.sending.enqueue_invoice_email(
            "INV-1042", kind="new_invoice", tenant=None, manual=False
        )
        assert (await services.sending.deliver()).sent == 1
    finally:
        await services.close()
        server.close()
        await server.wait_closed()

    # One copy per recipient (each its own envelope), the same signed bytes: check one.
    delivered = list(mailbox.Maildir(maildir, create=False))[0]
    message = tmp_path / "delivered.eml"
    message.write_bytes(delivered.as_bytes())
    table = tmp_path / "keys.txt"
    table.write_text(
        "".join(
            f"{k.selector}._domainkey.{k.domain} {dns_record(k)}\n"
            for k in config.tenants["acme"].dkim
        )
    )
    conf = tmp_path / "opendkim.conf"
    conf.write_text(f"Mode v\nTestPublicKeys {table}\nSyslog no\nAlwaysAddARHeader yes\n")
    result = subprocess.run(
        [str(OPENDKIM), "-x", str(conf), "-t", str(message), "-vvv"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert "dkim=pass (2048-bit key) header.d=acme.example" in report
    assert "header.a=rsa-sha256 header.s=rsa1" in report
    assert "header.a=ed25519-sha256 header.s=ed1" in report
    assert "dkim=fail" not in report
