"""Services for sending by hand: any kind of email about the document it concerns, and a
failed message tried again once its cause is fixed. A mixin of :class:`dunmail.app.Services`,
which provides the engine, clock, outbox and the context builders declared here.

Every email is built by the code that builds it when the engine sends it by itself: an invoice
email by ``Services.enqueue_invoice_email``, an overdue summary by ``Services.enqueue_summary``,
a statement by ``Services.send_statement``, and every other kind from the ``Event`` row the
ledger recorded for its document (the context the ledger's builders in
``mailer/content/event_context.py`` made) by ``Services.enqueue_event``. Nothing here builds a
context.

Idempotent as the outbox is: the same email asked for again (same kind, document, version and
recipients) is the one message already queued or sent, and is not sent twice. An invoice email
by hand is one per invoice version, as before; an event's by hand one per document version; an
overdue summary by hand one per set of overdue invoices and balances; a statement is as of the
moment it is asked for (``--at``), as ``dunmail statement`` has always been.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select

from mailer.clock import Clock
from mailer.content.kinds import KINDS, Kind
from mailer.db import session_scope
from mailer.errors import MailerError, NotFoundError
from mailer.ledger.models import (
    AutopayFailure,
    CreditNote,
    Customer,
    Estimate,
    Event,
    EventStatus,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentPlan,
    Refund,
    Subscription,
)
from mailer.outbound.models import Message, MessageRecipient, MessageStatus, RecipientStatus
from mailer.outbound.outbox import Outbox

if TYPE_CHECKING:
    from mailer.content.statement import StatementStyle

# What each kind is about: the option that names its document (``dunmail send --payment``).
INVOICE = "invoice"
CUSTOMER = "customer"
DOCUMENT_OF: Mapping[str, str] = {
    Kind.NEW_INVOICE: INVOICE,
    Kind.INVOICE_REMINDER: INVOICE,
    Kind.LATE_PAYMENT_REMINDER: INVOICE,
    Kind.THANK_YOU: INVOICE,
    Kind.OVERDUE_SUMMARY: CUSTOMER,
    Kind.STATEMENT: CUSTOMER,
    Kind.PAYMENT_RECEIPT: "payment",
    Kind.CREDIT_NOTE: "credit_note",
    Kind.REFUND: "refund",
    Kind.AUTOPAY_FAILED: "autopay",
    Kind.ESTIMATE: "estimate",
    Kind.PAYMENT_PLAN: "payment_plan",
    Kind.SUBSCRIPTION_CONFIRMATION: "subscription",
    Kind.SUBSCRIPTION_BILLED_SOON: "subscription",
    Kind.SUBSCRIPTION_CANCELLED: "subscription",
}

# The ledger table of each event document, and the columns a person may name a row by: the
# number printed on it first, then the ERP's id. Its Event rows name it "<document>:<row id>".
_TABLES: Mapping[str, tuple[type[SQLModel], tuple[str, ...]]] = {
    "payment": (Payment, ("receipt_number", "external_id")),
    "credit_note": (CreditNote, ("number", "external_id")),
    "refund": (Refund, ("receipt_number", "external_id")),
    "autopay": (AutopayFailure, ("external_id",)),
    "estimate": (Estimate, ("number", "external_id")),
    "payment_plan": (PaymentPlan, ("number", "external_id")),
    "subscription": (Subscription, ("external_id",)),
}


def kind_for(document: str, kind: str | None) -> str:
    """The kind to send about a ``document`` type when none is named: the only kind about it
    (a payment's is its receipt), ``new_invoice`` for an invoice; else a MailerError."""
    if kind is not None:
        if kind not in KINDS:
            raise MailerError(f"unknown email kind {kind!r}; known kinds: {', '.join(KINDS)}")
        wanted = DOCUMENT_OF[kind]
        if wanted != document:
            raise MailerError(f"{kind} is about a {_option(wanted)}, not a {_option(document)}")
        return kind
    if document == INVOICE:
        return Kind.NEW_INVOICE
    kinds = [k for k, d in DOCUMENT_OF.items() if d == document]
    if len(kinds) == 1:
        return kinds[0]
    raise MailerError(f"say which email with --kind: one of {', '.join(kinds)}")


def _option(document: str) -> str:
    return "--" + document.replace("_", "-")


@dataclass(frozen=True)
class SentByHand:
    """What ``dunmail send`` queued and delivered: one message, or one per currency for a
    statement."""

    kind: str
    messages: list[Message]


class SendServices:
    """Sending by hand and retrying (``Services`` inherits them)."""

    clock: Clock
    engine: Engine
    outbox: Outbox

    def tenant_id(self, slug: str | None) -> int:
        raise NotImplementedError

    def enqueue_invoice_email(
        self, number: str, *, kind: str, tenant: str | None, manual: bool
    ) -> Message | None:
        raise NotImplementedError

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
        raise NotImplementedError

    def enqueue_event(
        self,
        session: Session,
        event: Event,
        now: datetime,
        *,
        manual: bool = False,
        occasion: str | None = None,
    ) -> Message:
        raise NotImplementedError

    async def send_statement(
        self,
        customer: str,
        *,
        tenant: str | None,
        style: StatementStyle | None = None,
        since: datetime | None = None,
    ) -> list[Message]:
        raise NotImplementedError

    # -- sending by hand ---------------------------------------------------------------------

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
            tenant_id = self.tenant_id(tenant)
            with session_scope(self.engine) as session:
                if kind == Kind.OVERDUE_SUMMARY:
                    found = self._summary_by_hand(session, tenant_id, ref, currency)
                else:
                    found = self._event_by_hand(session, tenant_id, kind, document, ref)
                ids = [found.id or 0]
        await self.outbox.deliver_due(only=ids)
        with Session(self.engine) as session:
            return SentByHand(kind, [session.get_one(Message, i) for i in ids])

    def _event_by_hand(
        self, session: Session, tenant_id: int, kind: str, document: str, ref: str
    ) -> Message:
        """The email the ledger asked for about this document (its newest ``Event`` of this
        kind), queued again by hand. A pending event is done by it: the customer gets one."""
        table, columns = _TABLES[document]
        row: Any = session.exec(
            select(table).where(
                col(getattr(table, "tenant_id")) == tenant_id,  # noqa: B009  (any table)
                sa.or_(*(col(getattr(table, c)) == ref for c in columns)),
            )
        ).first()
        if row is None:
            raise NotFoundError(f"no {document.replace('_', ' ')} {ref!r}")
        event = session.exec(
            select(Event)
            .where(
                col(Event.tenant_id) == tenant_id,
                col(Event.kind) == kind,
                col(Event.document) == f"{document}:{row.id}",
            )
            .order_by(col(Event.id).desc())
        ).first()
        if event is None:
            raise MailerError(
                f"the ledger never asked for a {kind} email about {document.replace('_', ' ')} "
                f"{ref}: there is nothing of that kind to send about it"
            )
        now = self.clock.now()
        # By hand: its own occasion, so it is not the automatic email (which may have failed)
        # and asking again is this same message.
        message = self.enqueue_event(session, event, now, manual=True, occasion="by hand")
        if event.status is EventStatus.PENDING:
            event.status = EventStatus.QUEUED
            event.handled_at = now
            event.note = "sent by hand"
        session.flush()
        return message

    def _summary_by_hand(
        self, session: Session, tenant_id: int, ref: str, currency: str | None
    ) -> Message:
        """One ``overdue_summary`` of the customer's overdue invoices in one currency; every
        invoice on it counts as chased now, as when the dunning pass sends one."""
        customer = session.exec(
            select(Customer).where(
                col(Customer.tenant_id) == tenant_id, col(Customer.external_id) == ref
            )
        ).first()
        if customer is None:
            raise NotFoundError(f"no customer with id {ref!r}")
        now = self.clock.now()
        overdue = list(
            session.exec(
                select(Invoice)
                .where(
                    col(Invoice.customer_id) == customer.id,
                    col(Invoice.status) == InvoiceStatus.OPEN,
                    col(Invoice.balance_minor) > 0,
                    col(Invoice.due_at) < now,
                )
                .order_by(col(Invoice.due_at), col(Invoice.id))
            ).all()
        )
        currencies = sorted({i.currency for i in overdue})
        if currency is not None:
            overdue = [i for i in overdue if i.currency == currency.upper()]
        elif len(currencies) > 1:
            raise MailerError(
                f"customer {ref} owes in {', '.join(currencies)}: say which with --currency"
            )
        if not overdue:
            raise MailerError(f"customer {ref} has no overdue invoice to summarise")
        # The same overdue invoices and balances are the same email; any change, a new one.
        content = ",".join(f"{i.id}:{i.balance_minor}" for i in overdue)
        occasion = f"by hand {hashlib.sha256(content.encode()).hexdigest()[:12]}"
        self.enqueue_summary(session, customer, overdue, occasion, now, manual=True)
        message = session.exec(
            select(Message).where(
                col(Message.tenant_id) == tenant_id,
                col(Message.customer_id) == customer.id,
                col(Message.kind) == Kind.OVERDUE_SUMMARY,
                col(Message.occasion) == occasion,
            )
        ).first()
        if message is None:  # enqueue_summary raises rather than queue nothing
            raise MailerError(f"overdue_summary for {ref} was not queued")
        for invoice in overdue:
            invoice.last_dunned_at = now
            invoice.next_action_at = now
        session.flush()
        return message

    # -- retry -------------------------------------------------------------------------------

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
        now = self.clock.now()
        with session_scope(self.engine) as session:
            message = session.get(Message, message_id)
            if message is None or (
                tenant is not None and message.tenant_id != self.tenant_id(tenant)
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
        await self.outbox.deliver_due(only=[message_id])
        with Session(self.engine) as session:
            return session.get_one(Message, message_id)
