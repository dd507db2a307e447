"""The tables of a customer's delivery preferences: contact addresses waiting for their
confirmation, and the log of every change a customer made (who, through which link, when).

A requested address is not a contact until the link emailed to it is followed: the request
row holds it meanwhile. Every change (requested, added, changed, removed, PDF delivery,
language) is one :class:`PreferenceChange` row, shown to the clerk on the customer's page.
An addition or removal also remembers the addresses the ERP listed at the time
(``erp_listed``): it stands while an import lists the same ones (the README's rule for a
clerk's corrections), and is over (``standing`` false) once the ERP lists other contacts.

No ``from __future__ import annotations`` here, as in ``mailer.ledger.models``.
"""

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from mailer.columns import at_column, state_column


class RequestStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    WITHDRAWN = "withdrawn"  # another request for the same customer replaced it


class ContactRequest(SQLModel, table=True):
    """An address a customer asked for, not used until its confirmation link is followed."""

    __tablename__ = "contact_request"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    email: str = Field(max_length=320)
    name: str | None = Field(default=None, max_length=300)
    replaces: str | None = Field(default=None, max_length=320)  # a contact's address it changes
    status: RequestStatus = state_column(RequestStatus, RequestStatus.PENDING)
    requested_by: str = Field(max_length=200)  # "customer via the View link of email <uid>"
    requested_at: datetime = at_column()
    expires_at: datetime = at_column()
    confirmed_at: datetime | None = at_column(nullable=True)


class ChangeKind(StrEnum):
    CONTACT_REQUESTED = "contact_requested"
    CONTACT_ADDED = "contact_added"
    CONTACT_CHANGED = "contact_changed"
    CONTACT_REMOVED = "contact_removed"
    PDF_DELIVERY = "pdf_delivery"
    LANGUAGE = "language"


class PreferenceChange(SQLModel, table=True):
    """One change a customer made to how they are mailed: the audit the clerk reads."""

    __tablename__ = "preference_change"
    __table_args__ = (sa.Index("ix_preference_change_customer_at", "customer_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    customer_id: int = Field(foreign_key="customer.id")
    kind: ChangeKind = state_column(ChangeKind)
    old: str | None = Field(default=None, max_length=320)
    new: str | None = Field(default=None, max_length=320)
    by: str = Field(max_length=200)
    at: datetime = at_column()
    # An addition or removal: the addresses the ERP listed then, and whether it still stands.
    erp_listed: list[str] | None = Field(default=None, sa_type=sa.JSON)
    standing: bool = False
    ended_at: datetime | None = at_column(nullable=True)
