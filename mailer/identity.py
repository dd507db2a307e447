"""PURE: who a tenant's email says it is from, where replies go, and where bounces come back."""

from __future__ import annotations

from email.headerregistry import Address

from mailer.address import make_address
from mailer.compose import Envelope
from mailer.config import DeliveryMode, RelayConfig, TenantConfig
from mailer.verp import issue_verp


def bounce_domain(tenant: TenantConfig, relay: RelayConfig) -> str:
    """The VERP domain: the tenant's own if it set one, else the relay's."""
    return tenant.bounce_domain or relay.domain


def message_id_domain(tenant: TenantConfig, relay: RelayConfig) -> str:
    """The right-hand side of Message-IDs: the signing domain, so ids align with DKIM d=."""
    if tenant.dkim:
        return tenant.dkim[0].domain
    if tenant.delivery is DeliveryMode.SMTP:
        return tenant.email.rpartition("@")[2].lower()
    return relay.domain


def envelope_for(
    tenant: TenantConfig, relay: RelayConfig, *, uid: str, verp_key: bytes
) -> Envelope:
    """From, Reply-To and envelope sender for one message of ``tenant``.

    Relay mode sends as ``"<Tenant>" <noreply-invoice@relay>`` with Reply-To the tenant, so the
    relay's domain carries SPF/DKIM alignment; own-SMTP mode sends as the tenant itself.
    """
    reply_to = tenant.reply_to or tenant.email
    reply: Address | None
    if tenant.delivery is DeliveryMode.RELAY:
        from_addr = make_address(relay.sender, tenant.name)
        reply = make_address(reply_to, tenant.name)
    else:
        from_addr = make_address(tenant.email, tenant.name)
        reply = make_address(reply_to, tenant.name) if tenant.reply_to else None
    mail_from = issue_verp(uid, key=verp_key, domain=bounce_domain(tenant, relay))
    return Envelope(from_addr=from_addr, reply_to=reply, mail_from=mail_from)
