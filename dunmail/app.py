"""The composition root: ``build_services`` is the only place that wires config to code."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from dunmail.config import Config
from dunmail.desk_services import DeskServices
from dunmail.inbox_services import InboxServices
from dunmail.send_services import SendServices
from mailer.clock import Clock
from mailer.config import DeliveryMode, DKIMConfig, SMTPEndpoint
from mailer.content.context import invoice_context, party_context
from mailer.content.kinds import INVOICE_EMAILS, Kind
from mailer.content.overrides import stored_overrides
from mailer.content.render import Renderer
from mailer.content.statement import StatementStyle
from mailer.db import create_schema, make_engine, session_scope
from mailer.dunning_config import StatementSchedule
from mailer.errors import ConfigError, MailerError, NotFoundError
from mailer.ledger.importlock import BatchCommits, ImportLocks
from mailer.ledger.imports import (
    Commits,
    ImportReport,
    contacts_by_customer,
    customer_contacts,
    find_invoice,
    import_document,
    invoice_contacts,
)
from mailer.ledger.localtime import customer_zone, days_between
from mailer.ledger.models import (
    Customer,
    Event,
    EventStatus,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentAllocation,
    Tenant,
)
from mailer.outbound.assemble import Assembler
from mailer.outbound.dkim import DKIMSigner, generate_key
from mailer.outbound.identity import alignment_problem, sender_identity, signing_keys
from mailer.outbound.links import DownloadLinks, LinkMinter
from mailer.outbound.models import Message, MessageStatus
from mailer.outbound.outbox import EnqueueRequest, Outbox, PassReport, SendingProfile
from mailer.outbound.smtp import SMTPTransport
from mailer.outbound.transport import Transport
from mailer.outbound.verp import derive_key
from mailer.outbound.webhooks import Webhooks
from mailer.tenant_config import TenantConfig
from mailer.tenants import Tenants
from scheduler.cadence import Action, Rules, manual_send
from scheduler.calendar import SendCalendar
from scheduler.dunning import Dunning, DunningReport, PlanEntry, state_of, store_state
from scheduler.events import EventPass, SkipEvent
from scheduler.preflight import Preflight
from scheduler.statements import StatementPass, record_statements

if TYPE_CHECKING:  # WeasyPrint is imported only when PDFs are switched on
    from mailer.content.pdfstore import PDFRendering, PDFStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InvoiceEmail:
    """An invoice email's rows, render context and recipients, before anything is stored."""

    invoice: Invoice
    customer: Customer
    context: dict[str, Any]
    recipients: tuple[str, ...]


