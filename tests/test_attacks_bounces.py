"""The attack catalogue, bounces family: Forged bounces trying to suppress an address, hold dunning
or re-route mail.

Part of the catalogue split by attack family (``tests/test_attacks_*.py``); every attack goes
through the real paths, on SQLite and PostgreSQL where a database is involved.
"""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from dunmail.app import Services
from mailer.ledger.models import Hold
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.models import Suppression
from tests.test_bounce_ingest import _sent, dsn
from tests.test_web_ui import fast_argon2

__all__ = ["fast_argon2"]  # a fixture used here, imported from test_web_ui


@pytest.fixture
def relay_env(
    two_tenant_env: tuple[Services, MemoryTransport],
) -> tuple[Services, MemoryTransport]:
    """conftest's ``relay_env`` plus a second tenant, "beta" (what ``web_server`` serves)."""
    return two_tenant_env


# -- 5. forged bounces -------------------------------------------------------------------------


async def test_forged_bounces_suppress_nothing(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    local, _, domain = sent.sender.partition("@")
    prefix, _, mac = local.rpartition("-")
    forged_mac = f"{prefix}-{'0' * len(mac)}@{domain}"
    no_mac = f"{prefix}@{domain}"
    # Without the original's headers: only the (forged) VERP address could attribute it.
    bare = b"Content-Type: text/plain\r\n\r\n"
    summary = services.inbound.ingest(
        [
            ("file:forged-mac.eml", dsn(sent, envelope_to=forged_mac, original=bare)),
            ("file:no-mac.eml", dsn(sent, envelope_to=no_mac, original=bare)),
            ("file:other-tenant.eml", dsn(sent, envelope_to="bounces@beta.example", original=bare)),
        ]
    )
    assert (summary.stored, summary.matched, summary.unmatched) == (3, 0, 3)
    assert summary.suppressed == []
    assert len(services.inbox.unmatched()) == 3
    # Genuine VERP, but the bounce names someone this email never went to: nobody is blocked.
    stranger = dsn(
        sent,
        recipient="ceo@globex.example",
        diagnostic="smtp; 550 5.1.1 <ceo@globex.example>: User unknown",
    )
    assert services.inbound.ingest([("file:stranger.eml", stranger)]).suppressed == []
    with Session(services.engine) as session:
        assert session.exec(select(Suppression)).all() == []
    assert services.suppressions.blocked(tenant="acme") == []


async def test_forged_bounces_naming_our_headers_hold_and_pause_nothing(
    relay_env: tuple[Services, MemoryTransport],
) -> None:
    """Issue 14: X-Dunmail-Message and Message-ID are in every email; a DSN naming them, sent
    to the tenant's AR inbox or to no address of ours, blocks nobody and holds nothing."""
    services, transport = relay_env
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    sent = transport.sent[0]
    for n, to in enumerate(["ar@acme.example", "ar@beta.example", "someone@elsewhere.example"]):
        for recipient in ("ap@globex.example", "billing@globex.example"):
            raw = dsn(sent, envelope_to=to, recipient=recipient).replace(
                b"ABC123", f"F{n}{recipient[0]}".encode()
            )
            services.inbound.ingest([(f"file:{n}-{recipient}.eml", raw)])
    with Session(services.engine) as session:
        assert session.exec(select(Suppression)).all() == []
        assert session.exec(select(Hold)).all() == []
    assert services.inbox.threads(tenant="beta", status=None) == []
    assert services.inbox.threads(tenant="acme", status=None, only="fix_contact") == []
