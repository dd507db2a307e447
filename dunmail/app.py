"""The composition root: ``build_services`` is the only place that wires config to code."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from dunmail.config import Config
from mailer.assemble import Assembler
from mailer.clock import Clock
from mailer.config import DeliveryMode, SMTPEndpoint, TenantConfig
from mailer.context import invoice_context
from mailer.db import create_schema, make_engine, session_scope
from mailer.dkim import DKIMSigner, generate_key
from mailer.errors import ConfigError, MailerError, NotFoundError
from mailer.identity import sender_identity
from mailer.ledger import ImportReport, find_invoice, import_document, invoice_contacts
from mailer.links import DownloadLinks
from mailer.models import (
    Customer,
    Invoice,
    InvoiceStatus,
    Message,
    MessageRecipient,
    Payment,
    PaymentAllocation,
    TemplateOverride,
    Tenant,
)
from mailer.outbox import EnqueueRequest, Outbox, PassReport, SendingProfile
from mailer.overrides import (
    fetch_overrides,
    list_overrides,
    reset_overrides,
    store_override,
    stored_overrides,
)
from mailer.render import Renderer
from mailer.transport import SMTPTransport, Transport
from mailer.verp import derive_key

if TYPE_CHECKING:  # WeasyPrint is imported only when PDFs are switched on
    from mailer.pdfstore import PDFRendering, PDFStore

log = logging.getLogger(__name__)

INVOICE_KINDS = ("new_invoice", "invoice_reminder", "late_payment_reminder")


@dataclass(frozen=True)
class InvoiceEmail:
    """An invoice email's rows, render context and recipients, before anything is stored."""

    invoice: Invoice
    customer: Customer
    context: dict[str, Any]
    recipients: tuple[str, ...]


