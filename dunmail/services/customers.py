"""The clerk's look-ups: find a customer or a document, one customer's page (contacts and whether
each is blocked, documents, emails, threads), the outbox with what came back about each
recipient, the suppression list with the evidence behind each block, and sending any email of a
thread again.

One part of :class:`dunmail.app.Services`. Every read names the tenant, so another tenant's
customer is "not found" like one that does not exist. Rows are data with codes, never words:
the pages and commands put words on them through dunmail/labels.py.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, or_, select

from bounce.threads import thread_messages
from dunmail.services.customer_rows import (
    block_row,
    blocks_of,
    document_row,
    email_rows,
    evidence_of,
    threads_of,
)
from mailer.clock import Clock
from mailer.errors import NotFoundError
from mailer.inbox_models import Thread
from mailer.ledger.models import Contact, CreditNote, Customer, Invoice
from mailer.outbound.models import Message, Suppression
from mailer.outbound.suppression import is_active as is_suppressed
from mailer.tenants import Tenants

LIMIT = 50  # rows a search answers: a clerk narrows the words rather than pages
EMAILS = 100  # a customer's newest emails shown on its page


def _like(q: str) -> str:
    """``q`` as a case-blind LIKE pattern matching it anywhere, its wildcards taken literally."""
    escaped = q.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped[:200]}%"


class Customers:
    """A tenant's customers and documents as the clerk looks them up, by the tenant's slug."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock,
        tenants: Tenants,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.tenants = tenants

    def language(self, *, tenant: str | None) -> str:
        """The tenant's locale (``[tenants.<slug>] locale``): the language its clerks read."""
        _, config = self.tenants.config(self.tenants.id(tenant))
        return config.locale

    def search(self, q: str, *, tenant: str | None) -> list[dict[str, Any]]:
        """The tenant's customers whose name, number (the ERP's id) or a contact's address
        contains ``q`` (any case), by name; nothing for an empty ``q``."""
        if not q.strip():
            return []
        tenant_id = self.tenants.id(tenant)
        pattern = _like(q)
        with Session(self.engine) as session:
            by_contact = select(Contact.customer_id).where(
                Contact.tenant_id == tenant_id, col(Contact.email).ilike(pattern, escape="\\")
            )
            rows = session.exec(
                select(Customer)
                .where(
                    Customer.tenant_id == tenant_id,
                    or_(
                        col(Customer.name).ilike(pattern, escape="\\"),
                        col(Customer.external_id).ilike(pattern, escape="\\"),
                        col(Customer.id).in_(by_contact),
                    ),
                )
                .order_by(col(Customer.name), col(Customer.id))
                .limit(LIMIT)
            ).all()
            return [{"id": c.id, "number": c.external_id, "name": c.name} for c in rows]

    def documents(self, q: str, *, tenant: str | None) -> list[dict[str, Any]]:
        """The tenant's invoices and credit notes whose number contains ``q``, each with its
        customer; nothing for an empty ``q``."""
        if not q.strip():
            return []
        tenant_id = self.tenants.id(tenant)
        pattern = _like(q)
        with Session(self.engine) as session:
            invoices = session.exec(
                select(Invoice, Customer)
                .join(Customer, col(Customer.id) == col(Invoice.customer_id))
                .where(
                    Invoice.tenant_id == tenant_id, col(Invoice.number).ilike(pattern, escape="\\")
                )
                .order_by(col(Invoice.number))
                .limit(LIMIT)
            ).all()
            notes = session.exec(
                select(CreditNote, Customer)
                .join(Customer, col(Customer.id) == col(CreditNote.customer_id))
                .where(
                    CreditNote.tenant_id == tenant_id,
                    col(CreditNote.number).ilike(pattern, escape="\\"),
                )
                .order_by(col(CreditNote.number))
                .limit(LIMIT)
            ).all()
        found = [document_row(i, c, "invoice") for i, c in invoices]
        found += [document_row(n, c, "credit_note") for n, c in notes]
        return found

    def customer(self, customer_id: int, *, tenant: str | None) -> dict[str, Any]:
        """One customer of the tenant: its contacts (each with its block, if any), invoices and
        credit notes, newest emails and threads. NotFoundError for another tenant's."""
        tenant_id = self.tenants.id(tenant)
        now = self.clock.now()
        with Session(self.engine) as session:
            customer = session.get(Customer, customer_id)
            if customer is None or customer.tenant_id != tenant_id:
                raise NotFoundError(f"no customer {customer_id}")
            contacts = session.exec(
                select(Contact).where(Contact.customer_id == customer_id).order_by(col(Contact.id))
            ).all()
            blocks = blocks_of(session, tenant_id, [c.email for c in contacts], now)
            invoices = session.exec(
                select(Invoice)
                .where(Invoice.customer_id == customer_id)
                .order_by(col(Invoice.issued_at).desc())
            ).all()
            notes = session.exec(
                select(CreditNote)
                .where(CreditNote.customer_id == customer_id)
                .order_by(col(CreditNote.issued_at).desc())
            ).all()
            messages = session.exec(
                select(Message)
                .where(Message.customer_id == customer_id, Message.tenant_id == tenant_id)
                .order_by(col(Message.id).desc())
                .limit(EMAILS)
            ).all()
            threads = session.exec(
                select(Thread)
                .where(Thread.customer_id == customer_id, Thread.tenant_id == tenant_id)
                .order_by(col(Thread.last_event_at).desc())
            ).all()
            emails = email_rows(
                session, list(messages), threads_of(session, tenant_id, list(messages))
            )
            return {
                "id": customer.id,
                "number": customer.external_id,
                "name": customer.name,
                "locale": customer.locale,
                "chase": customer.chase,
                "contacts": [
                    {
                        "email": c.email,
                        "name": c.name,
                        "roles": list(c.roles),
                        "erp_email": c.erp_email,
                        "block": blocks.get(c.email.lower()),
                    }
                    for c in contacts
                ],
                "documents": [document_row(i, customer, "invoice") for i in invoices]
                + [document_row(n, customer, "credit_note") for n in notes],
                "emails": emails,
                "threads": [
                    {
                        "id": t.id,
                        "status": t.status.value,
                        "assignee": t.assignee,
                        "task": t.task,
                        "last_event_at": t.last_event_at.isoformat(),
                        "key": t.document,
                    }
                    for t in threads
                ],
            }

    def outbox(self, *, tenant: str | None, limit: int = 200) -> list[dict[str, Any]]:
        """The tenant's newest emails, each recipient with its SMTP answer and, apart from it,
        what came back later (a bounce's reason and status)."""
        tenant_id = self.tenants.id(tenant)
        with Session(self.engine) as session:
            messages = session.exec(
                select(Message)
                .where(Message.tenant_id == tenant_id)
                .order_by(col(Message.id).desc())
                .limit(limit)
            ).all()
            found = list(messages)
            return email_rows(session, found, threads_of(session, tenant_id, found))

    def thread_emails(self, thread_id: int, *, tenant: str | None) -> list[dict[str, Any]]:
        """The emails of one of the tenant's threads (what its page offers to resend)."""
        tenant_id = self.tenants.id(tenant)
        with Session(self.engine) as session:
            thread = session.get(Thread, thread_id)
            if thread is None or thread.tenant_id != tenant_id:
                raise NotFoundError(f"no thread {thread_id}")
            messages = list(reversed(thread_messages(session, thread)))
            return email_rows(session, messages, {thread.document: thread.id or 0})

    def blocks(self, addresses: list[str], *, tenant: str | None) -> dict[str, dict[str, Any]]:
        """The active blocks of ``addresses`` with their evidence, by lower-cased address."""
        tenant_id = self.tenants.id(tenant)
        with Session(self.engine) as session:
            return blocks_of(session, tenant_id, addresses, self.clock.now())

    def blocked(self, *, tenant: str | None, everything: bool = False) -> list[dict[str, Any]]:
        """The tenant's suppressions (``everything``: lifted and expired too), oldest first, each
        with the evidence behind it: the bounce or complaint of which email, or the person."""
        tenant_id = self.tenants.id(tenant)
        now = self.clock.now()
        with Session(self.engine) as session:
            rows = session.exec(
                select(Suppression)
                .where(Suppression.tenant_id == tenant_id)
                .order_by(col(Suppression.created_at), col(Suppression.id))
            ).all()
            shown = [r for r in rows if everything or is_suppressed(r, now)]
            evidence = evidence_of(session, tenant_id, [r.address for r in shown])
            return [
                {**block_row(r, now), "evidence": evidence.get(r.address.lower())} for r in shown
            ]
