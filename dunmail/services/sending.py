"""SERVICE (shell): sending. An invoice email queued by hand or by the ERP, any kind of email
about the document it concerns, a statement now, a failed message tried again once its cause is
fixed, and the delivery passes of mail and webhooks.

Every email is built by the code that builds it when the engine sends it by itself
(scheduler/triggers.py): an invoice email by ``Triggers.invoice_email``, an overdue summary by
``Triggers.enqueue_summary``, every other kind from the ``Event`` row the ledger recorded for its
document by ``Triggers.enqueue_event``. Nothing here builds a context. Idempotent as the queue
is: the same email asked for again (same kind, document, version and recipients) is the one
message already queued or sent. An invoice email by hand is one per invoice version; an event's
by hand one per document version; an overdue summary by hand one per set of overdue invoices and
balances; a statement is as of the moment it is asked for (``--at``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from dunmail.services.by_hand import (
    INVOICE,
    SentByHand,
    event_by_hand,
    kind_for,
    statements_by_hand,
    summary_by_hand,
)
from mailer.clock import Clock
from mailer.content.kinds import INVOICE_EMAILS, Kind
from mailer.content.statement import StatementStyle
from mailer.db import session_scope
from mailer.errors import MailerError, NotFoundError
from mailer.ledger.models import (
    Customer,
    EventStatus,
    InvoiceStatus,
)
from mailer.outbound.dispatch import Dispatcher
from mailer.outbound.models import Message, MessageRecipient, MessageStatus, RecipientStatus
from mailer.outbound.queue import Queue
from mailer.outbound.requests import PassReport
from mailer.outbound.webhooks import Webhooks
from mailer.tenants import Tenants
from scheduler.cadence import manual_send
from scheduler.invoice_state import state_of, store_state
from scheduler.rules import RulesBook
from scheduler.statements import record_statements
from scheduler.triggers import Triggers

log = logging.getLogger(__name__)


class Sending:
    """Sending by hand, retrying, and the delivery passes; built once with its collaborators."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock,
        tenants: Tenants,
        rules: RulesBook,
        triggers: Triggers,
        queue: Queue,
        dispatcher: Dispatcher,
        webhooks: Webhooks,
    ) -> None:
        """``triggers`` builds and queues each email, ``queue`` holds them, ``dispatcher``
        delivers them, ``webhooks`` are the tenants' webhook deliveries."""
        self._engine = engine
        self._clock = clock
        self._tenants = tenants
        self._rules = rules
        self.triggers = triggers
        self.queue = queue
        self.dispatcher = dispatcher
        self._webhooks = webhooks

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
        tenant_id = self._tenants.id(tenant)
        slug, config = self._tenants.config(tenant_id)
        if not config.sends(kind):
            if manual:
                raise MailerError(
                    f"{kind} emails are switched off for tenant {slug}: "
                    f"set [tenants.{slug}.emails.{kind}] enabled = true to send them"
                )
            log.info("invoice %s: %s is switched off for tenant %s; not queued", number, kind, slug)
            return None
        now = self._clock.now()
        with session_scope(self._engine) as session:
            email = self.triggers.invoice_email(
                session, tenant_id=tenant_id, number=number, kind=kind
            )
            invoice = email.invoice
            if kind == Kind.THANK_YOU and invoice.status is not InvoiceStatus.PAID:
                raise MailerError(f"invoice {number} is {invoice.status.value}: not paid yet")
            request = self.triggers.request(email, kind, manual=manual)
            known = self.queue.find(session, request)
            message = self.queue.enqueue(session, request, now=now)
            if known is None:
                # A send by hand counts as the step it replaces: no reminder the day after.
                steps = self._rules.rules_for(tenant_id, email.customer).cadence.steps
                store_state(invoice, manual_send(state_of(invoice), steps, kind, now))
                invoice.next_action_at = now
            return message

    async def send_invoice(self, number: str, *, kind: str, tenant: str | None) -> Message:
        """A manual send: enqueue, then deliver that one message now."""
        message = self.enqueue_invoice_email(number, kind=kind, tenant=tenant, manual=True)
        if message is None:  # a manual send of a switched-off kind raises before this
            raise MailerError(f"{kind} for {number} was not queued")
        await self.dispatcher.deliver_due(only=[message.id or 0])
        with Session(self._engine) as session:
            refreshed = session.get(Message, message.id)
        return refreshed or message

    async def deliver(self) -> PassReport:
        """One delivery pass over everything due at the clock's time."""
        return await self.dispatcher.deliver_due()

    async def deliver_webhooks(self) -> None:
        """One pass of the webhook queue at the clock's time (mailer/outbound/webhooks.py); a
        failure
        is logged, never raised: the rows stay queued for the next tick."""
        try:
            report = await self._webhooks.deliver_due(self._engine, self._clock.now())
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

    async def send_statement(
        self,
        customer: str,
        *,
        tenant: str | None,
        style: StatementStyle | None = None,
        since: datetime | None = None,
    ) -> list[Message]:
        """A statement now, by hand: one per currency, queued and delivered at once."""
        tenant_id = self._tenants.id(tenant)
        schedule, _ = self._rules.statement_settings(tenant_id)
        now = self._clock.now()
        with session_scope(self._engine) as session:
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
                messages.append(self.triggers.enqueue_event(session, event, now, manual=True))
                event.status = EventStatus.QUEUED
                event.handled_at = now
            session.flush()
            # Asked again for the same moment (the same --at): the statements made then.
            ids = [m.id or 0 for m in messages] or statements_by_hand(session, row, now)
            if not ids:
                raise MailerError(f"customer {customer} has nothing to put on a statement")
        return await self._delivered(ids)

    async def _delivered(self, ids: list[int]) -> list[Message]:
        """Deliver these messages now (those still due) and return them as they ended."""
        await self.dispatcher.deliver_due(only=ids)
        with Session(self._engine) as session:
            return [session.get_one(Message, i) for i in ids]

    async def send_email(
        self,
        kind: str | None,
        *,
        document: str,
        ref: str,
        tenant: str | None,
        currency: str | None = None,
    ) -> SentByHand:
        """Send ``kind`` about the ``document`` (``"payment"``, ``"invoice"``, ``"customer"``,
        ...) a person names by ``ref`` (its number or the ERP's id), now, and deliver it.
        ``kind`` None: the document's own email (:func:`kind_for`).

        A kind the tenant has switched off is refused, as an invoice email by hand is.
        ``currency`` picks which overdue summary of a customer with debts in several.
        """
        kind = kind_for(document, kind)
        if kind == Kind.STATEMENT:
            messages = await self.send_statement(ref, tenant=tenant)
            return SentByHand(kind, messages)
        if document == INVOICE:
            message = self.enqueue_invoice_email(ref, kind=kind, tenant=tenant, manual=True)
            if message is None:  # a manual send of a switched-off kind raises before this
                raise MailerError(f"{kind} for {ref} was not queued")
            ids = [message.id or 0]
        else:
            tenant_id = self._tenants.id(tenant)
            with session_scope(self._engine) as session:
                now = self._clock.now()
                if kind == Kind.OVERDUE_SUMMARY:
                    found = summary_by_hand(
                        session,
                        self.triggers,
                        tenant_id=tenant_id,
                        ref=ref,
                        currency=currency,
                        now=now,
                    )
                else:
                    found = event_by_hand(
                        session,
                        self.triggers,
                        tenant_id=tenant_id,
                        kind=kind,
                        document=document,
                        ref=ref,
                        now=now,
                    )
                ids = [found.id or 0]
        await self.dispatcher.deliver_due(only=ids)
        with Session(self._engine) as session:
            return SentByHand(kind, [session.get_one(Message, i) for i in ids])

    async def retry_message(self, message_id: int, *, tenant: str | None = None) -> Message:
        """Try a ``failed`` message again now, once its cause is fixed (a template, the SMTP
        server, a size limit); any other state is refused, saying why.

        It is the same email: the same row, uid, Message-ID, VERP address, links and frozen
        context, so a reply or bounce to either attempt finds it, and the customer who got
        nothing gets exactly what was meant. The recipients that refused it are owed it again
        (pre-flight still skips a suppressed one, or the whole email if it no longer applies:
        an invoice paid meanwhile). When the email itself was wrong (the document), correct
        the document in the ERP and import it: ``dunmail send`` then sends its new version.
        """
        now = self._clock.now()
        with session_scope(self._engine) as session:
            message = session.get(Message, message_id)
            if message is None or (
                tenant is not None and message.tenant_id != self._tenants.id(tenant)
            ):
                raise NotFoundError(f"no message {message_id}")
            if message.status is not MessageStatus.FAILED:
                why = {
                    MessageStatus.QUEUED: "it is still queued",
                    MessageStatus.DEFERRED: "it is already retried by itself "
                    f"(next at {message.next_attempt_at:%Y-%m-%d %H:%M} UTC)",
                    MessageStatus.SENT: "it was sent",
                    MessageStatus.SKIPPED: f"it was skipped ({message.skip_reason})",
                    MessageStatus.CANCELLED: "it was cancelled",
                }[message.status]
                raise MailerError(
                    f"message {message_id} is {message.status.value}: only a failed message "
                    f"can be retried, and {why}"
                )
            session.execute(
                sa.update(MessageRecipient)
                .where(
                    col(MessageRecipient.message_id) == message_id,
                    col(MessageRecipient.status) == RecipientStatus.REJECTED,
                )
                .values(status=RecipientStatus.PENDING, code=None, response=None, updated_at=now)
            )
            message.status = MessageStatus.QUEUED
            message.next_attempt_at = now
            message.finished_at = None
            message.claimed_until = None
            message.claimed_by = None
        await self.dispatcher.deliver_due(only=[message_id])
        with Session(self._engine) as session:
            return session.get_one(Message, message_id)