@dataclass
class Services:
    """Everything a command needs, built once from the config."""

    config: Config
    clock: Clock
    engine: Engine
    outbox: Outbox
    assembler: Assembler
    renderer: Renderer
    tenant_ids: dict[str, int]
    transports: list[Transport]
    pdf_store: PDFStore | None = None
    pdf_renderer: PDFRendering | None = None  # closed with the services when it has close()
    # (tenant_id, kind) -> {part: source}: the tenant's own templates (mailer/overrides.py)
    overrides: Callable[[int, str], Mapping[str, str]] | None = None

    async def close(self) -> None:
        for transport in self.transports:
            await transport.close()
        close_renderer = getattr(self.pdf_renderer, "close", None)
        if close_renderer is not None:
            await close_renderer()
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

    def tenant_config(self, tenant_id: int) -> tuple[str, TenantConfig]:
        """The slug and ``[tenants.<slug>]`` table of the tenant with ``tenant_id``."""
        for slug, known in self.tenant_ids.items():
            if known == tenant_id:
                return slug, self.config.tenants[slug]
        raise NotFoundError(f"no configured tenant has id {tenant_id}")

    def invoice_email(
        self, session: Session, *, tenant_id: int, number: str, kind: str, sending: bool = True
    ) -> InvoiceEmail:
        """What the ``kind`` email of invoice ``number`` says and to whom, read without writing.

        The one place an invoice email's context is built: the outbox stores it, the preview
        renders it (``sending=False``: a draft can be previewed). Branding lives in the config,
        so it is added here, not in the ledger.
        """
        now = self.clock.now()
        _, config = self.tenant_config(tenant_id)
        invoice = find_invoice(session, tenant_id=tenant_id, number=number)
        if sending and invoice.status in (InvoiceStatus.DRAFT, InvoiceStatus.VOID):
            raise MailerError(f"invoice {number} is {invoice.status.value}; it is not sent")
        contacts = invoice_contacts(session, invoice)
        if not contacts:
            raise MailerError(f"invoice {number}: its customer has no contact to send to")
        tenant_row = session.get(Tenant, tenant_id)
        customer = session.get(Customer, invoice.customer_id)
        if tenant_row is None or customer is None:
            raise NotFoundError(f"invoice {number}: tenant or customer row is missing")
        context = invoice_context(
            tenant=tenant_row,
            customer=customer,
            invoice=invoice,
            now=now,
            branding=config.branding.as_context(),
        )
        if kind == "thank_you":
            paid_at = session.exec(
                select(Payment.received_at)
                .join(PaymentAllocation, col(PaymentAllocation.payment_id) == col(Payment.id))
                .where(col(PaymentAllocation.invoice_id) == invoice.id)
                .order_by(col(Payment.received_at).desc())
            ).first()
            context["paid_at"] = (paid_at or now).isoformat()
        return InvoiceEmail(
            invoice=invoice,
            customer=customer,
            context=context,
            recipients=tuple(c.email for c in contacts),
        )

    def enqueue_invoice_email(
        self, number: str, *, kind: str, tenant: str | None, manual: bool
    ) -> Message | None:
        """Put the ``kind`` email for invoice ``number`` in the outbox (idempotent).

        A kind the tenant has switched off is skipped (None, logged) when the engine would
        send it by itself, and refused when a person asks for it: they should know why
        nothing went out rather than find out from the customer.
        """
        if kind not in INVOICE_KINDS:
            raise MailerError(f"unknown invoice email kind {kind!r}: use one of {INVOICE_KINDS}")
        tenant_id = self.tenant_id(tenant)
        slug, config = self.tenant_config(tenant_id)
        if not config.sends(kind):
            if manual:
                raise MailerError(
                    f"{kind} emails are switched off for tenant {slug}: "
                    f"set [tenants.{slug}.emails.{kind}] enabled = true to send them"
                )
            log.info("invoice %s: %s is switched off for tenant %s; not queued", number, kind, slug)
            return None
        now = self.clock.now()
        with session_scope(self.engine) as session:
            email = self.invoice_email(session, tenant_id=tenant_id, number=number, kind=kind)
            invoice = email.invoice
            request = EnqueueRequest(
                tenant_id=tenant_id,
                kind=kind,
                recipients=list(email.recipients),
                context=email.context,
                document=f"invoice:{invoice.id}",
                version=invoice.version,
                customer_id=email.customer.id,
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
        assert message is not None  # a manual send of a switched-off kind raises instead
        await self.outbox.deliver_due(only=[message.id or 0])
        with Session(self.engine) as session:
            refreshed = session.get(Message, message.id)
        return refreshed or message

    async def deliver(self) -> PassReport:
        """One delivery pass over everything due at the clock's time."""
        return await self.outbox.deliver_due()

    # -- template overrides ------------------------------------------------------------------

    def save_template(
        self, kind: str, part: str, source: str, *, tenant: str | None, updated_by: str
    ) -> TemplateOverride:
        """Validate and store a tenant's template; a refusal (TemplateError) stores nothing."""
        tenant_id = self.tenant_id(tenant)
        with session_scope(self.engine) as session:
            row = store_override(
                session,
                tenant_id=tenant_id,
                kind=kind,
                part=part,
                source=source,
                updated_by=updated_by,
                now=self.clock.now(),
                renderer=self.renderer,
            )
            session.expunge(row)
            return row

    def reset_template(self, kind: str, *, tenant: str | None, part: str | None = None) -> int:
        """Go back to the built-in template(s) of ``kind``; returns how many were removed."""
        tenant_id = self.tenant_id(tenant)
        with session_scope(self.engine) as session:
            return reset_overrides(session, tenant_id=tenant_id, kind=kind, part=part)

    def template_overrides(self, kind: str, *, tenant: str | None) -> dict[str, str]:
        """The tenant's overrides of ``kind``: part -> source."""
        tenant_id = self.tenant_id(tenant)
        with Session(self.engine) as session:
            return fetch_overrides(session, tenant_id=tenant_id, kind=kind)

    def template_list(self, *, tenant: str | None) -> list[TemplateOverride]:
        """Every override the tenant has."""
        tenant_id = self.tenant_id(tenant)
        with Session(self.engine) as session:
            rows = list_overrides(session, tenant_id=tenant_id)
            session.expunge_all()
            return rows

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
    pdfs: bool | None = None,
    pdf_renderer: PDFRendering | None = None,
    attach_pdf: Callable[[int, str], bool] | None = None,
) -> Services:
    """Wire config, clock and transport into services.

    ``transport`` replaces every tenant's SMTP transport (tests, dry runs); otherwise tenants in
    relay mode share one pooled relay transport and own-SMTP tenants get one per endpoint.

    ``pdfs`` switches PDF attachments on (True) or off (False); by default they are on when any
    tenant sends a kind with its PDF attached, so a config without PDFs starts no process pool.
    They are rendered by ``pdf_renderer`` (default: a :class:`~mailer.pdf.PDFRenderer` process
    pool whose workers start on the first render). Which tenant attaches which kind's PDF is
    ``[tenants.<slug>.emails.<kind>] attach_pdf``; ``attach_pdf(tenant_id, kind)`` replaces
    that in tests.
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
            max_message_bytes=endpoint.max_message_bytes,
        )
    pdf_store: PDFStore | None = None
    if pdfs is None:
        pdfs = any(
            tenant.sends(kind) and tenant.attaches_pdf(kind)
            for tenant in config.tenants.values()
            for kind in tenant.emails
        )
    if pdfs or pdf_renderer is not None:
        from mailer.pdf import PDFRenderer
        from mailer.pdfstore import PDFStore

        pdf_renderer = pdf_renderer or PDFRenderer()
        pdf_store = PDFStore(engine, renderer=pdf_renderer, clock=clock)
    # Placeholder base until the web app's public URL is configurable: the relay's domain,
    # where dunmail/web will serve /d/<token> after verify_link(purpose="download").
    links = DownloadLinks(
        key=derive_key(config.secret_key(), "links"),
        base_url=f"https://{config.relay.domain}/d/",
    )
    overrides = stored_overrides(engine)
    renderer = Renderer()
    assembler = Assembler(
        renderer,
        pdfs=pdf_store,
        attach_pdf=attach_pdf or _configured_attach_pdf(config, tenant_ids),
        download_links=links,
        overrides=overrides,
    )
    outbox = Outbox(
        engine, clock=clock, profiles=profiles, assembler=assembler, policy=config.delivery
    )
    used: Sequence[Transport] = [transport] if transport is not None else list(transports.values())
    return Services(
        config=config,
        clock=clock,
        engine=engine,
        outbox=outbox,
        assembler=assembler,
        renderer=renderer,
        tenant_ids=tenant_ids,
        transports=list(used),
        pdf_store=pdf_store,
        pdf_renderer=pdf_renderer,
        overrides=overrides,
    )


def _configured_attach_pdf(
    config: Config, tenant_ids: dict[str, int]
) -> Callable[[int, str], bool]:
    """``attach_pdf(tenant_id, kind)`` as ``[tenants.<slug>.emails.<kind>]`` configures it."""
    tenants = {tenant_ids[slug]: tenant for slug, tenant in config.tenants.items()}

    def attach_pdf(tenant_id: int, kind: str) -> bool:
        tenant = tenants.get(tenant_id)
        return tenant is not None and kind in tenant.emails and tenant.attaches_pdf(kind)

    return attach_pdf


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
