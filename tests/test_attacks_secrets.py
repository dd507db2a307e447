"""The attack catalogue, secrets family: Secrets never in logs.

Part of the catalogue split by attack family (``tests/test_attacks_*.py``); every attack goes
through the real paths, on SQLite and PostgreSQL where a database is involved.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from dunmail.app import Services
from dunmail.web.keyring import create_key
from mailer.clock import FixedClock
from mailer.content.kinds import KINDS
from mailer.db import session_scope
from mailer.errors import TemplateError
from mailer.outbound.memory import MemoryTransport
from tests.conftest import DEMO_DOC
from tests.smtpd import RecordingServer
from tests.test_cli import ROOT, _env
from tests.test_web_ui import fast_argon2

__all__ = ["fast_argon2"]  # a fixture used here, imported from test_web_ui


@pytest.fixture
def relay_env(
    two_tenant_env: tuple[Services, MemoryTransport],
) -> tuple[Services, MemoryTransport]:
    """conftest's ``relay_env`` plus a second tenant, "beta" (what ``web_server`` serves)."""
    return two_tenant_env


# -- 8. secrets never in logs --------------------------------------------------------------------

SMTP_USER = "acme-mailer"
SMTP_PASSWORD = "Sm7p-pa55word-9f3c1e"
WEBHOOK_SECRET = "whsec-4b1d9e7a2c6f0835"
SECRET_KEY = "master-secret-key-0d9c8b7a6f5e4d3c2b1a"


