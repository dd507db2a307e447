"""Own SMTP on the relay's host and port: each tenant's endpoint keeps its own pool, limits,
credentials and size budget, and a PDF over its budget is linked, never refused with 552.

One real loopback aiosmtpd server stands for a machine that runs the relay and a tenant's own
server behind one host:port; real WeasyPrint PDFs; SQLite and PostgreSQL.
"""

from __future__ import annotations

import email
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WEASYPRINT_SKIP

if WEASYPRINT_SKIP:
    pytest.skip(WEASYPRINT_SKIP, allow_module_level=True)

from dunmail.app import Services  # noqa: E402  (after the skip)
from mailer.content.pdf_pool import PDFRenderer
from mailer.outbound.models import MessageStatus
from tests.conftest import DEMO_DOC
from tests.smtpd import RecordingServer

# The email alone is about 10 KB; with the invoice PDF it is well over 20 KB.
RELAY_BUDGET = 20_000
BIG_BUDGET = 5_000_000
TINY_BUDGET = 16_000
PASSWORDS = {"relay-user": "relay-secret", "tiny-user": "tiny-secret"}


@pytest.fixture
def passwords(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("POOLS_RELAY_PW", PASSWORDS["relay-user"])
    monkeypatch.setenv("POOLS_TINY_PW", PASSWORDS["tiny-user"])
    yield


def _tenant(slug: str, tmp_path: Path, smtp: dict[str, Any] | None = None) -> dict[str, Any]:
    tenant: dict[str, Any] = {
        "name": f"{slug.title()} Ltd",
        "email": f"ar@{slug}.example",
        "dkim": [
            {
                "domain": f"{slug}.example",
                "selector": "s1",
                "key_file": str(tmp_path / "keys" / f"{slug}.pem"),
            }
        ],
    }
    if smtp is not None:
        tenant |= {"delivery": "smtp", "smtp": smtp}
    return tenant


def _pdfs(raw: bytes) -> list[str]:
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return [part.get_filename() or "" for part in parsed.iter_attachments()]


@pytest.fixture
def transport() -> None:
    """This module's shared services send over SMTP, to ``smtpd``."""
    return None


@pytest.fixture
def services_config(tmp_path: Path, smtpd: RecordingServer, passwords: None) -> dict[str, Any]:
    """This module's shared ``services``: PDFs attached; the relay and two own-SMTP tenants all
    at ``smtpd``, each with its own budget and login."""
    where = {"host": smtpd.host, "port": smtpd.port, "timeout_seconds": 5}
    relay_login = {"username": "relay-user", "password_env": "POOLS_RELAY_PW"}
    return {
        "pdfs": True,
        "relay": {
            "domain": "relay.example",
            **where,
            **relay_login,
            "max_message_bytes": RELAY_BUDGET,
            "max_connections": 1,
        },
        "tenants": {
            # Relay mode: the relay's small budget, so its PDF is linked.
            "acme": _tenant("acme", tmp_path),
            # The same server and even the same account as the relay, but its own (larger)
            # budget: the PDF fits and is attached.
            "big": _tenant(
                "big",
                tmp_path,
                {**where, **relay_login, "max_message_bytes": BIG_BUDGET, "max_connections": 4},
            ),
            # Its own account on the same server and a budget below the relay's.
            "tiny": _tenant(
                "tiny",
                tmp_path,
                {
                    **where,
                    "username": "tiny-user",
                    "password_env": "POOLS_TINY_PW",
                    "max_message_bytes": TINY_BUDGET,
                },
            ),
        },
    }


@pytest.fixture
def services_options() -> dict[str, Any]:
    """This module's shared ``services`` render their PDFs in-process."""
    return {"pdf_renderer": PDFRenderer(workers=0)}


@pytest.mark.smtpd_options(auth=PASSWORDS)
async def test_own_smtp_on_the_relays_host_and_port_keeps_its_own_budget_and_login(
    services: Services, smtpd: RecordingServer
) -> None:
    try:
        messages = {}
        for slug in ("acme", "big", "tiny"):
            assert services.ledger.import_document(DEMO_DOC, tenant=slug).errors == []
            messages[slug] = await services.sending.send_invoice(
                "INV-1042", kind="new_invoice", tenant=slug
            )
        keys = [t.key for t in services.transports]
    finally:
        await services.close()

    for slug, message in messages.items():
        assert message.status is MessageStatus.SENT, (slug, message.last_error)
    assert len({e.content for e in smtpd.envelopes}) == 3  # three emails, one per tenant
    by_tenant = {
        slug: next(raw for raw in smtpd.envelopes if f"@{slug}.example".encode() in raw.content)
        for slug in messages
    }
    assert _pdfs(by_tenant["big"].content) == ["INV-1042.pdf"]
    assert len(by_tenant["big"].content) > RELAY_BUDGET  # over the relay's budget, within its own
    for slug, budget in (("acme", RELAY_BUDGET), ("tiny", TINY_BUDGET)):
        raw = by_tenant[slug].content
        assert _pdfs(raw) == [], slug
        assert len(raw) <= budget, slug
        assert b"too large to attach" in raw and b"/l/" in raw, slug
    # Each endpoint logged in with its own credentials, on its own pool: the relay's and
    # "big"'s share an account but not connections, limits or back-off (keyed apart).
    assert sorted(smtpd.logins) == ["relay-user", "relay-user", "tiny-user"]
    assert len(keys) == len(set(keys)) == 3, keys