@dataclass
class Services(SendServices, DeskServices, InboxServices):
    """Everything a command needs, built once from the config."""

    config: Config
    clock: Clock
    engine: Engine
    outbox: Outbox
    assembler: Assembler
    renderer: Renderer
    tenant_ids: dict[str, int]
    tenants: Tenants
    transports: list[Transport]
    pdf_store: PDFStore | None = None
    pdf_renderer: PDFRendering | None = None  # closed with the services when it has close()
    pdf_passes: PDFStore | None = None  # the outbox's view of pdf_store (start_pdfs)
    # (tenant_id, kind) -> {part: source}: the tenant's own templates (mailer/content/overrides.py)
    overrides: Callable[[int, str], Mapping[str, str]] | None = None
    dunning: Dunning | None = None
    events: EventPass | None = None
    statements: StatementPass | None = None
    _rules: dict[tuple[int, str, str], Rules] = field(default_factory=dict, repr=False)
    verp_key: bytes = field(default=b"", repr=False)  # checks the VERP token of returned mail
    # Keys that verify a link token, the signing one first (then old ones, during rotation).
    link_keys: list[bytes] = field(default_factory=list, repr=False)
    webhooks: Webhooks = field(default_factory=Webhooks)  # mailer/outbound/webhooks.py

    async def start_pdfs(self) -> None:
        """For ``dunmail run``: warm the PDF workers now, and let each delivery pass wait at
        most ``[pdf] pass_wait_seconds`` for a PDF; a slower one finishes rendering off the
        pass and its email goes at a later pass, so no tenant's document holds up the others.
        One-shot commands keep waiting for their PDFs: nothing would finish a render after
        they exit."""
        start = getattr(self.pdf_renderer, "start", None)
        if start is not None:
            await start()
        if self.pdf_passes is not None:
            self.pdf_passes.pass_wait = self.config.pdf.pass_wait_seconds

    async def close(self) -> None:
        for transport in self.transports:
            await transport.close()
        close_renderer = getattr(self.pdf_renderer, "close", None)
        if close_renderer is not None:
            await close_renderer()
        self.engine.dispose()

    # -- tenants -----------------------------------------------------------------------------

    def tenant_id(self, slug: str | None) -> int:
        return self.tenants.id(slug)

    # -- commands ----------------------------------------------------------------------------

    def import_document(
        self, data: object, *, tenant: str | None, wait: float = 0.0
    ) -> ImportReport:
        """Upsert a JSON import document; invalid records are reported, the rest applied.

        Holds the tenant's import lock (another import waits up to ``wait`` seconds, then gets
        a BusyError) and commits in short batches, so the running engine keeps answering; an
        import that dies leaves its committed batches, and running it again completes it
        (mailer/ledger/importlock.py).
        """
        tenant_id = self.tenant_id(tenant)
        db = self.config.database
        locks = ImportLocks(self.engine, lease=timedelta(seconds=db.import_lock_lease_seconds))
        with locks.held(tenant_id, wait=wait) as lease, session_scope(self.engine) as session:
            commits = BatchCommits(
                session,
                renew=lambda: locks.renew(session, lease),
                records=db.import_batch_records,
                seconds=db.import_batch_seconds,
                pause_ratio=db.import_pause_ratio if self.engine.dialect.name == "sqlite" else 0,
            )
            report = self.import_into(session, data, tenant_id=tenant_id, commits=commits)
            commits.commit()
            return report

    def import_into(
        self, session: Session, data: object, *, tenant_id: int, commits: Commits | None = None
    ) -> ImportReport:
        """:meth:`import_document` in the caller's transaction (the JSON API stores its
        Idempotency-Key answer in the same one); nothing is committed here unless ``commits``
        says where."""
        _, config = self.tenant_config(tenant_id)
        return import_document(
            session,
            tenant_id=tenant_id,
            data=data,
            now=self.clock.now(),
            cadences=config.dunning.cadences.keys(),
            grace=config.dunning.grace,
            billed_soon_days=config.dunning.billed_soon_days,
            notice_max_age=timedelta(days=config.dunning.notice_max_age_days),
            commits=commits,
            max_lines=self.config.pdf.max_lines,
        )

    def tenant_slug(self, tenant_id: int) -> str:
        return self.tenants.slug(tenant_id)

    def tenant_config(self, tenant_id: int) -> tuple[str, TenantConfig]:
        return self.tenants.config(tenant_id)

    def invoice_email(
        self, session: Session, *, tenant_id: int, number: str, kind: str, sending: bool = True
    ) -> InvoiceEmail:
        """What the ``kind`` email of invoice ``number`` says and to whom, read without writing.

        The one place an invoice email's context is built: the outbox stores it, the preview
        renders it (``sending=False``: a draft can be previewed). Branding lives in the config,
        so it is added here, not in the ledger.
        """
        invoice = find_invoice(session, tenant_id=tenant_id, number=number)
        if sending and invoice.status in (InvoiceStatus.DRAFT, InvoiceStatus.VOID):
            raise MailerError(f"invoice {number} is {invoice.status.value}; it is not sent")
        customer = session.get(Customer, invoice.customer_id)
        if customer is None:
            raise NotFoundError(f"invoice {number}: its customer row is missing")
        return self._invoice_email(session, invoice, customer, kind)

    def _invoice_email(
        self, session: Session, invoice: Invoice, customer: Customer, kind: str
    ) -> InvoiceEmail:
        contacts = invoice_contacts(session, invoice, now=self.clock.now())
        if not contacts:
            raise MailerError(f"invoice {invoice.number}: its customer has no contact to send to")
        tenant_row = session.get(Tenant, invoice.tenant_id)
        if tenant_row is None:
            raise NotFoundError(f"invoice {invoice.number}: its tenant row is missing")
        context = self._invoice_context(session, tenant_row, invoice, customer, kind)
        return InvoiceEmail(
            invoice=invoice,
            customer=customer,
            context=context,
            recipients=tuple(c.email for c in contacts),
        )

    def _invoice_context(
        self, session: Session, tenant: Tenant, invoice: Invoice, customer: Customer, kind: str
    ) -> dict[str, Any]:
        now = self.clock.now()
        _, config = self.tenant_config(invoice.tenant_id)
        context = invoice_context(
            tenant=tenant,
            customer=customer,
            invoice=invoice,
            now=now,
            branding=config.branding.as_context(),
        )
        if kind == Kind.THANK_YOU:
            paid_at = session.exec(
                select(Payment.received_at)
                .join(PaymentAllocation, col(PaymentAllocation.payment_id) == col(Payment.id))
                .where(col(PaymentAllocation.invoice_id) == invoice.id)
                .order_by(col(Payment.received_at).desc())
            ).first()
            context["paid_at"] = (paid_at or now).isoformat()
        return context

    def _request(
        self, email: InvoiceEmail, kind: str, *, manual: bool, occasion: str | None = None
    ) -> EnqueueRequest:
        """The outbox request for an invoice email. An invoice is sent once: a new-invoice
        email by hand and the automatic one share one occasion, so whichever is queued first is
        the one email (a manual send of a queued automatic one delivers that one now)."""
        invoice = email.invoice
        if kind == Kind.NEW_INVOICE:
            occasion = "new"
        return EnqueueRequest(
            tenant_id=invoice.tenant_id,
            kind=kind,
            recipients=list(email.recipients),
            context=email.context,
            document=f"invoice:{invoice.id}",
            version=invoice.version,
            customer_id=email.customer.id,
            invoice_id=invoice.id,
            manual=manual,
            occasion=occasion,
        )

    def enqueue_scheduled(
        self, session: Session, invoice: Invoice, customer: Customer, action: Action, now: datetime
    ) -> tuple[str, ...]:
        """Queue the email the dunning pass decided on, in the pass's transaction."""
        email = self._invoice_email(session, invoice, customer, action.kind)
        request = self._request(email, action.kind, manual=False, occasion=action.occasion)
        self.outbox.enqueue(session, request, now=now)
        return email.recipients

    def enqueue_batch(
        self,
        session: Session,
        pending: Sequence[tuple[Invoice, Customer, Action]],
        now: datetime,
    ) -> dict[int, str]:
        """Queue a dunning batch's emails together: contacts in one query, the tenant rows
        once, the messages in one multi-row insert. Returns invoice id -> why not queued."""
        errors: dict[int, str] = {}
        contacts = contacts_by_customer(session, (c.id or 0 for _, c, _ in pending), now=now)
        tenants: dict[int, Tenant] = {}
        requests: list[EnqueueRequest] = []
        for invoice, customer, action in pending:
            recipients = tuple(c.email for c in contacts.get(customer.id or 0, []))
            if not recipients:
                errors[invoice.id or 0] = (
                    f"invoice {invoice.number}: its customer has no contact to send to"
                )
                continue
            tenant_row = tenants.get(invoice.tenant_id) or session.get(Tenant, invoice.tenant_id)
            if tenant_row is None:
                errors[invoice.id or 0] = f"invoice {invoice.number}: its tenant row is missing"
                continue
            tenants[invoice.tenant_id] = tenant_row
            email = InvoiceEmail(
                invoice=invoice,
                customer=customer,
                context=self._invoice_context(session, tenant_row, invoice, customer, action.kind),
                recipients=recipients,
            )
            requests.append(
                self._request(email, action.kind, manual=False, occasion=action.occasion)
            )
        self.outbox.enqueue_many(session, requests, now=now)
        return errors

    def enqueue_summary(
        self,
        session: Session,
        customer: Customer,
        invoices: list[Invoice],
        occasion: str,
        now: datetime,
        *,
        manual: bool = False,
    ) -> tuple[str, ...]:
        """Queue customer-level chasing: one ``overdue_summary`` for all the overdue invoices
        of one customer in one currency (a per-customer cadence, or ``manual``: by hand)."""
        slug, config = self.tenant_config(customer.tenant_id)
        if not config.sends(Kind.OVERDUE_SUMMARY):
            raise MailerError(f"{Kind.OVERDUE_SUMMARY} emails are switched off for tenant {slug}")
        tenant_row = session.get(Tenant, customer.tenant_id)
        if tenant_row is None:
            raise NotFoundError(f"customer {customer.external_id}: its tenant row is missing")
        recipients = tuple(c.email for c in customer_contacts(session, customer, now=now))
        if not recipients:
            raise MailerError(f"customer {customer.external_id} has no contact to send to")
        currency = invoices[0].currency
        # Calendar days where the customer is, as the reminder for each invoice counts them.
        zone = customer_zone(customer.time_zone, tenant_row.time_zone)
        overdue_days = [max(0, days_between(i.due_at, now, zone)) for i in invoices]
        items = [
            {
                "number": i.number,
                "issued_at": i.issued_at.isoformat(),
                "due_at": i.due_at.isoformat(),
                "days_overdue": days,
                "total_minor": i.total_minor,
                "balance_minor": i.balance_minor,
            }
            for i, days in zip(invoices, overdue_days, strict=True)
        ]
        context = {
            **party_context(
                tenant=tenant_row, customer=customer, branding=config.branding.as_context()
            ),
            "overdue": {
                "currency": currency,
                "balance_minor": sum(i.balance_minor for i in invoices),
                "items": items,
            },
            "days_overdue": max(overdue_days),
        }
        request = EnqueueRequest(
            tenant_id=customer.tenant_id,
            kind=Kind.OVERDUE_SUMMARY,
            recipients=list(recipients),
            context=context,
            document=f"customer:{customer.id}:{currency}",
            customer_id=customer.id,
            occasion=occasion,
            manual=manual,
        )
        self.outbox.enqueue(session, request, now=now)
        return recipients

    def enqueue_event(
        self,
        session: Session,
        event: Event,
        now: datetime,
        *,
        manual: bool = False,
        occasion: str | None = None,
    ) -> Message:
        """Queue a due ledger event's email (receipt, refund, ...) in the event pass's
        transaction: the kind's frozen part plus sender, recipient and branding as they are
        now, to the customer's invoice contacts. ``manual``: a person asked for it now (a
        statement by hand), so it is not held for the send window. ``occasion`` names the
        email instead of the event (``dunmail send``: the one email by hand about it)."""
        slug, config = self.tenant_config(event.tenant_id)
        if not config.sends(event.kind):
            raise SkipEvent(f"{event.kind} emails are switched off for tenant {slug}")
        tenant_row = session.get(Tenant, event.tenant_id)
        customer = session.get(Customer, event.customer_id)
        if tenant_row is None or customer is None:
            raise NotFoundError(f"event {event.key}: its tenant or customer row is missing")
        recipients = tuple(c.email for c in customer_contacts(session, customer, now=now))
        if not recipients:
            raise SkipEvent(f"customer {customer.external_id} has no contact to send to")
        context = {
            **party_context(
                tenant=tenant_row, customer=customer, branding=config.branding.as_context()
            ),
            **event.context,
        }
        request = EnqueueRequest(
            tenant_id=event.tenant_id,
            kind=event.kind,
            recipients=list(recipients),
            context=context,
            document=event.document,
            version=event.version,
            customer_id=customer.id,
            invoice_id=event.invoice_id,
            occasion=occasion or f"event {event.id}",
            manual=manual,
        )
        return self.outbox.enqueue(session, request, now=now)

    def enqueue_invoice_email(
        self, number: str, *, kind: str, tenant: str | None, manual: bool
    ) -> Message | None:
        """Put the ``kind`` email for invoice ``number`` in the outbox (idempotent).

        A kind the tenant has switched off is skipped (None, logged) when the engine would
        send it by itself, and refused when a person asks for it: they should know why
        nothing went out rather than find out from the customer.
        """
        if kind not in INVOICE_EMAILS:
            raise MailerError(
                f"unknown invoice email kind {kind!r}: use one of {tuple(map(str, INVOICE_EMAILS))}"
            )
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
            if kind == Kind.THANK_YOU and invoice.status is not InvoiceStatus.PAID:
                raise MailerError(f"invoice {number} is {invoice.status.value}: not paid yet")
            request = self._request(email, kind, manual=manual)
            known = self.outbox.find(session, request)
            message = self.outbox.enqueue(session, request, now=now)
            if known is None:
                # A send by hand counts as the step it replaces: no reminder the day after.
                steps = self.rules_for(tenant_id, email.customer).cadence.steps
                store_state(invoice, manual_send(state_of(invoice), steps, kind, now))
                invoice.next_action_at = now
            return message

    async def send_invoice(self, number: str, *, kind: str, tenant: str | None) -> Message:
        """A manual send: enqueue, then deliver that one message now."""
        message = self.enqueue_invoice_email(number, kind=kind, tenant=tenant, manual=True)
        if message is None:  # a manual send of a switched-off kind raises before this
            raise MailerError(f"{kind} for {number} was not queued")
        await self.outbox.deliver_due(only=[message.id or 0])
        with Session(self.engine) as session:
            refreshed = session.get(Message, message.id)
        return refreshed or message

    async def deliver(self) -> PassReport:
        """One delivery pass over everything due at the clock's time."""
        return await self.outbox.deliver_due()

    # -- dunning -----------------------------------------------------------------------------

    def rules_for(self, tenant_id: int, customer: Customer) -> Rules:
        """The tenant's dunning settings, resolved for this customer's cadence and zone."""
        _, config = self.tenant_config(tenant_id)
        dunning = config.dunning
        cadence = customer.cadence if customer.cadence in dunning.cadences else dunning.cadence
        zone = customer_zone(customer.time_zone, config.time_zone)
        key = (tenant_id, cadence, zone)
        cached = self._rules.get(key)
        if cached is not None:
            return cached
        rules = Rules(
            calendar=SendCalendar.of(dunning, zone),
            grace=dunning.grace,
            cadence=dunning.cadences[cadence],
            sends=config.sends,
            min_balance={c: dunning.min_balance_minor(c) for c in dunning.min_balance},
        )
        self._rules[key] = rules
        return rules

    def schedule(self) -> Dunning:
        """The dunning pass and simulator (built with the services)."""
        if self.dunning is None:
            raise ConfigError("the services were built without the scheduler")
        return self.dunning

    async def tick(self) -> tuple[DunningReport, PassReport]:
        """One pass of everything due at the clock's time: decide and queue, then deliver."""
        now = self.clock.now()
        dunning = await asyncio.to_thread(self.schedule().run_pass, now)
        if self.statements is not None:
            await asyncio.to_thread(self.statements.run_pass, now, dunning)
        if self.events is not None:
            await asyncio.to_thread(self.events.run_pass, now, dunning)
        delivered = await self.outbox.deliver_due()
        await self.deliver_webhooks()
        return dunning, delivered

    async def deliver_webhooks(self) -> None:
        """One pass of the webhook queue at the clock's time (mailer/outbound/webhooks.py); a
        failure
        is logged, never raised: the rows stay queued for the next tick."""
        try:
            report = await self.webhooks.deliver_due(self.engine, self.clock.now())
        except Exception:  # job boundary: webhooks must never stop mail delivery
            log.exception("webhooks: the delivery pass failed")
            return
        if report.delivered or report.retrying or report.failed:
            log.info(
                "webhooks: %d delivered, %d to retry, %d given up",
                report.delivered,
                report.retrying,
                report.failed,
            )

    def statement_settings(self, tenant_id: int) -> tuple[StatementSchedule, SendCalendar]:
        """The tenant's statement schedule and its send calendar in the tenant's zone (the
        statement pass moves it to each customer's own zone)."""
        _, config = self.tenant_config(tenant_id)
        return config.dunning.statements, SendCalendar.of(config.dunning, config.time_zone)

    async def send_statement(
        self,
        customer: str,
        *,
        tenant: str | None,
        style: StatementStyle | None = None,
        since: datetime | None = None,
    ) -> list[Message]:
        """A statement now, by hand: one per currency, queued and delivered at once."""
        tenant_id = self.tenant_id(tenant)
        schedule, _ = self.statement_settings(tenant_id)
        now = self.clock.now()
        with session_scope(self.engine) as session:
            row = session.exec(
                select(Customer).where(
                    col(Customer.tenant_id) == tenant_id, col(Customer.external_id) == customer
                )
            ).first()
            if row is None:
                raise NotFoundError(f"no customer with id {customer!r}")
            events = record_statements(
                session,
                row,
                style=style or schedule.style,
                start=since or now - timedelta(days=30),
                end=now,
                now=now,
                key=f"by hand {now.isoformat()}",
            )
            messages = []
            for event in events:
                messages.append(self.enqueue_event(session, event, now, manual=True))
                event.status = EventStatus.QUEUED
                event.handled_at = now
            session.flush()
            # Asked again for the same moment (the same --at): the statements made then.
            ids = [m.id or 0 for m in messages] or _statements_by_hand(session, row, now)
            if not ids:
                raise MailerError(f"customer {customer} has nothing to put on a statement")
        return await self._delivered(ids)

    async def _delivered(self, ids: list[int]) -> list[Message]:
        """Deliver these messages now (those still due) and return them as they ended."""
        await self.outbox.deliver_due(only=ids)
        with Session(self.engine) as session:
            return [session.get_one(Message, i) for i in ids]

    def plan(
        self, *, tenant: str | None, customer: str | None = None, everything: bool = False
    ) -> list[PlanEntry]:
        """What a pass at the clock's time would send, to whom and why (nothing is written):
        the invoices' decisions, then the ledger's pending events."""
        now = self.clock.now()
        tenant_id = self.tenant_id(tenant)
        entries = self.schedule().plan(
            now, tenant_id=tenant_id, customer=customer, everything=everything
        )
        if self.events is not None:
            entries += self.events.plan(
                now, tenant_id=tenant_id, customer=customer, everything=everything
            )
        return entries

    def mark_sent(self, number: str, *, tenant: str | None) -> int:
        """The invoice went out by hand (or from the ERP): no automatic new-invoice email.

        Returns how many queued new-invoice emails were cancelled (those not being sent now).
        """
        tenant_id = self.tenant_id(tenant)
        now = self.clock.now()
        with session_scope(self.engine) as session:
            invoice = find_invoice(session, tenant_id=tenant_id, number=number)
            invoice.sent_at = invoice.sent_at or now
            invoice.next_action_at = now
            result = session.execute(
                sa.update(Message)
                .where(
                    col(Message.invoice_id) == invoice.id,
                    col(Message.kind) == Kind.NEW_INVOICE,
                    col(Message.manual).is_(False),
                    col(Message.status).in_((MessageStatus.QUEUED, MessageStatus.DEFERRED)),
                    col(Message.attempts) == 0,
                    sa.or_(col(Message.claimed_until).is_(None), col(Message.claimed_until) < now),
                )
                .values(
                    status=MessageStatus.CANCELLED,
                    skip_reason="marked sent by hand",
                    finished_at=now,
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)


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
    tenant_ids = _sync_tenants(engine, config.tenants, now=clock.now())
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
            _ensure_dev_keys(keys)
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
            tenant.sends(kind) and tenant.attaches_pdf(kind)
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
        pdf_passes = pdf_store.for_passes(None)  # patient until start_pdfs (dunmail run)
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
        attach_pdf=attach_pdf or _configured_attach_pdf(config, tenant_ids),
        download_links=links,
        overrides=overrides,
        links=minter,
        link_purposes=_link_purposes(config, tenant_ids),
    )
    outbox = Outbox(
        engine, clock=clock, profiles=profiles, assembler=assembler, policy=config.delivery
    )
    used: Sequence[Transport] = [transport] if transport is not None else list(transports.values())
    services = Services(
        config=config,
        clock=clock,
        engine=engine,
        outbox=outbox,
        assembler=assembler,
        renderer=renderer,
        tenant_ids=tenant_ids,
        tenants=Tenants(config.tenants, tenant_ids),
        transports=list(used),
        pdf_store=pdf_store,
        pdf_renderer=pdf_renderer,
        pdf_passes=pdf_passes,
        overrides=overrides,
    )
    services.dunning = Dunning(
        engine,
        tenant_ids=tenant_ids.values(),
        rules_for=services.rules_for,
        enqueue_batch=services.enqueue_batch,
        enqueue_summary=services.enqueue_summary,
        recipients_of=lambda session, invoice: tuple(
            c.email for c in invoice_contacts(session, invoice, now=services.clock.now())
        ),
        batch_size=config.delivery.batch_size,
    )
    services.statements = StatementPass(
        engine,
        tenant_ids=tenant_ids.values(),
        settings=services.statement_settings,
        batch_size=config.delivery.batch_size,
    )
    services.events = EventPass(
        engine,
        tenant_ids=tenant_ids.values(),
        enqueue=services.enqueue_event,
        calendar_for=lambda customer: services.rules_for(customer.tenant_id, customer).calendar,
        batch_size=config.delivery.batch_size,
    )
    services.verp_key = verp_key
    services.link_keys = [link_key, *_previous_link_keys(config)]
    services.webhooks = Webhooks(config.tenants, tenant_ids, batch_size=config.delivery.batch_size)
    for name in services.webhooks.missing_secrets():
        log.warning("webhooks: $%s is not set; deliveries signed with it wait until it is", name)
    outbox.webhooks = services.webhooks
    preflight = Preflight(rules_for=services.rules_for, enqueue=services.enqueue_scheduled)
    outbox.preflight = preflight.check
    outbox.window = preflight.window
    return services


