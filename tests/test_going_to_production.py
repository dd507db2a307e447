"""The README's "Going to production" steps, replayed as a new tenant follows them.

From a config with no keys: ``dunmail init`` -> ``dunmail domain add`` -> the printed records
published on an authoritative DNS server on loopback -> ``dunmail domain check`` passes -> the
first email through the tenant's own SMTP server (an aiosmtpd sink on loopback). The message
received carries a DKIM signature that dkimpy verifies against the DNS just published, with
d= aligned to the From domain: what a receiver's DMARC check needs.
"""

from __future__ import annotations

import json
import socket
import subprocess
from email import message_from_bytes
from email.policy import default
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import dkim
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailer.outbound.identity import aligned
from tests.conftest import DEMO_DOC, NO_PDFS, START
from tests.dns_server import Zone, dkim_dns, serve
from tests.test_cli import dunmail

SECRET = "going-to-production-test-secret-0123456789"  # production wants >= 32 bytes


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``dunmail ARGS --config CONFIG`` with the secret key in its environment."""
    return dunmail(config, *args, DUNMAIL_SECRET_KEY=SECRET)


class Sink:
    """Keeps every message the tenant's SMTP server is handed, as received."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.return_paths: list[str] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.received.append(envelope.content)
        self.return_paths.append(envelope.mail_from or "")
        return "250 OK"


def step_1_config(folder: Path, db_url: str, smtp_port: int) -> Path:
    """A production config for one own-SMTP tenant; DKIM comes in step 2."""
    emails = "".join(
        f"[tenants.acme.emails.{kind}]\nattach_pdf = false\n" for kind in sorted(NO_PDFS)
    )
    config = folder / "config.toml"
    config.write_text(f"""
env = "production"
secret_key_env = "DUNMAIL_SECRET_KEY"
[database]
url = "{db_url}"
[relay]
domain = "relay.example"
[inbound]
hostname = "mx.acme.example"
[web]
public_url = "https://invoices.acme.example"
[tenants.acme]
name = "Acme Supplies"
email = "ar@acme.example"
delivery = "smtp"
bounce_domain = "bounces.acme.example"
[tenants.acme.smtp]
host = "127.0.0.1"
port = {smtp_port}
local_hostname = "out.acme.example"
{emails}""")
    return config


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_new_tenant_follows_the_readme_to_a_signed_aligned_first_email(
    tmp_path: Path, db_url: str
) -> None:
    sink = Sink()
    with socket.socket() as probe:  # a free port: Controller's start-up check needs a real one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    smtp = Controller(sink, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        config = step_1_config(tmp_path, db_url, port)
        # 1. The database, migrated; the tenant registered.
        init = run(config, "init")
        assert init.returncode == 0, init.stderr
        assert "tenants: acme" in init.stdout

        # 2. Keys and the records to publish; the printed config goes into config.toml.
        added = run(config, "domain", "add", "acme.example", "--json")
        assert added.returncode == 0, added.stderr
        setup: dict[str, Any] = json.loads(added.stdout)
        config.write_text(config.read_text() + "\n" + setup["config"])

        # 3. Publish: the zone's name server serves exactly what was printed.
        zone = Zone()
        zone.publish(setup["records"])
        with serve(zone) as nameserver:
            # 4. The check passes before any mail goes out.
            check = run(config, "domain", "check", "acme.example", "--nameserver", nameserver)
            assert check.returncode == 0, check.stdout + check.stderr
            assert "FAIL" not in check.stdout and check.stdout.count("PASS") == 7

            # 5. The first email.
            document = tmp_path / "first.json"
            document.write_text(json.dumps(DEMO_DOC))
            imported = run(config, "import", str(document), "--at", START.isoformat())
            assert imported.returncode == 0, imported.stderr
            sent = run(config, "send", "--invoice", "INV-1042", "--at", START.isoformat())
            assert sent.returncode == 0, sent.stderr

            # What a receiver sees: signed, verifiable from DNS, aligned with From.
            assert sink.received, "the sink received nothing"
            message = sink.received[0]
            verifier = dkim.DKIM(message)
            signatures = [v for k, v in verifier.headers if k.lower() == b"dkim-signature"]
            assert len(signatures) == 2
            dns = dkim_dns(nameserver)
            assert all(dkim.DKIM(message).verify(idx=i, dnsfunc=dns) for i in range(2))
    finally:
        smtp.stop()
    parsed = message_from_bytes(message, policy=default)
    from_domain = parseaddr(str(parsed["From"]))[1].rpartition("@")[2]
    tags = dict(
        part.strip().split("=", 1) for part in signatures[0].decode().split(";") if "=" in part
    )
    assert from_domain == "acme.example"
    assert tags["d"] == "acme.example" and aligned(from_domain, tags["d"])
    # The VERP return path is on the bounce domain, which SPF covers and which aligns too.
    assert sink.return_paths[0].endswith("@bounces.acme.example")
    assert aligned(from_domain, "bounces.acme.example")
    selectors = sorted(k["selector"] for k in setup["keys"])
    assert tags["s"] in selectors and selectors[0].endswith("-ed25519")
