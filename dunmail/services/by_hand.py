"""What a person may send by hand, and how the document they name is found.

``dunmail send`` names a document (an invoice, a payment, a customer, ...) by the number
printed on it or the ERP's id, and the kind of email about it; these find the ledger rows and
queue the email through the same triggers (scheduler/triggers.py) the engine uses when it sends
by itself, so nothing here builds a context. Idempotent as the queue is: asking again for the
same email is the one message already queued or sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, SQLModel, col, select

from mailer.content.kinds import KINDS, Kind
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
from mailer.outbound.models import Message
from scheduler.triggers import Triggers

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


def event_by_hand(
    session: Session,
    triggers: Triggers,
    *,
    tenant_id: int,
    kind: str,
    document: str,
    ref: str,
    now: datetime,
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
    # By hand: its own occasion, so it is not the automatic email (which may have failed)
    # and asking again is this same message.
    message = triggers.enqueue_event(session, event, now, manual=True, occasion="by hand")
    if event.status is EventStatus.PENDING:
        event.status = EventStatus.QUEUED
        event.handled_at = now
        event.note = "sent by hand"
    session.flush()
    return message


def summary_by_hand(
    session: Session,
    triggers: Triggers,
    *,
    tenant_id: int,
    ref: str,
    currency: str | None,
    now: datetime,
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
    triggers.enqueue_summary(session, customer, overdue, occasion, now, manual=True)
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


def statements_by_hand(session: Session, customer: Customer, now: datetime) -> list[int]:
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
