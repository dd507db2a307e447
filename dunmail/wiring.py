"""What ``build_services`` reads from the config before it wires anything: the tenants mirrored
into the ledger, dev DKIM keys, which tenant attaches which PDF and offers which link, and the
link keys still valid after a rotation. Kept apart so dunmail/app.py only wires."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import select

from dunmail.config import Config
from mailer.config import DKIMConfig
from mailer.db import session_scope
from mailer.errors import ConfigError
from mailer.ledger.models import Tenant
from mailer.outbound.dkim import generate_key
from mailer.outbound.verp import derive_key
from mailer.tenant_config import TenantConfig

log = logging.getLogger(__name__)


def previous_link_keys(config: Config) -> list[bytes]:
    """Link keys retired by a rotation that still verify (``[web] previous_link_keys_env``):
    each env var holds an old master secret, and the link key is derived from it as before."""
    keys = []
    for name in config.web.previous_link_keys_env:
        value = os.environ.get(name)
        if not value:
            raise ConfigError(f"web.previous_link_keys_env: ${name} is not set")
        keys.append(derive_key(value.encode(), "links"))
    return keys


def link_purposes(config: Config, tenant_ids: Mapping[str, int]) -> Callable[[int], frozenset[str]]:
    """Which buttons each tenant's emails carry: View and Download always; Pay, Update payment
    and Manage only where ``[tenants.<slug>.payments]`` says where they lead."""
    offered: dict[int, frozenset[str]] = {}
    for slug, tenant in config.tenants.items():
        payments = tenant.payments
        extra = {
            purpose
            for purpose, url in (
                ("pay", payments.pay_url),
                ("update_payment", payments.update_payment_url),
                ("manage", payments.manage_url),
            )
            if url
        }
        offered[tenant_ids[slug]] = frozenset({"view", "download", *extra})

    def purposes(tenant_id: int) -> frozenset[str]:
        return offered.get(tenant_id, frozenset({"view", "download"}))

    return purposes


def configured_attach_pdf(config: Config, tenant_ids: dict[str, int]) -> Callable[[int, str], bool]:
    """``attach_pdf(tenant_id, kind)`` as ``[tenants.<slug>.emails.<kind>]`` configures it."""
    tenants = {tenant_ids[slug]: tenant for slug, tenant in config.tenants.items()}

    def attach_pdf(tenant_id: int, kind: str) -> bool:
        tenant = tenants.get(tenant_id)
        return tenant is not None and kind in tenant.emails and tenant.attaches_pdf(kind)

    return attach_pdf


def ensure_dev_keys(keys: Sequence[DKIMConfig]) -> None:
    """In ``env = "dev"`` a missing DKIM key is generated, so the demo signs out of the box."""
    for key in keys:
        if not key.key_file.exists():
            record = generate_key(key.key_file, key.algorithm)
            log.info(
                "generated DKIM key %s; publish %s._domainkey.%s TXT %r",
                key.key_file,
                key.selector,
                key.domain,
                record,
            )


def sync_tenants(
    engine: Engine, tenants: dict[str, TenantConfig], *, now: datetime
) -> dict[str, int]:
    """Mirror ``[tenants.*]`` into the ledger so rows can reference them; returns slug -> id."""
    ids: dict[str, int] = {}
    with session_scope(engine) as session:
        existing = {t.slug: t for t in session.exec(select(Tenant)).all()}
        for slug, cfg in tenants.items():
            row = existing.get(slug) or Tenant(
                slug=slug, name=cfg.name, email=cfg.email, created_at=now
            )
            row.name = cfg.name
            row.email = cfg.email
            row.delivery = cfg.delivery
            row.dkim_domain = cfg.dkim[0].domain if cfg.dkim else None
            row.dkim_selector = cfg.dkim[0].selector if cfg.dkim else None
            row.dkim_key_file = str(cfg.dkim[0].key_file) if cfg.dkim else None
            row.bounce_domain = cfg.bounce_domain
            row.time_zone = cfg.time_zone
            row.locale = cfg.locale
            session.add(row)
            session.flush()
            ids[slug] = row.id or 0
    return ids
