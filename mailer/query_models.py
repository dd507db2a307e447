"""A customer's query (dispute) on an invoice, raised from the account page: its entries
(the customer's messages, the clerk's answers, the resolve) and the files attached to them.

Beside ``inbox_models.py``: a query is worked from the AR inbox's thread of its invoice
(``Thread.document == "invoice:<id>"``), and its ``dispute`` hold is the ledger's ``Hold``.
The history stays with the invoice: rows are only added, never edited away.

No ``from __future__ import annotations`` here: it breaks SQLModel relationships
(fastapi/sqlmodel#196).
"""

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Column, Field, SQLModel

from mailer.columns import at_column, state_column


class QueryReason(StrEnum):
    """What the customer says is wrong with the invoice."""

    WRONG_AMOUNT = "wrong_amount"
    NOT_RECEIVED = "not_received"
    ALREADY_PAID = "already_paid"
    OTHER = "other"


class QueryStatus(StrEnum):
    OPEN = "open"  # waiting for the AR team; the invoice's dispute hold is active
    RESOLVED = "resolved"  # a clerk resolved it: the hold was lifted, chasing resumes


class EntryKind(StrEnum):
    MESSAGE = "message"  # the customer wrote (from the account page)
    ANSWER = "answer"  # a clerk answered (emailed to the customer)
    RESOLVED = "resolved"  # a clerk resolved the query


class InvoiceQuery(SQLModel, table=True):
    """One query of a customer about one invoice; at most one open per invoice."""

    __tablename__ = "invoice_query"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    thread_id: int = Field(foreign_key="thread.id", index=True)
    reason: QueryReason = state_column(QueryReason)
    status: QueryStatus = state_column(QueryStatus, QueryStatus.OPEN, index=True)
    hold_id: int | None = Field(default=None, foreign_key="hold.id")
    created_at: datetime = at_column()
    resolved_at: datetime | None = at_column(nullable=True)
    resolved_by: str | None = Field(default=None, max_length=200)


class QueryEntry(SQLModel, table=True):
    """One step of a query's history, as both sides see it."""

    __tablename__ = "query_entry"

    id: int | None = Field(default=None, primary_key=True)
    query_id: int = Field(foreign_key="invoice_query.id", index=True)
    kind: EntryKind = state_column(EntryKind)
    reason: str | None = Field(default=None, max_length=20)  # a QueryReason: a customer's message
    author: str = Field(max_length=200)  # "customer" or the clerk's email
    text: str = Field(default="", sa_column=Column(sa.Text, nullable=False))
    # Audit of a customer's message: which link (its SHA-256, never the token) sent it.
    link_hash: str | None = Field(default=None, max_length=64)
    message_id: int | None = Field(default=None, foreign_key="message.id")  # an answer's email
    created_at: datetime = at_column()


class QueryAttachment(SQLModel, table=True):
    """A file the customer attached: checked by its first bytes, kept in the database (no
    path on disk to traverse), served to clerks only as a download of its checked type."""

    __tablename__ = "query_attachment"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    entry_id: int = Field(foreign_key="query_entry.id", index=True)
    filename: str = Field(max_length=120)  # cleaned: letters, digits, dot, dash, underscore
    content_type: str = Field(max_length=40)  # one of the allowed types, from the bytes
    size: int
    sha256: str = Field(max_length=64)
    data: bytes = Field(sa_column=Column(sa.LargeBinary, nullable=False))