class _Hooks(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _secret_settings(tmp_path: Path, smtpd: RecordingServer, hook: str) -> dict[str, Any]:
    return {
        "secret_key_env": "ATTACK_SECRET_KEY",
        "tenants": {
            "acme": {
                "name": "Acme Supplies",
                "email": "ar@acme.example",
                "delivery": "smtp",
                "smtp": {
                    "host": "127.0.0.1",
                    "port": smtpd.port,
                    "username": SMTP_USER,
                    "password_env": "ATTACK_SMTP_PASSWORD",
                    "timeout_seconds": 5,
                },
                "dkim": [
                    {
                        "domain": "acme.example",
                        "selector": "s1",
                        "key_file": str(tmp_path / "keys" / "s1.pem"),
                    }
                ],
                "webhooks": [{"url": hook, "secret_env": "ATTACK_HOOK_SECRET"}],
            }
        },
    }


def _config_toml(config: Any) -> str:
    """``config`` as the TOML file the CLI reads (the subset this test uses)."""
    acme = config.tenants["acme"]
    lines = [
        'env = "dev"',
        'secret_key_env = "ATTACK_SECRET_KEY"',
        "[database]",
        f'url = "{config.database.url}"',
        "[log]",
        'level = "DEBUG"',
        "[relay]",
        'host = "127.0.0.1"',
        "port = 9",
        'domain = "relay.example"',
        "[tenants.acme]",
        'name = "Acme Supplies"',
        'email = "ar@acme.example"',
        'delivery = "smtp"',
        "[tenants.acme.smtp]",
        'host = "127.0.0.1"',
        f"port = {acme.smtp.port}",
        f'username = "{SMTP_USER}"',
        'password_env = "ATTACK_SMTP_PASSWORD"',
        "timeout_seconds = 5",
        "[[tenants.acme.dkim]]",
        'domain = "acme.example"',
        'selector = "s1"',
        f'key_file = "{acme.dkim[0].key_file}"',
    ]
    lines += [
        f"[tenants.acme.emails.{kind}]\nattach_pdf = false"
        for kind in sorted(KINDS)
        if KINDS[kind].pdf is not None
    ]
    return "\n".join(lines) + "\n"


def _public_key_base64(pem: bytes) -> str:
    from base64 import b64encode

    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pem, password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b64encode(der).decode()


@pytest.fixture
def hook_url() -> Iterator[str]:
    """A loopback webhook receiver (``_Hooks``) for the secrets test, and its URL."""
    hooks = ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    _Hooks.bodies = []
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{hooks.server_address[1]}/hook"
    hooks.shutdown()
    hooks.server_close()


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record of every library captured, from before the services are built (ask for it
    first)."""
    caplog.set_level(logging.DEBUG)  # the root logger: every library's records too
    return caplog


@pytest.fixture
def transport() -> None:
    """This module's shared services send over SMTP, to ``smtpd``."""
    return None


@pytest.fixture
def services_config(
    tmp_path: Path, smtpd: RecordingServer, hook_url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """This module's shared ``services``: acme sends through its own SMTP login at ``smtpd``
    and signs its webhooks to ``hook_url``, every secret from the environment."""
    monkeypatch.setenv("ATTACK_SMTP_PASSWORD", SMTP_PASSWORD)
    monkeypatch.setenv("ATTACK_HOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("ATTACK_SECRET_KEY", SECRET_KEY)
    return _secret_settings(tmp_path, smtpd, hook_url)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database plays no part
@pytest.mark.smtpd_options(auth={SMTP_USER: SMTP_PASSWORD})
async def test_secrets_never_reach_the_logs_or_the_clis_stderr(
    debug_logs: pytest.LogCaptureFixture,
    services: Services,
    tmp_path: Path,
    clock: FixedClock,
    smtpd: RecordingServer,
) -> None:
    from dunmail.web.app import create_app

    caplog, config = debug_logs, services.config
    try:
        assert services.ledger.import_document(DEMO_DOC, tenant="acme").errors == []
        message = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
        assert message.status == "sent", message.last_error
        assert smtpd.logins == [SMTP_USER]  # AUTH with the password really happened
        text = smtpd.messages[-1].get_body(preferencelist=("plain",))
        assert text is not None
        tokens = re.findall(r"/l/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", text.get_content())
        assert tokens
        with session_scope(services.engine) as session:
            _, api_key = create_key(
                session, tenant_id=services.tenants.id("acme"), name="erp", now=clock.now()
            )
        app = httpx.ASGITransport(app=create_app(services))
        async with httpx.AsyncClient(transport=app, base_url="http://dunmail") as client:
            for token in tokens:
                await client.get(f"/l/{token}")
                await client.get(f"/l/{token}x")  # a tampered one is logged too
            auth = {"Authorization": f"Bearer {api_key}"}
            assert (await client.get("/api/v1/messages", headers=auth)).status_code == 200
            wrong = {"Authorization": f"Bearer {api_key[:-3]}xyz"}
            assert (await client.get("/api/v1/messages", headers=wrong)).status_code == 401
        clock.advance(timedelta(minutes=1))
        await services.sending.deliver_webhooks()
        assert _Hooks.bodies, "the webhook was delivered (signed with the secret)"
        # A failing send in-process: the server now refuses the password.
        smtpd.script(auth={SMTP_USER: "another password"})
        smtpd.drop_connections()
        await services.sending.send_invoice("INV-1042", kind="invoice_reminder", tenant="acme")
    finally:
        await services.close()

    # The CLI, at DEBUG, sending through the server that refuses the password.
    config_file = tmp_path / "config.toml"
    config_file.write_text(_config_toml(config))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "dunmail.cli", "send", "--invoice", "INV-1042", "--kind"),
        *("late_payment_reminder", "--config", str(config_file)),
        cwd=str(ROOT),
        env=_env(
            ATTACK_SMTP_PASSWORD=SMTP_PASSWORD,
            ATTACK_HOOK_SECRET=WEBHOOK_SECRET,
            ATTACK_SECRET_KEY=SECRET_KEY,
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    stderr = err.decode()
    assert process.returncode not in (0, None), (out, stderr)
    assert "535" in stderr or "auth" in stderr.lower(), stderr  # it did fail on the login

    pem = Path(config.tenants["acme"].dkim[0].key_file).read_text()
    # The private key's lines, less any that happen to be a run of the public key's base64
    # (the modulus is in both; the public key is meant to be shown, for the DNS record).
    public = _public_key_base64(pem.encode())
    private_lines = [line for line in pem.splitlines()[1:-1] if line not in public]
    secrets = {
        "SMTP password": SMTP_PASSWORD,
        "webhook secret": WEBHOOK_SECRET,
        "secret key": SECRET_KEY,
        "API key": api_key,
        "API key secret part": api_key.split("_", 2)[2],
        "DKIM private key": "".join(pem.splitlines()[1:-1]),
        **{f"DKIM private key line {n}": line for n, line in enumerate(private_lines)},
        **{f"link token {n}": t for n, t in enumerate(tokens)},
        **{f"link signature {n}": t.split(".")[1] for n, t in enumerate(tokens)},
    }
    formatter = logging.Formatter("%(name)s %(message)s")  # with the traceback, if any
    # Not ours: aiosmtpd ("mail.log", the test's SMTP server, logs every line it receives) and
    # httpx narrating this test's own requests to the app.
    logged = "\n".join(
        formatter.format(r)
        for r in [*caplog.get_records("setup"), *caplog.records]  # set-up built the services
        if r.name != "mail.log" and "http://dunmail/" not in r.getMessage()
    )
    assert caplog.records  # the run did log
    for what, value in secrets.items():
        assert value not in logged, f"{what} in the log records"
        assert value not in stderr, f"{what} on the CLI's stderr"
        assert value not in out.decode(), f"{what} on the CLI's stdout"


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 10**9 }}",
        "{{ ['x'] * 1000000 }}",
        "{{ 2 ** 100000 }}",
        "{% set _ = invoice.update({'number': 'forged'}) %}{{ invoice.number }}",
    ],
)
def test_templates_cannot_exhaust_memory_or_change_their_data(source: str) -> None:
    """Refused when saved: a template that would build gigabytes, or rewrite what it renders."""
    from mailer.content.overrides import validate_override

    with pytest.raises(TemplateError):
        validate_override("new_invoice", "html", source)
