"""SERVICE: the clerk's side of a customer's query (dunmail/services/queries.py): read it on the
invoice's AR inbox thread, answer it, resolve it, download what the customer attached.

An answer is an entry of the query's history and a ``query_answer`` email to the customer's
contacts, queued in the same transaction through the normal outbox (rendered in the customer's
language by the email templates, like any other email) and delivered at once. Resolving lifts
the query's ``dispute`` hold, so the next dunning pass chases the invoice again. Each call is
scoped by the clerk's tenant: another tenant's query or file does not exist here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlmodel import Session, select

from bounce.threads import add_note, fetch_thread
from dunmail.app import Services
from dunmail.services.queries import QueryView, checked_text, read_views
from mailer.content.context import party_context
from mailer.content.event_context import invoice_data
from mailer.content.kinds import Kind
from mailer.db import session_scope
from mailer.errors import MailerError, NotFoundError
from mailer.ledger import holds
from mailer.ledger.models import Customer, Hold, Invoice, Tenant
from mailer.ledger.queries import invoice_contacts
from mailer.outbound.requests import EnqueueRequest
from mailer.query_models import (
    EntryKind,
    InvoiceQuery,
    QueryAttachment,
    QueryEntry,
    QueryStatus,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredFile:
    filename: str
    content_type: str  # one of queries.SIGNATURES, checked when it was stored
    data: bytes


def thread_queries(services: Services, thread_id: int, *, tenant: str | None) -> list[QueryView]:
    """The queries raised on a thread's invoice, newest first; NotFoundError for a thread of
    another tenant."""
    tenant_id = services.tenants.id(tenant)
    with Session(services.engine) as session:
        thread = fetch_thread(session, thread_id, tenant_id=tenant_id)
        found = session.exec(
            select(InvoiceQuery).where(
                InvoiceQuery.tenant_id == tenant_id, InvoiceQuery.thread_id == thread.id
            )
        ).all()
        return read_views(session, list(found))


def _query(session: Session, query_id: int, tenant_id: int) -> InvoiceQuery:
    query = session.get(InvoiceQuery, query_id)
    if query is None or query.tenant_id != tenant_id:
        raise NotFoundError(f"no query {query_id}")
    return query


async def answer(
    services: Services, query_id: int, text: str, *, tenant: str | None, by: str
) -> int:
    """Answer the query as ``by``: kept in its history and emailed to the customer's contacts
    (delivered at once). Returns the thread's id; MailerError when the text is empty or the
    customer has no contact to send to."""
    tenant_id = services.tenants.id(tenant)
    cleaned = checked_text(text)
    if not isinstance(cleaned, str):
        raise MailerError("the answer is empty or too long")
    now = services.clock.now()
    _, config = services.tenants.config(tenant_id)
    with session_scope(services.engine) as session:
        query = _query(session, query_id, tenant_id)
        invoice = session.get(Invoice, query.invoice_id)
        customer = session.get(Customer, query.customer_id)
        tenant_row = session.get(Tenant, tenant_id)
        if invoice is None or customer is None or tenant_row is None:
            raise NotFoundError(f"query {query_id}: its invoice is gone")
        contacts = invoice_contacts(session, invoice, now=now)
        if not contacts:
            raise MailerError(
                f"invoice {invoice.number}: the customer has no contact to send the answer to"
            )
        question = session.exec(
            select(QueryEntry.text)
            .where(QueryEntry.query_id == query.id, QueryEntry.kind == EntryKind.MESSAGE)
            .order_by(QueryEntry.id.desc())  # type: ignore[union-attr]
        ).first()
        entry = QueryEntry(
            query_id=query.id or 0,
            kind=EntryKind.ANSWER,
            author=by[:200],
            text=cleaned,
            created_at=now,
        )
        session.add(entry)
        session.flush()
        context = {
            **party_context(
                tenant=tenant_row, customer=customer, branding=config.branding.as_context()
            ),
            "invoice": invoice_data(invoice),
            "query": {
                "reason": query.reason.value,
                "question": question or "",
                "answer": cleaned,
                "answered_at": now.isoformat(),
            },
        }
        request = EnqueueRequest(
            tenant_id=tenant_id,
            kind=Kind.QUERY_ANSWER,
            recipients=[c.email for c in contacts],
            context=context,
            document=f"invoice:{invoice.id}",
            version=invoice.version,
            customer_id=customer.id,
            invoice_id=invoice.id,
            manual=True,
            occasion=f"query {query.id} answer {entry.id}",
        )
        message = services.sending.queue.enqueue(session, request, now=now)
        entry.message_id = message.id
        session.add(entry)
        thread_id = query.thread_id
        message_id = message.id or 0
        log.info(
            "query %s answered by a clerk of tenant %s: email %s", query_id, tenant_id, message_id
        )
    await services.sending.dispatcher.deliver_due(only=[message_id])
    return thread_id


def resolve(services: Services, query_id: int, *, tenant: str | None, by: str) -> int:
    """Resolve the query as ``by`` and lift its dispute hold: chasing resumes. Returns the
    thread's id; resolving a resolved query changes nothing."""
    tenant_id = services.tenants.id(tenant)
    now = services.clock.now()
    with session_scope(services.engine) as session:
        query = _query(session, query_id, tenant_id)
        if query.status is QueryStatus.RESOLVED:
            return query.thread_id
        hold = session.get(Hold, query.hold_id) if query.hold_id is not None else None
        if hold is not None:
            holds.lift(session, hold, now)
        query.status = QueryStatus.RESOLVED
        query.resolved_at = now
        query.resolved_by = by[:200]
        session.add(query)
        session.add(
            QueryEntry(
                query_id=query.id or 0, kind=EntryKind.RESOLVED, author=by[:200], created_at=now
            )
        )
        thread = fetch_thread(session, query.thread_id, tenant_id=tenant_id)
        add_note(
            session,
            thread,
            text=f"query {query_id} resolved; its dispute hold was lifted",
            author=by,
            now=now,
        )
        log.info("query %s of tenant %s resolved", query_id, tenant_id)
        return query.thread_id


def attachment(services: Services, attachment_id: int, *, tenant: str | None) -> StoredFile:
    """A file a customer attached to a query of the clerk's tenant; NotFoundError otherwise."""
    tenant_id = services.tenants.id(tenant)
    with Session(services.engine) as session:
        row = session.get(QueryAttachment, attachment_id)
        if row is None or row.tenant_id != tenant_id:
            raise NotFoundError(f"no attachment {attachment_id}")
        return StoredFile(row.filename, row.content_type, row.data)
