"""The bank_line table: every line of every imported bank statement, and what became of it.

No ``from __future__ import annotations`` here, as in ``mailer.ledger.models``.
"""

from datetime import date, datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from mailer.columns import at_column, state_column


class BankLineStatus(StrEnum):
    MATCHED = "matched"  # a payment was recorded for it (payment_id)
    UNMATCHED = "unmatched"  # in the AR inbox queue: a clerk allocates or ignores it (reason)
    IGNORED = "ignored"  # money out that is not a return (fees, supplier payments), or by hand


class Confidence(StrEnum):
    HIGH = "high"  # an RF reference, or the customer's known IBAN and one invoice's amount
    MEDIUM = "medium"  # the customer by IBAN or exact name, and two invoices' sum
    LOW = "low"  # the customer by a similar name only: suggested, never applied


class BankLine(SQLModel, table=True):
    """One statement line of a tenant, keyed as the bank keys it, so a re-import adds nothing.

    The key is the bank's entry reference with the account, booking date and amount: banks
    reuse entry references across accounts and years, never for one account, day and amount.
    """

    __table_args__ = (
        sa.UniqueConstraint(
            "tenant_id", "account", "entry_ref", "booked_on", "amount_minor", "direction"
        ),
        sa.Index("ix_bankline_queue", "tenant_id", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    account: str = Field(max_length=70)
    entry_ref: str = Field(max_length=140)
    booked_on: date = Field(sa_type=sa.Date)
    amount_minor: int = Field(sa_type=sa.BigInteger)
    currency: str = Field(max_length=3)
    direction: str = Field(max_length=10)  # "credit" | "debit" (bank_statement.Direction)
    reversal: bool = False
    reference: str | None = Field(default=None, max_length=35)  # the RF reference it quoted
    remittance: str = Field(default="", max_length=1000)
    debtor_name: str | None = Field(default=None, max_length=140)
    debtor_iban: str | None = Field(default=None, max_length=34, index=True)
    end_to_end_id: str | None = Field(default=None, max_length=35)
    source: str = Field(default="", max_length=10)  # camt.053, camt.054, mt940
    status: BankLineStatus = state_column(BankLineStatus, BankLineStatus.UNMATCHED)
    reason: str = Field(default="", max_length=300)  # why unmatched, or how it was matched
    confidence: str | None = Field(default=None, max_length=10)  # Confidence, when by amount
    customer_id: int | None = Field(default=None, foreign_key="customer.id", index=True)
    payment_id: int | None = Field(default=None, foreign_key="payment.id", index=True)
    credit_minor: int = Field(default=0, sa_type=sa.BigInteger)  # left on account
    imported_at: datetime = at_column()
    resolved_by: str | None = Field(default=None, max_length=200)
