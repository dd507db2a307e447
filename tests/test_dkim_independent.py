"""An independent verifier (OpenDKIM) accepts what dunmail signs and sends over real SMTP.

OpenDKIM's ``TestPublicKeys`` serves the public keys from a file, so no DNS is needed. Skips
with a visible reason where Debian's ``opendkim`` is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import mailbox
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dunmail.app import Services
from dunmail.capture import start_capture
from mailer.outbound.dkim import dns_record
from tests.conftest import DEMO_DOC

OPENDKIM = shutil.which("opendkim") or (
    "/usr/sbin/opendkim" if Path("/usr/sbin/opendkim").exists() else None
)
pytestmark = pytest.mark.skipif(
    OPENDKIM is None, reason="OpenDKIM not installed (Debian package opendkim)"
)


@pytest.fixture
async def capture(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """A capturing SMTP server on loopback: its port and the Maildir it delivers into."""
    maildir = tmp_path / "maildir"
    server = await start_capture("127.0.0.1", 0, maildir)
    yield server.sockets[0].getsockname()[1], maildir
    server.close()
    await server.wait_closed()


@pytest.fixture
def transport() -> None:
    """This module's shared services send over SMTP, to ``capture``."""
    return None


@pytest.fixture
def services_config(tmp_path: Path, capture: tuple[int, Path]) -> dict[str, Any]:
    """This module's shared ``services``: the relay is ``capture``; acme signs with an RSA and
    an Ed25519 key."""
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
    return {
        "relay": {"host": "127.0.0.1", "port": capture[0]},
        "tenants": {"acme": {"name": "Acme Supplies", "email": "ar@acme.example", "dkim": keys}},
    }


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_opendkim_passes_rsa_and_ed25519(
    services: Services, capture: tuple[int, Path], tmp_path: Path
) -> None:
    _, maildir = capture
    config = services.config
    services.ledger.import_document(DEMO_DOC, tenant=None)
    services.sending.enqueue_invoice_email(
        "INV-1042", kind="new_invoice", tenant=None, manual=False
    )
    assert (await services.sending.deliver()).sent == 1

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
