"""PURE: who a tenant's email says it is from, where replies go, and where bounces come back."""

from __future__ import annotations

from dataclasses import dataclass
from email.headerregistry import Address
from functools import lru_cache

from tld import get_fld

from mailer.address import make_address
from mailer.config import DeliveryMode, DKIMConfig, RelayConfig
from mailer.outbound.compose import Envelope
from mailer.outbound.verp import issue_verp
from mailer.tenant_config import TenantConfig


@dataclass(frozen=True)
class SenderIdentity:
    """A tenant's fixed sender headers, worked out once; only the VERP sender varies by mail."""

    from_addr: Address
    reply_to: Address | None
    bounce_domain: str
    message_id_domain: str
    verp_key: bytes

    def envelope(self, uid: str) -> Envelope:
        """From, Reply-To and the VERP envelope sender for message ``uid``."""
        mail_from = issue_verp(uid, key=self.verp_key, domain=self.bounce_domain)
        return Envelope(from_addr=self.from_addr, reply_to=self.reply_to, mail_from=mail_from)

    def return_path(self, uid: str, recipient: str) -> str:
        """The VERP envelope sender of message ``uid``'s transaction to ``recipient``: its
        token proves both, so a bounce to it can act on that recipient and no other."""
        return issue_verp(uid, key=self.verp_key, domain=self.bounce_domain, recipient=recipient)


def bounce_domain(tenant: TenantConfig, relay: RelayConfig) -> str:
    """The VERP domain: the tenant's own if it set one, else the relay's."""
    return tenant.bounce_domain or relay.domain


def from_domain(tenant: TenantConfig, relay: RelayConfig) -> str:
    """The domain of the tenant's From address: the relay's in relay mode, else its own."""
    if tenant.delivery is DeliveryMode.RELAY:
        return relay.domain.lower()
    return tenant.email.rpartition("@")[2].lower()


def signing_keys(tenant: TenantConfig, relay: RelayConfig) -> list[DKIMConfig]:
    """The DKIM keys that sign the tenant's mail, each once: in relay mode the relay's keys
    first (their d= is the From domain), then the tenant's own, which add its reputation."""
    keys = [*relay.dkim, *tenant.dkim] if tenant.delivery is DeliveryMode.RELAY else tenant.dkim
    unique: dict[tuple[str, str], DKIMConfig] = {}
    for key in keys:
        unique.setdefault((key.domain.lower(), key.selector), key)
    return list(unique.values())


def aligned(from_dom: str, signing_domain: str) -> bool:
    """DMARC relaxed alignment (RFC 7489 s3.1.1): both domains share an organisational domain,
    found with the Public Suffix List (``mail.acme.co.uk`` and ``acme.co.uk`` align,
    ``acme.co.uk`` and ``other.co.uk`` do not). Names under no public suffix (``.example``,
    ``.localhost``) align when equal or when one is a subdomain of the other."""
    a, b = from_dom.lower().rstrip("."), signing_domain.lower().rstrip(".")
    if a == b:
        return True
    org_a, org_b = _organisational(a), _organisational(b)
    if org_a is not None or org_b is not None:
        return org_a == org_b
    return a.endswith(f".{b}") or b.endswith(f".{a}")


@lru_cache(maxsize=256)
def _organisational(domain: str) -> str | None:
    """The registrable domain under the Public Suffix List (tld's bundled copy: no network)."""
    found = get_fld(domain, fix_protocol=True, fail_silently=True)
    return found.lower() if isinstance(found, str) else None


def organisational_domain(domain: str) -> str | None:
    """The organisational domain of ``domain`` (RFC 7489 s3.2), None under no public suffix:
    where DMARC looks for a policy when the From domain has none of its own (s6.6.3)."""
    return _organisational(domain.lower().rstrip("."))


def alignment_problem(tenant: TenantConfig, relay: RelayConfig) -> str | None:
    """Why the tenant's mail will not pass DMARC by DKIM, or None when a key aligns with From.

    Not an error: a domain without a DMARC policy, or one aligned by SPF, still delivers. But a
    receiver enforcing ``p=reject`` drops mail whose only aligned identifier is missing.
    """
    domain = from_domain(tenant, relay)
    keys = signing_keys(tenant, relay)
    if any(aligned(domain, key.domain) for key in keys):
        return None
    where = "[[relay.dkim]]" if tenant.delivery is DeliveryMode.RELAY else "its [[dkim]] table"
    signed = ", ".join(dict.fromkeys(key.domain for key in keys)) or "no key at all"
    return (
        f"mail from @{domain} is signed for {signed}: DKIM does not align with From for "
        f"DMARC; add a key for {domain} in {where}"
    )


def message_id_domain(tenant: TenantConfig, relay: RelayConfig) -> str:
    """The right-hand side of Message-IDs: the signing domain, so ids align with DKIM d=."""
    if tenant.dkim:
        return tenant.dkim[0].domain
    if tenant.delivery is DeliveryMode.SMTP:
        return tenant.email.rpartition("@")[2].lower()
    return relay.domain


def sender_identity(tenant: TenantConfig, relay: RelayConfig, *, verp_key: bytes) -> SenderIdentity:
    """The sender identity of ``tenant``.

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
    return SenderIdentity(
        from_addr=from_addr,
        reply_to=reply,
        bounce_domain=bounce_domain(tenant, relay),
        message_id_domain=message_id_domain(tenant, relay),
        verp_key=verp_key,
    )
