"""SERVICE: a customer's query (dispute) on an invoice, raised from the account page.

The customer of a View link (``dunmail/services/portal.py::account_customer``: the token's
tenant and that customer only) picks one of their invoices, a reason and a message, and may
attach one file. In one transaction the query is recorded beside the AR inbox's thread of that
invoice (``invoice:<id>``, created or reopened), and a ``dispute`` hold is placed on the
invoice, so no reminder is queued from the next dunning pass on. A second message on an invoice
whose query is still open adds to that query (one hold). The clerk's side (answer, resolve,
attachments) is ``dunmail/services/query_desk.py``.

Attached files are checked by their first bytes, not by the name or the browser's type: only
PDF, PNG and JPEG, up to :data:`MAX_ATTACHMENT_BYTES`, kept in the database (no path on disk).
Customer messages are limited per customer per hour (:data:`MESSAGES_PER_HOUR`), as the account
page's hand-offs are; every message records the link it came with (its hash) for the audit.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Session, col, select

from dunmail.app import Services
from dunmail.services.portal import account_customer
from dunmail.web.link_service import Opened
from mailer.db import session_scope
from mailer.inbox_models import Thread, ThreadStatus
from mailer.ledger import holds
from mailer.ledger.models import Customer, HoldReason, Invoice, InvoiceStatus
from mailer.outbound.links import token_hash
from mailer.query_models import (
    EntryKind,
    InvoiceQuery,
    QueryAttachment,
    QueryEntry,
    QueryReason,
    QueryStatus,
)

log = logging.getLogger(__name__)
MAX_ATTACHMENT_BYTES = 3 * 1024 * 1024  # fits web.max_body_bytes (4 MiB) with the form around it
MAX_TEXT_CHARS = 4000
MESSAGES_PER_HOUR = 10  # per customer: enough for a person, not for a script
CUSTOMER = "customer"  # the author of a customer's entries
# The allowed files, by their first bytes (the name and the browser's type are not trusted).
SIGNATURES: dict[str, tuple[bytes, str]] = {
    "application/pdf": (b"%PDF-", ".pdf"),
    "image/png": (b"\x89PNG\r\n\x1a\n", ".png"),
    "image/jpeg": (b"\xff\xd8\xff", ".jpg"),
}


class Refusal(StrEnum):
    """Why a query was not taken; the page says it in words."""

    FOREIGN = "foreign"  # not one of this customer's invoices
    REASON = "reason"  # not one of the reasons offered
    EMPTY = "empty"  # no message
    TOO_LONG = "too_long"
    FILE_TYPE = "file_type"  # not a PDF, PNG or JPEG by its bytes
    FILE_SIZE = "file_size"
    LIMITED = "limited"  # too many messages this hour


@dataclass(frozen=True)
class Upload:
    """A file as the browser sent it: its name (only a hint) and its bytes."""

    filename: str
    data: bytes


@dataclass(frozen=True)
class Raised:
    query_id: int
    thread_id: int
    hold_id: int | None
    new: bool  # a new query (and hold); False: a message added to an open one


@dataclass(frozen=True)
class Step:
    """One entry of a query's history as both sides see it."""

    id: int
    kind: str  # EntryKind value
    author: str
    reason: str | None
    text: str
    at: datetime
    files: list[tuple[int, str, str, int]]  # attachment id, filename, content type, size


@dataclass(frozen=True)
class QueryView:
    id: int
    invoice_id: int
    invoice_number: str
    thread_id: int
    reason: str
    status: str
    hold_id: int | None
    created_at: datetime
    steps: list[Step]


def checked_file(upload: Upload) -> tuple[str, str] | Refusal:
    """PURE: (content type, safe filename) of an allowed file, from its bytes; or why not."""
    if len(upload.data) > MAX_ATTACHMENT_BYTES:
        return Refusal.FILE_SIZE
    found = next(
        (kind for kind, (magic, _) in SIGNATURES.items() if upload.data.startswith(magic)), None
    )
    if found is None or not upload.data:
        return Refusal.FILE_TYPE
    stem = upload.filename.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:80] or "attachment"
    return found, stem + SIGNATURES[found][1]


def checked_text(text: str) -> str | Refusal:
    """PURE: the message as stored (control characters but newlines and tabs dropped)."""
    cleaned = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text.replace("\r\n", "\n")).strip()
    if not cleaned:
        return Refusal.EMPTY
    return cleaned if len(cleaned) <= MAX_TEXT_CHARS else Refusal.TOO_LONG


