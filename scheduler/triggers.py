"""SERVICE: the email each occasion calls for, built and queued idempotently.

The dunning pass decides that an invoice is due a reminder, the event pass that a payment is
due its receipt, pre-flight that a changed invoice's reminder must be queued again for the new
version, and a person asks for an email by hand: each asks here, and here the email's rows,
render context and recipients are read from the ledger and put in the queue
(mailer/outbound/queue.py) in the caller's transaction. Nothing here sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from mailer.clock import Clock
from mailer.content.context import (
    invoice_context,
    overdue_summary_context,
    party_context,
    statement_transfer,
)
from mailer.content.kinds import Kind
from mailer.errors import MailerError, NotFoundError
from mailer.ledger.models import (
    Customer,
    Event,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentAllocation,
    Tenant,
)
from mailer.ledger.queries import (
    contacts_by_customer,
    customer_contacts,
    find_invoice,
    invoice_contacts,
)
from mailer.outbound.models import Message
from mailer.outbound.queue import Queue
from mailer.outbound.requests import EnqueueRequest
from mailer.tenants import Tenants
from scheduler.cadence import Action
from scheduler.statement_invoices import INVOICE_PDFS, open_invoice_pdfs


class SkipEvent(MailerError):
    """The event's email is not sent, for a reason worth recording on the event."""


@dataclass(frozen=True)
class InvoiceEmail:
    """An invoice email's rows, render context and recipients, before anything is stored."""

    invoice: Invoice
    customer: Customer
    context: dict[str, Any]
    recipients: tuple[str, ...]


class Triggers:
    """Builds and queues the email of each occasion: a dunning step, a customer's overdue
    summary, a ledger event, an invoice email by hand."""

    def __init__(self, *, tenants: Tenants, queue: Queue, clock: Clock) -> None:
        self._tenants = tenants
        self._queue = queue
        self._clock = clock

    def invoice_email(
        self, session: Session, *, tenant_id: int, number: str, kind: str, sending: bool = True
    ) -> InvoiceEmail:
        """What the ``kind`` email of invoice ``number`` says and to whom, read without writing.

        The one place an invoice email's context is built: the queue stores it, the preview
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
        contacts = invoice_contacts(session, invoice, now=self._clock.now())
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
        now = self._clock.now()
        _, config = self._tenants.config(invoice.tenant_id)
        context = invoice_context(
            tenant=tenant,
            customer=customer,
            invoice=invoice,
            now=now,
            branding=config.branding.as_context(),
            bank=config.bank,
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

    def request(
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
        request = self.request(email, action.kind, manual=False, occasion=action.occasion)
        self._queue.enqueue(session, request, now=now)
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
                self.request(email, action.kind, manual=False, occasion=action.occasion)
            )
        self._queue.enqueue_many(session, requests, now=now)
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
        slug, config = self._tenants.config(customer.tenant_id)
        if not config.sends(Kind.OVERDUE_SUMMARY):
            raise MailerError(f"{Kind.OVERDUE_SUMMARY} emails are switched off for tenant {slug}")
        tenant_row = session.get(Tenant, customer.tenant_id)
        if tenant_row is None:
            raise NotFoundError(f"customer {customer.external_id}: its tenant row is missing")
        recipients = tuple(c.email for c in customer_contacts(session, customer, now=now))
        if not recipients:
            raise MailerError(f"customer {customer.external_id} has no contact to send to")
        currency = invoices[0].currency
        context = overdue_summary_context(
            tenant=tenant_row,
            customer=customer,
            invoices=invoices,
            now=now,
            branding=config.branding.as_context(),
            bank=config.bank,
        )
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
        self._queue.enqueue(session, request, now=now)
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
        slug, config = self._tenants.config(event.tenant_id)
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
        transfer = statement_transfer(
            tenant=tenant_row,
            customer=customer,
            statement=event.context.get("statement") or {},
            bank=config.bank if event.kind == Kind.STATEMENT else None,
        )
        if transfer is not None:
            context["bank_transfer"] = transfer
        if event.kind == Kind.STATEMENT and config.attaches_invoices(event.kind):
            context[INVOICE_PDFS] = open_invoice_pdfs(
                session,
                tenant_id=event.tenant_id,
                customer_id=customer.id or 0,
                statement=event.context.get("statement") or {},
            )
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
        return self._queue.enqueue(session, request, now=now)

    def recipients_of(self, session: Session, invoice: Invoice) -> tuple[str, ...]:
        """Whom an invoice's email would go to now: its customer's invoice contacts."""
        return tuple(c.email for c in invoice_contacts(session, invoice, now=self._clock.now()))
