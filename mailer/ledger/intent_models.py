"""The payment_intent table: what a customer chose to pay on their account page, before the
payment provider confirms anything.

An intent is not a payment: the ledger's payments still come from the ERP or the bank. It
records which invoices the customer meant to settle and by how much (the allocation), so the
ERP can apply the money the provider later reports to those invoices (the ``payment.intent``
webhook carries it), and so the signed hand-off's nonce names one row.

No ``from __future__ import annotations`` here, as in ``mailer.ledger.models``.
"""

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from mailer.columns import at_column, json_column


class PaymentIntent(SQLModel, table=True):
    """One hand-off to the tenant's payment provider: one currency, one or more invoices."""

    __tablename__ = "payment_intent"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    nonce: str = Field(max_length=64, unique=True)  # signed into the hand-off; names this row
    provider: str = Field(max_length=20)  # "form" or "stripe"
    currency: str = Field(max_length=3)
    total_minor: int = Field(sa_type=sa.BigInteger)
    # [{"invoice_id", "number", "amount_minor"}]: the open balance of each, as chosen
    allocations: list[dict[str, Any]] = json_column(list)
    provider_ref: str | None = Field(default=None, max_length=200)  # a Checkout Session id
    created_at: datetime = at_column()
    expires_at: datetime = at_column()
