"""The rows the clerk's look-ups answer (dunmail/services/customers.py): documents, blocks with
their evidence, and outbox emails with each recipient's SMTP answer and later bounce apart.
Data with codes, never words: dunmail/labels.py words them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from bounce.report import Kind as EventKind
from bounce.threads import document_key
from bounce.timeline import document_label
from mailer.inbox_models import DeliveryEvent, Thread
from mailer.ledger.models import CreditNote, Customer, Invoice
from mailer.outbound.models import Message, MessageRecipient, Suppression
from mailer.outbound.suppression import is_active as is_suppressed


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def threads_of(session: Session, tenant_id: int, messages: list[Message]) -> dict[str, int]:
    """The thread id of each of ``messages``' documents that has one, by document key (a
    message's thread is its document's); only those documents are read."""
    keys = sorted({document_key(m) for m in messages})
    found = session.exec(
        select(Thread.document, Thread.id).where(
            Thread.tenant_id == tenant_id, col(Thread.document).in_(keys)
        )
    )
    return {document: thread_id or 0 for document, thread_id in found}


def document_row(row: Invoice | CreditNote, customer: Customer, kind: str) -> dict[str, Any]:
    """An invoice or a credit note as a search answers it, with its customer."""
    common = {
        "type": kind,
        "id": row.id,
        "number": row.number,
        "currency": row.currency,
        "issued_at": row.issued_at.isoformat(),
        "customer_id": customer.id,
        "customer": customer.external_id,
        "customer_name": customer.name,
    }
    if isinstance(row, Invoice):
        return {
            **common,
            "amount_minor": row.total_minor,
            "balance_minor": row.balance_minor,
            "status": row.status.value,
            "due_at": row.due_at.isoformat(),
        }
    return {
        **common,
        "amount_minor": row.amount_minor,
        "balance_minor": None,
        "status": None,
        "due_at": None,  # a credit note is not due: the customer page's table reads the key
    }


def block_row(r: Suppression, now: datetime) -> dict[str, Any]:
    return {
        "address": r.address,
        "kind": r.kind,
        "reason": r.reason,
        "created_at": r.created_at.isoformat(),
        "created_by": r.created_by,
        "expires_at": iso(r.expires_at),
        "active": is_suppressed(r, now),
        "lifted_at": iso(r.lifted_at),
        "lifted_by": r.lifted_by,
        "lift_reason": r.lift_reason,
    }


def blocks_of(
    session: Session, tenant_id: int, addresses: list[str], now: datetime
) -> dict[str, dict[str, Any]]:
    """The active blocks of ``addresses``, with their evidence, by lower-cased address."""
    wanted = [a.lower() for a in addresses]
    rows = session.exec(
        select(Suppression).where(
            Suppression.tenant_id == tenant_id, col(Suppression.address).in_(wanted)
        )
    ).all()
    evidence = evidence_of(session, tenant_id, wanted)
    return {
        r.address: {**block_row(r, now), "evidence": evidence.get(r.address)}
        for r in rows
        if is_suppressed(r, now)
    }


def evidence_of(
    session: Session, tenant_id: int, addresses: list[str]
) -> dict[str, dict[str, Any]]:
    """The newest bounce or complaint about each address: what came back about which email
    (by lower-cased address). A block by a person has none; its ``created_by`` says who."""
    if not addresses:
        return {}
    found = session.exec(
        select(DeliveryEvent, Message)
        .join(Message, col(Message.id) == col(DeliveryEvent.message_id))
        .where(
            Message.tenant_id == tenant_id,
            col(DeliveryEvent.address).in_([a.lower() for a in addresses]),
            col(DeliveryEvent.kind).in_((EventKind.BOUNCE, EventKind.COMPLAINT)),
        )
        .order_by(col(DeliveryEvent.created_at), col(DeliveryEvent.id))
    ).all()
    threads = threads_of(session, tenant_id, [m for _, m in found])
    return {
        event.address.lower(): {
            "event": event.kind,
            "reason": event.reason,
            "status": event.status,
            "diagnostic": event.diagnostic[:300],
            "at": event.created_at.isoformat(),
            "message": message.uid,
            "email_kind": message.kind,
            "document": document_label(message),
            "thread": threads.get(document_key(message)),
        }
        for event, message in found
    }


def email_rows(
    session: Session, messages: list[Message], threads: dict[str, int]
) -> list[dict[str, Any]]:
    """Outbox rows: each email with its recipients, each recipient's SMTP answer and the
    newest bounce about it (apart: the answer is from the sending, the bounce from later)."""
    ids = [m.id for m in messages]
    recipients = session.exec(
        select(MessageRecipient)
        .where(col(MessageRecipient.message_id).in_(ids))
        .order_by(col(MessageRecipient.id))
    ).all()
    bounces: dict[tuple[int, str], DeliveryEvent] = {
        (e.message_id, e.address.lower()): e
        for e in session.exec(
            select(DeliveryEvent)
            .where(col(DeliveryEvent.message_id).in_(ids), DeliveryEvent.kind == EventKind.BOUNCE)
            .order_by(col(DeliveryEvent.created_at), col(DeliveryEvent.id))
        )
    }
    by_message: dict[int, list[dict[str, Any]]] = {}
    for r in recipients:
        bounce = bounces.get((r.message_id, r.address.lower()))
        by_message.setdefault(r.message_id, []).append(
            {
                "address": r.address,
                "status": r.status.value,
                "code": r.code,
                "reason": bounce.reason if bounce else None,
                "enhanced": bounce.status if bounce else None,
            }
        )
    return [
        {
            "id": m.id,
            "uid": m.uid,
            "kind": m.kind,
            "document": document_label(m),
            "thread": threads.get(document_key(m)),
            "status": m.status.value,
            "attempts": m.attempts,
            "created_at": iso(m.created_at),
            "finished_at": iso(m.finished_at),
            "last_error": m.last_error,
            "skip_reason": m.skip_reason,
            "recipients": by_message.get(m.id or 0, []),
        }
        for m in messages
    ]