def raise_query(
    services: Services,
    opened: Opened,
    *,
    invoice_id: int,
    reason: str,
    text: str,
    upload: Upload | None = None,
) -> Raised | Refusal | None:
    """Record the customer's query on their invoice and hold its chasing, in one transaction.

    None: the link grants no account. Only an invoice of the link's customer (and tenant) is
    taken; anything else is :attr:`Refusal.FOREIGN`, whether it exists or not.
    """
    if reason not in {r.value for r in QueryReason}:
        return Refusal.REASON
    message = checked_text(text)
    if isinstance(message, Refusal):
        return message
    checked = checked_file(upload) if upload is not None else None
    if isinstance(checked, Refusal):
        return checked
    now = services.clock.now()
    with session_scope(services.engine) as session:
        customer = account_customer(session, opened)
        if customer is None:
            return None
        invoice = session.get(Invoice, invoice_id)
        if (
            invoice is None
            or invoice.tenant_id != customer.tenant_id
            or invoice.customer_id != customer.id
            or invoice.status in (InvoiceStatus.DRAFT, InvoiceStatus.VOID)
        ):
            return Refusal.FOREIGN
        if _recent_messages(session, customer, now) >= MESSAGES_PER_HOUR:
            return Refusal.LIMITED
        thread = _open_thread(session, invoice, now)
        query = session.exec(
            select(InvoiceQuery).where(
                InvoiceQuery.invoice_id == invoice.id, InvoiceQuery.status == QueryStatus.OPEN
            )
        ).first()
        new = query is None
        if query is None:
            hold = holds.place(
                session,
                tenant_id=invoice.tenant_id,
                customer_id=invoice.customer_id,
                invoice_id=invoice.id,
                reason=HoldReason.DISPUTE,
                note=f"customer query from the account page: {reason}",
                by="customer (account page)",
                now=now,
            )
            session.flush()
            query = InvoiceQuery(
                tenant_id=invoice.tenant_id,
                customer_id=invoice.customer_id,
                invoice_id=invoice.id or 0,
                thread_id=thread.id or 0,
                reason=QueryReason(reason),
                hold_id=hold.id,
                created_at=now,
            )
            session.add(query)
            session.flush()
        entry = QueryEntry(
            query_id=query.id or 0,
            kind=EntryKind.MESSAGE,
            reason=reason,
            author=CUSTOMER,
            text=message,
            link_hash=token_hash(opened.token),
            created_at=now,
        )
        session.add(entry)
        session.flush()
        if upload is not None and checked is not None:
            session.add(
                QueryAttachment(
                    tenant_id=invoice.tenant_id,
                    entry_id=entry.id or 0,
                    filename=checked[1],
                    content_type=checked[0],
                    size=len(upload.data),
                    sha256=hashlib.sha256(upload.data).hexdigest(),
                    data=upload.data,
                )
            )
        log.info(
            "query %s on invoice %s (tenant %s): customer message %s%s",
            query.id,
            invoice.id,
            invoice.tenant_id,
            entry.id,
            " with a file" if upload is not None else "",
        )
        return Raised(query.id or 0, thread.id or 0, query.hold_id, new)


def _recent_messages(session: Session, customer: Customer, now: datetime) -> int:
    return session.exec(
        select(sa.func.count())
        .select_from(QueryEntry)
        .join(InvoiceQuery, col(InvoiceQuery.id) == col(QueryEntry.query_id))
        .where(
            InvoiceQuery.tenant_id == customer.tenant_id,
            InvoiceQuery.customer_id == customer.id,
            QueryEntry.kind == EntryKind.MESSAGE,
            col(QueryEntry.created_at) > now - timedelta(hours=1),
        )
    ).one()


def _open_thread(session: Session, invoice: Invoice, now: datetime) -> Thread:
    """The AR inbox's thread of the invoice, created or reopened, at the top of the inbox."""
    document = f"invoice:{invoice.id}"
    thread = session.exec(
        select(Thread).where(Thread.tenant_id == invoice.tenant_id, Thread.document == document)
    ).first()
    if thread is None:
        thread = Thread(
            tenant_id=invoice.tenant_id,
            customer_id=invoice.customer_id,
            document=document,
            created_at=now,
            updated_at=now,
            last_event_at=now,
        )
    thread.status = ThreadStatus.OPEN
    thread.last_event_at = now
    thread.updated_at = now
    session.add(thread)
    session.flush()
    return thread


def customer_queries(services: Services, opened: Opened) -> list[QueryView] | None:
    """Every query of the link's customer with its history, newest first; None: no account."""
    with Session(services.engine) as session:
        customer = account_customer(session, opened)
        if customer is None:
            return None
        found = session.exec(
            select(InvoiceQuery).where(
                InvoiceQuery.tenant_id == customer.tenant_id,
                InvoiceQuery.customer_id == customer.id,
            )
        ).all()
        return read_views(session, list(found))


def read_views(session: Session, found: list[InvoiceQuery]) -> list[QueryView]:
    """The queries with their invoices' numbers and their steps, newest first (three reads)."""
    ids = [q.id for q in found]
    numbers = dict(
        session.exec(
            select(Invoice.id, Invoice.number).where(
                col(Invoice.id).in_([q.invoice_id for q in found])
            )
        ).all()
    )
    entries = session.exec(
        select(QueryEntry)
        .where(col(QueryEntry.query_id).in_(ids))
        .order_by(col(QueryEntry.created_at), col(QueryEntry.id))
    ).all()
    files: dict[int, list[tuple[int, str, str, int]]] = {}
    for row in session.execute(  # five columns: more than sqlmodel's select() types
        sa.select(
            col(QueryAttachment.id),
            col(QueryAttachment.entry_id),
            col(QueryAttachment.filename),
            col(QueryAttachment.content_type),
            col(QueryAttachment.size),
        ).where(col(QueryAttachment.entry_id).in_([e.id for e in entries]))
    ).all():
        files.setdefault(row[1], []).append((row[0], row[2], row[3], row[4]))
    steps: dict[int, list[Step]] = {}
    for e in entries:
        steps.setdefault(e.query_id, []).append(
            Step(
                e.id or 0,
                e.kind.value,
                e.author,
                e.reason,
                e.text,
                e.created_at,
                files.get(e.id or 0, []),
            )
        )
    return [
        QueryView(
            id=q.id or 0,
            invoice_id=q.invoice_id,
            invoice_number=numbers.get(q.invoice_id, ""),
            thread_id=q.thread_id,
            reason=q.reason.value,
            status=q.status.value,
            hold_id=q.hold_id,
            created_at=q.created_at,
            steps=steps.get(q.id or 0, []),
        )
        for q in sorted(found, key=lambda q: (q.created_at, q.id or 0), reverse=True)
    ]
