"""The composition root: ``build_services`` is the only place that wires config to code."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from dunmail.config import Config
from mailer.clock import Clock
from mailer.config import DeliveryMode, SMTPEndpoint, TenantConfig
from mailer.context import invoice_context
from mailer.db import create_schema, make_engine, session_scope
from mailer.dkim import DKIMSigner, generate_key
from mailer.errors import ConfigError, MailerError, NotFoundError
from mailer.identity import sender_identity
from mailer.ledger import ImportReport, find_invoice, import_document, invoice_contacts
from mailer.models import Customer, InvoiceStatus, Message, MessageRecipient, Tenant
from mailer.outbox import EnqueueRequest, Outbox, PassReport, SendingProfile
from mailer.render import Renderer
from mailer.transport import SMTPTransport, Transport
from mailer.verp import derive_key

log = logging.getLogger(__name__)

INVOICE_KINDS = ("new_invoice", "invoice_reminder", "late_payment_reminder")


@dataclass
class Services:
    """Everything a command needs, built once from the config."""

    config: Config
    clock: Clock
    engine: Engine
    outbox: Outbox
    renderer: Renderer
    tenant_ids: dict[str, int]
    transports: list[Transport]

    async def close(self) -> None:
        for transport in self.transports:
            await transport.close()
        self.engine.dispose()

    # -- tenants -----------------------------------------------------------------------------

    def tenant_id(self, slug: str | None) -> int:
        """The id of tenant ``slug``; with one tenant configured the slug may be omitted."""
        if slug is None:
            if len(self.tenant_ids) == 1:
                return next(iter(self.tenant_ids.values()))
            raise ConfigError(
                f"several tenants are configured ({', '.join(sorted(self.tenant_ids))}): "
                "say which with --tenant"
            )
        try:
            return self.tenant_ids[slug]
        except KeyError:
            raise ConfigError(f"no tenant {slug!r} in the configuration") from None

    # -- commands ----------------------------------------------------------------------------

    def import_document(self, data: object, *, tenant: str | None) -> ImportReport:
        """Upsert a JSON import document; invalid records are reported, the rest applied."""
        tenant_id = self.tenant_id(tenant)
        with session_scope(self.engine) as session:
            return import_document(session, tenant_id=tenant_id, data=data, now=self.clock.now())

    def enqueue_invoice_email(
        self, number: str, *, kind: str, tenant: str | None, manual: bool
    ) -> Message:
        """Put the ``kind`` email for invoice ``number`` in the outbox (idempotent)."""
        if kind not in INVOICE_KINDS:
            raise MailerError(f"unknown invoice email kind {kind!r}: use one of {INVOICE_KINDS}")
        tenant_id = self.tenant_id(tenant)
        now = self.clock.now()
        with session_scope(self.engine) as session:
            invoice = find_invoice(session, tenant_id=tenant_id, number=number)
            if invoice.status in (InvoiceStatus.DRAFT, InvoiceStatus.VOID):
                raise MailerError(f"invoice {number} is {invoice.status.value}; it is not sent")
            contacts = invoice_contacts(session, invoice)
            if not contacts:
                raise MailerError(f"invoice {number}: its customer has no contact to send to")
            tenant_row = session.get(Tenant, tenant_id)
            customer = session.get(Customer, invoice.customer_id)
            if tenant_row is None or customer is None:
                raise NotFoundError(f"invoice {number}: tenant or customer row is missing")
            request = EnqueueRequest(
                tenant_id=tenant_id,
                kind=kind,
                recipients=[c.email for c in contacts],
                context=invoice_context(
                    tenant=tenant_row, customer=customer, invoice=invoice, now=now
                ),
                document=f"invoice:{invoice.id}",
                version=invoice.version,
                customer_id=customer.id,
                invoice_id=invoice.id,
                manual=manual,
            )
            message = self.outbox.enqueue(session, request, now=now)
            if kind == "new_invoice" and invoice.sent_at is None:
                invoice.sent_at = now
            return message

    async def send_invoice(self, number: str, *, kind: str, tenant: str | None) -> Message:
        """A manual send: enqueue, then deliver that one message now."""
        message = self.enqueue_invoice_email(number, kind=kind, tenant=tenant, manual=True)
        await self.outbox.deliver_due(only=[message.id or 0])
        with Session(self.engine) as session:
            refreshed = session.get(Message, message.id)
        return refreshed or message

    async def deliver(self) -> PassReport:
        """One delivery pass over everything due at the clock's time."""
        return await self.outbox.deliver_due()

    def outbox_rows(self, *, limit: int = 200) -> list[dict[str, Any]]:
        """The newest outbox messages with their recipients, for ``dunmail outbox``."""
        with Session(self.engine) as session:
            messages = session.exec(
                select(Message).order_by(col(Message.id).desc()).limit(limit)
            ).all()
            ids = [m.id for m in messages]
            recipients = session.exec(
                select(MessageRecipient).where(col(MessageRecipient.message_id).in_(ids))
            ).all()
            slugs = {t.id: t.slug for t in session.exec(select(Tenant)).all()}
        by_message: dict[int, list[MessageRecipient]] = {}
        for r in recipients:
            by_message.setdefault(r.message_id, []).append(r)
        return [_row(m, slugs, by_message.get(m.id or 0, [])) for m in messages]