def _statements_by_hand(session: Session, customer: Customer, now: datetime) -> list[int]:
    """The messages of the statements made by hand for ``customer`` at ``now`` (one per
    currency): ``record_statements`` names them by that moment and makes each once."""
    events = session.exec(
        select(Event.id).where(
            col(Event.tenant_id) == customer.tenant_id,
            col(Event.customer_id) == customer.id,
            col(Event.kind) == Kind.STATEMENT,
            col(Event.key).endswith(f":by hand {now.isoformat()}"),
        )
    ).all()
    if not events:
        return []
    return [
        m.id or 0
        for m in session.exec(
            select(Message)
            .where(
                col(Message.tenant_id) == customer.tenant_id,
                col(Message.kind) == Kind.STATEMENT,
                col(Message.occasion).in_([f"event {i}" for i in events]),
            )
            .order_by(col(Message.id))
        )
    ]


def _previous_link_keys(config: Config) -> list[bytes]:
    """Link keys retired by a rotation that still verify (``[web] previous_link_keys_env``):
    each env var holds an old master secret, and the link key is derived from it as before."""
    keys = []
    for name in config.web.previous_link_keys_env:
        value = os.environ.get(name)
        if not value:
            raise ConfigError(f"web.previous_link_keys_env: ${name} is not set")
        keys.append(derive_key(value.encode(), "links"))
    return keys


def _link_purposes(
    config: Config, tenant_ids: Mapping[str, int]
) -> Callable[[int], frozenset[str]]:
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


def _configured_attach_pdf(
    config: Config, tenant_ids: dict[str, int]
) -> Callable[[int, str], bool]:
    """``attach_pdf(tenant_id, kind)`` as ``[tenants.<slug>.emails.<kind>]`` configures it."""
    tenants = {tenant_ids[slug]: tenant for slug, tenant in config.tenants.items()}

    def attach_pdf(tenant_id: int, kind: str) -> bool:
        tenant = tenants.get(tenant_id)
        return tenant is not None and kind in tenant.emails and tenant.attaches_pdf(kind)

    return attach_pdf


def _ensure_dev_keys(keys: Sequence[DKIMConfig]) -> None:
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
