"""DKIM alignment with From (DMARC, RFC 7489 s3.1.1): the relay's own keys sign relay-mode mail.

Relay mode sends as ``noreply-invoice@<relay domain>``: only a signature for that domain aligns,
so ``[[relay.dkim]]`` keys sign every relay-mode message first, and a configuration whose mail
cannot align says so at start-up.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dkim
import pytest

from dunmail.app import Services
from mailer.config import DeliveryMode, DKIMConfig, RelayConfig
from mailer.outbound.dkim import generate_key
from mailer.outbound.identity import aligned, alignment_problem, from_domain, signing_keys
from mailer.outbound.memory import MemoryTransport
from mailer.tenant_config import TenantConfig
from tests.conftest import DEMO_DOC, emails
from tests.test_dkim import make_dns, signature_count, tags


def _key(tmp_path: Path, domain: str, selector: str) -> DKIMConfig:
    return DKIMConfig(domain=domain, selector=selector, key_file=tmp_path / f"{selector}.pem")


def _tenant(delivery: DeliveryMode = DeliveryMode.RELAY, **extra: Any) -> TenantConfig:
    smtp = {"host": "smtp.acme.example"} if delivery is DeliveryMode.SMTP else None
    return TenantConfig(name="Acme", email="ar@acme.example", delivery=delivery, smtp=smtp, **extra)


@pytest.mark.parametrize(
    ("from_dom", "signing", "expected"),
    [
        ("relay.example", "relay.example", True),
        ("Relay.Example.", "relay.example", True),
        ("mail.relay.example", "relay.example", True),  # d= the organisational parent
        ("relay.example", "bounces.relay.example", True),
        ("relay.example", "acme.example", False),
        ("relay.example", "xrelay.example", False),  # a suffix, not a subdomain
        ("a.relay.example", "b.relay.example", False),  # no public suffix: no organisation known
        # Under the Public Suffix List, the organisational domain decides (RFC 7489 s3.2).
        ("billing.acme.co.uk", "mail.acme.co.uk", True),
        ("acme.co.uk", "other.co.uk", False),
        ("acme.co.uk", "co.uk", False),  # a public suffix is nobody's organisation
        ("invoices.acme.com", "acme.com", True),
        ("acme.com", "acme.com.evil.example", False),
    ],
)
def test_relaxed_alignment(from_dom: str, signing: str, expected: bool) -> None:
    assert aligned(from_dom, signing) is expected


def test_relay_mode_signs_with_the_relays_keys_first_then_the_tenants(tmp_path: Path) -> None:
    relay_key, own = _key(tmp_path, "relay.example", "r1"), _key(tmp_path, "acme.example", "a1")
    relay = RelayConfig(domain="relay.example", dkim=[relay_key])
    tenant = _tenant(dkim=[own, own])
    assert from_domain(tenant, relay) == "relay.example"
    assert signing_keys(tenant, relay) == [relay_key, own]
    assert alignment_problem(tenant, relay) is None
    # Own-SMTP mode sends as the tenant: the relay's keys have no business signing it.
    smtp_tenant = _tenant(DeliveryMode.SMTP, dkim=[own])
    assert signing_keys(smtp_tenant, relay) == [own]
    assert from_domain(smtp_tenant, relay) == "acme.example"
    assert alignment_problem(smtp_tenant, relay) is None


def test_an_unaligned_configuration_says_what_to_add() -> None:
    relay = RelayConfig(domain="relay.example")
    own = DKIMConfig(domain="acme.example", selector="a1", key_file=Path("a1.pem"))
    problem = alignment_problem(_tenant(dkim=[own]), relay)
    assert problem == (
        "mail from @relay.example is signed for acme.example: DKIM does not align with From "
        "for DMARC; add a key for relay.example in [[relay.dkim]]"
    )
    bare = alignment_problem(_tenant(DeliveryMode.SMTP), relay)
    assert bare is not None and "signed for no key at all" in bare
    assert bare.endswith("add a key for acme.example in its [[dkim]] table")


def test_relay_dkim_reads_from_toml_as_one_table_or_many(tmp_path: Path) -> None:
    one = {"domain": "relay.example", "selector": "r1", "key_file": "r1.pem"}
    assert [k.selector for k in RelayConfig(dkim=one).dkim] == ["r1"]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a DNS label"):
        RelayConfig(dkim=[{**one, "selector": "bad selector"}])  # type: ignore[list-item]


@pytest.fixture
def relay_key(tmp_path: Path) -> DKIMConfig:
    """A key the relay signs with, for relay.example, on disk."""
    key = _key(tmp_path, "relay.example", "r1")
    generate_key(key.key_file, key.algorithm)
    return key


@pytest.fixture
def services_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    """This module's shared ``services``: make_config's (acme signs for acme.example only), or,
    parametrized indirectly with "relay_key", the relay signing with ``relay_key`` too."""
    if getattr(request, "param", None) != "relay_key":
        return {}
    key: DKIMConfig = request.getfixturevalue("relay_key")
    return {"relay": {"domain": "relay.example", "dkim": [key.model_dump()]}}


@pytest.fixture
def startup_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """dunmail's warnings captured from before the services are built (ask for it first)."""
    caplog.set_level(logging.WARNING, logger="dunmail")
    return caplog


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("services_config", ["relay_key"], indirect=True)
async def test_relay_mode_mail_verifies_for_the_relay_domain_and_the_tenants(
    startup_logs: pytest.LogCaptureFixture,
    services: Services,
    transport: MemoryTransport,
    relay_key: DKIMConfig,
) -> None:
    caplog, config = startup_logs, services.config
    try:
        logged = [*caplog.get_records("setup"), *caplog.records]  # set-up built the services
        assert not [r for r in logged if "DKIM does not align" in r.getMessage()]
        assert services.ledger.import_document(DEMO_DOC, tenant="acme").errors == []
        await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    finally:
        await services.close()
    (sent,) = emails(transport)
    assert b"From: Acme Supplies <noreply-invoice@relay.example>" in sent.data
    assert signature_count(sent.data) == 2
    assert tags(sent.data, 0)[b"d"] == b"relay.example"
    assert tags(sent.data, 1)[b"d"] == b"acme.example"
    tenant_key = config.tenants["acme"].dkim[0]
    dns = make_dns([relay_key, tenant_key])
    assert [bool(dkim.DKIM(sent.data).verify(idx=i, dnsfunc=dns)) for i in (0, 1)] == [True, True]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_start_up_warns_when_no_key_aligns(
    startup_logs: pytest.LogCaptureFixture,
    services: Services,  # d=acme.example only
) -> None:
    caplog = startup_logs
    logged = caplog.get_records("setup")  # set-up built the services
    (warning,) = [r.getMessage() for r in logged if "DKIM does not align" in r.getMessage()]
    assert warning.startswith("tenants.acme: mail from @relay.example is signed for acme.example")