def _row(m: Message, slugs: dict[int | None, str], rcpts: list[MessageRecipient]) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": m.id,
        "uid": m.uid,
        "tenant": slugs.get(m.tenant_id),
        "kind": m.kind,
        "document": m.context.get("invoice", {}).get("number"),
        "status": m.status.value,
        "attempts": m.attempts,
        "created_at": iso(m.created_at),
        "next_attempt_at": iso(m.next_attempt_at),
        "finished_at": iso(m.finished_at),
        "last_error": m.last_error,
        "skip_reason": m.skip_reason,
        "recipients": [
            {"address": r.address, "status": r.status.value, "code": r.code} for r in rcpts
        ],
    }


def build_services(
    config: Config,
    clock: Clock,
    transport: Transport | None = None,
    *,
    migrate: bool = True,
) -> Services:
    """Wire config, clock and transport into services.

    ``transport`` replaces every tenant's SMTP transport (tests, dry runs); otherwise tenants in
    relay mode share one pooled relay transport and own-SMTP tenants get one per endpoint.
    """
    engine = make_engine(config.database.url)
    if migrate:
        create_schema(engine)
    tenant_ids = _sync_tenants(engine, config.tenants, now=clock.now())
    verp_key = derive_key(config.secret_key(), "verp")
    transports: dict[str, Transport] = {}

    def transport_for(endpoint: SMTPEndpoint) -> Transport:
        if transport is not None:
            return transport
        if endpoint.key not in transports:
            transports[endpoint.key] = SMTPTransport(endpoint)
        return transports[endpoint.key]

    profiles: dict[int, SendingProfile] = {}
    for slug, tenant in config.tenants.items():
        endpoint = tenant.smtp if tenant.delivery is DeliveryMode.SMTP else config.relay
        if endpoint is None:  # the TenantConfig validator already refuses this
            raise ConfigError(f"tenants.{slug}: delivery = 'smtp' needs an smtp table")
        if config.env == "dev":
            _ensure_dev_keys(tenant)
        profiles[tenant_ids[slug]] = SendingProfile(
            tenant_id=tenant_ids[slug],
            slug=slug,
            transport=transport_for(endpoint),
            signer=DKIMSigner(tenant.dkim),
            identity=sender_identity(tenant, config.relay, verp_key=verp_key),
            rate_per_minute=tenant.rate_per_minute,
        )
    outbox = Outbox(
        engine, clock=clock, profiles=profiles, renderer=Renderer(), policy=config.delivery
    )
    used: Sequence[Transport] = [transport] if transport is not None else list(transports.values())
    return Services(
        config=config,
        clock=clock,
        engine=engine,
        outbox=outbox,
        renderer=Renderer(),
        tenant_ids=tenant_ids,
        transports=list(used),
    )


def _ensure_dev_keys(tenant: TenantConfig) -> None:
    """In ``env = "dev"`` a missing DKIM key is generated, so the demo signs out of the box."""
    for key in tenant.dkim:
        if not key.key_file.exists():
            record = generate_key(key.key_file, key.algorithm)
            log.info(
                "generated DKIM key %s; publish %s._domainkey.%s TXT %r",
                key.key_file,
                key.selector,
                key.domain,
                record,
            )


def _sync_tenants(
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
