"""The composition root: ``build_services`` is the only place that wires config to code."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from dunmail.config import Config
from dunmail.services.bank import BankService
from dunmail.services.customers import Customers
from dunmail.services.desk import Desk
from dunmail.services.dunning import DunningService
from dunmail.services.inbound import Inbound
from dunmail.services.inbox import Inbox
from dunmail.services.ledger import LedgerService
from dunmail.services.link_keys import LinkKeys
from dunmail.services.pdfs import Pdfs
from dunmail.services.previews import Previews
from dunmail.services.sending import Sending
from dunmail.services.suppressions import Suppressions
from dunmail.web.accounts import Accounts
from dunmail.wiring import (
    configured_attach_pdf,
    ensure_dev_keys,
    link_purposes,
    previous_link_keys,
    sync_tenants,
)
from mailer.clock import Clock
from mailer.config import DeliveryMode, SMTPEndpoint
from mailer.content.overrides import stored_overrides
from mailer.content.render import Renderer
from mailer.db import create_schema, make_engine
from mailer.errors import ConfigError
from mailer.outbound.assemble import Assembler
from mailer.outbound.dispatch import Dispatcher
from mailer.outbound.dkim import DKIMSigner
from mailer.outbound.identity import alignment_problem, sender_identity, signing_keys
from mailer.outbound.links import DownloadLinks, LinkMinter
from mailer.outbound.queue import Queue
from mailer.outbound.requests import SendingProfile
from mailer.outbound.smtp import SMTPTransport
from mailer.outbound.transport import Transport
from mailer.outbound.verp import derive_key
from mailer.outbound.webhooks import Webhooks
from mailer.tenants import Tenants
from scheduler.dunning import Dunning
from scheduler.events import EventPass
from scheduler.preflight import Preflight
from scheduler.rules import RulesBook
from scheduler.statements import StatementPass
from scheduler.triggers import Triggers

if TYPE_CHECKING:  # WeasyPrint is imported only when PDFs are switched on
    from mailer.content.pdfstore import PDFRendering, PDFStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    """Everything a command needs, built once from the config: named parts, each built in
    :func:`build_services` with its collaborators. The services hold them and close them; they
    do nothing else."""

    config: Config
    clock: Clock
    engine: Engine  # the tests read the database through it
    tenants: Tenants  # mailer/tenants.py: slug <-> id, each tenant's table
    ledger: LedgerService  # imports, an invoice marked sent by hand
    bank: BankService  # dunmail/services/bank.py: bank statements in, the unmatched queue
    sending: Sending  # dunmail/services/sending.py: by hand, retries, delivery passes
    dunning: DunningService  # dunmail/services/dunning.py: tick and plan over the passes
    inbound: Inbound  # returned mail coming in: ingest, receive, poll, reprocess
    inbox: Inbox  # the AR inbox's threads and a clerk's actions on them
    customers: Customers  # the clerk's look-ups: customers, documents, outbox, blocks, resend
    suppressions: Suppressions  # who is not mailed, blocking and unblocking by hand
    desk: Desk  # holds, template overrides, outbox listings
    previews: Previews  # dunmail/services/previews.py: an email as it would be sent, sent nowhere
    links: LinkKeys  # the keys that prove a link or a VERP address is ours
    pdfs: Pdfs  # the PDF store and renderer; started by ``dunmail run``
    assembler: Assembler
    renderer: Renderer
    transports: list[Transport]  # closed with the services
    webhooks: Webhooks  # mailer/outbound/webhooks.py
    accounts: Accounts  # dunmail/web/accounts.py: users, sign-ins, web sessions, API keys
    # (tenant_id, kind) -> {part: source}: the tenant's own templates (mailer/content/overrides.py)
    overrides: Callable[[int, str], Mapping[str, str]] | None = None

    async def close(self) -> None:
        """Close the SMTP connections and the PDF workers, then the database's pool."""
        for transport in self.transports:
            await transport.close()
        await self.pdfs.close()
        self.engine.dispose()


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
    relay mode share one pooled relay transport and each own-SMTP tenant gets its own, even
    when its server shares the relay's host and port.

    ``pdfs`` switches PDF attachments on (True) or off (False); by default they are on when any
    tenant sends a kind with its PDF attached, so a config without PDFs starts no process pool.
    They are rendered by ``pdf_renderer`` (default: a :class:`~mailer.content.pdf_pool.PDFRenderer`
    process
    pool whose workers start on the first render). Which tenant attaches which kind's PDF is
    ``[tenants.<slug>.emails.<kind>] attach_pdf``; ``attach_pdf(tenant_id, kind)`` replaces
    that in tests.
    """
    engine = make_engine(config.database.url)
    if migrate:
        create_schema(engine)
    tenant_ids = sync_tenants(engine, config.tenants, now=clock.now())
    verp_key = derive_key(config.secret_key(), "verp")
    transports: dict[str, Transport] = {}

    def transport_for(owner: str, endpoint: SMTPEndpoint) -> Transport:
        """One pool per endpoint identity: the relay's (shared by every relay-mode tenant) and
        one per own-SMTP tenant, keyed by who owns it and not by host:port, so a tenant whose
        server shares the relay's host and port still has its own connections, limits,
        credentials and size budget (mailer/outbound/smtp.py::SMTPTransport)."""
        if transport is not None:
            return transport
        if owner not in transports:
            transports[owner] = SMTPTransport(endpoint, owner=owner)
        return transports[owner]

    profiles: dict[int, SendingProfile] = {}
    for slug, tenant in config.tenants.items():
        endpoint = tenant.smtp if tenant.delivery is DeliveryMode.SMTP else config.relay
        if endpoint is None:  # the TenantConfig validator already refuses this
            raise ConfigError(f"tenants.{slug}: delivery = 'smtp' needs an smtp table")
        keys = signing_keys(tenant, config.relay)
        if config.env == "dev":
            ensure_dev_keys(keys)
        if (problem := alignment_problem(tenant, config.relay)) is not None:
            log.warning("tenants.%s: %s", slug, problem)
        profiles[tenant_ids[slug]] = SendingProfile(
            tenant_id=tenant_ids[slug],
            slug=slug,
            transport=transport_for(
                f"tenant:{slug}" if tenant.delivery is DeliveryMode.SMTP else "relay", endpoint
            ),
            signer=DKIMSigner(keys),
            identity=sender_identity(tenant, config.relay, verp_key=verp_key),
            rate_per_minute=tenant.rate_per_minute,
            max_message_bytes=endpoint.max_message_bytes,
        )
    pdf_store: PDFStore | None = None
    pdf_passes: PDFStore | None = None
    if pdfs is None:
        pdfs = any(
            tenant.sends(kind) and (tenant.attaches_pdf(kind) or tenant.attaches_invoices(kind))
            for tenant in config.tenants.values()
            for kind in tenant.emails
        )
    if pdfs or pdf_renderer is not None:
        from mailer.content.pdf_pool import PDFRenderer
        from mailer.content.pdfstore import PDFStore

        limits = config.pdf
        pdf_renderer = pdf_renderer or PDFRenderer(
            workers=limits.workers,
            render_seconds=limits.render_seconds,
            max_pages=limits.max_pages,
            max_worker_mb=limits.max_worker_mb,
        )
        # One tenant renders in at most workers - 1 processes: another tenant finds one free.
        count = getattr(pdf_renderer, "workers", 0)
        pdf_store = PDFStore(
            engine, renderer=pdf_renderer, clock=clock, tenant_slots=max(1, count - 1)
        )
        pdf_passes = pdf_store.for_passes(None)  # patient until Pdfs.start (dunmail run)
    link_key = derive_key(config.secret_key(), "links")
    links = DownloadLinks(key=link_key, base_url=f"{config.web.public_url}/l/")
    minter = LinkMinter(
        key=link_key,
        base_url=config.web.public_url,
        days_after_due=config.web.link_days_after_due,
        days=config.web.link_days,
    )
    overrides = stored_overrides(engine)
    renderer = Renderer()
    assembler = Assembler(
        renderer,
        pdfs=pdf_passes,
        attach_pdf=attach_pdf or configured_attach_pdf(config, tenant_ids),
        download_links=links,
        overrides=overrides,
        links=minter,
        link_purposes=link_purposes(config, tenant_ids),
    )
    tenants = Tenants(config.tenants, tenant_ids)
    rules = RulesBook(tenants)
    queue = Queue(renderer, tenants=tenants)
    triggers = Triggers(tenants=tenants, queue=queue, clock=clock)
    preflight = Preflight(rules=rules, triggers=triggers)
    webhooks = Webhooks(config.tenants, tenant_ids, batch_size=config.delivery.batch_size)
    for name in webhooks.missing_secrets():
        log.warning("webhooks: $%s is not set; deliveries signed with it wait until it is", name)
    dispatcher = Dispatcher(
        engine,
        clock=clock,
        profiles=profiles,
        assembler=assembler,
        policy=config.delivery,
        preflight=preflight.check,
        window=preflight.window,
        webhooks=webhooks,
    )
    sending = Sending(
        engine,
        clock=clock,
        tenants=tenants,
        rules=rules,
        triggers=triggers,
        queue=queue,
        dispatcher=dispatcher,
        webhooks=webhooks,
    )
    batch_size = config.delivery.batch_size
    dunning = DunningService(
        clock=clock,
        tenants=tenants,
        rules=rules,
        invoices=Dunning(
            engine,
            tenant_ids=tenant_ids.values(),
            rules=rules,
            triggers=triggers,
            batch_size=batch_size,
        ),
        statements=StatementPass(
            engine, tenant_ids=tenant_ids.values(), rules=rules, batch_size=batch_size
        ),
        events=EventPass(
            engine,
            tenant_ids=tenant_ids.values(),
            triggers=triggers,
            rules=rules,
            batch_size=batch_size,
        ),
        sending=sending,
    )
    used: Sequence[Transport] = [transport] if transport is not None else list(transports.values())

    ledger = LedgerService(engine, config=config, clock=clock, tenants=tenants)
    services = Services(
        config=config,
        clock=clock,
        engine=engine,
        sending=sending,
        dunning=dunning,
        tenants=tenants,
        ledger=ledger,
        bank=BankService(engine, clock=clock, tenants=tenants, ledger=ledger),
        inbound=Inbound(
            engine,
            config=config,
            clock=clock,
            tenants=tenants,
            verp_key=verp_key,
            webhooks=webhooks,
            queue=queue,
        ),
        inbox=Inbox(engine, clock=clock, tenants=tenants, queue=queue, dispatcher=dispatcher),
        customers=Customers(engine, clock=clock, tenants=tenants),
        suppressions=Suppressions(engine, clock=clock, tenants=tenants),
        desk=Desk(engine, clock=clock, tenants=tenants, renderer=renderer),
        previews=Previews(
            engine,
            clock=clock,
            tenants=tenants,
            triggers=triggers,
            dispatcher=dispatcher,
            renderer=renderer,
            assembler=assembler,
        ),
        links=LinkKeys(keys=[link_key, *previous_link_keys(config)], verp_key=verp_key),
        pdfs=Pdfs(
            pass_wait_seconds=config.pdf.pass_wait_seconds,
            store=pdf_store,
            renderer=pdf_renderer,
            passes=pdf_passes,
        ),
        assembler=assembler,
        renderer=renderer,
        transports=list(used),
        webhooks=webhooks,
        accounts=Accounts(engine, clock, config.web),
        overrides=overrides,
    )
    return services
