"""PURE: a customer's statement (``mailer.content.shapes.StatementData``) from its transactions.

Two styles, as AR teams use them:

- **open item**: every invoice still open, with what is left to pay on each; the total is what
  the customer owes today, the overdue part what is past its due date.
- **balance forward**: the balance at the start of the period, then every charge, payment,
  credit and refund in the period with the running balance, ending at what is owed.

One statement per currency: balances in two currencies do not add up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from mailer.ledger.localtime import days_between

StatementStyle = Literal["open_item", "balance_forward"]
TransactionType = Literal["invoice", "payment", "credit_note", "refund", "adjustment"]


@dataclass(frozen=True)
class Transaction:
    """One ledger movement on the customer's account; charges positive, credits negative."""

    at: datetime
    type: TransactionType
    reference: str
    currency: str
    amount_minor: int
    due_at: datetime | None = None  # invoices
    open_minor: int = 0  # invoices: what is still to pay on it today


def statement(
    style: StatementStyle,
    transactions: Iterable[Transaction],
    *,
    currency: str,
    start: datetime,
    end: datetime,
    zone: str | None = None,
) -> dict[str, Any] | None:
    """The ``statement`` context for ``currency`` over ``[start, end)``; None when there is
    nothing to say (no open item, or no balance and no activity).

    An invoice is overdue when its due day is before ``end``'s day in the customer's ``zone``
    (None: UTC): one due today is not overdue yet, whatever the hour.
    """
    mine = sorted((t for t in transactions if t.currency == currency), key=_order)
    invoices = [t for t in mine if t.type == "invoice"]
    overdue = sum(
        t.open_minor
        for t in invoices
        if t.due_at is not None and days_between(t.due_at, end, zone) > 0
    )
    if style == "open_item":
        open_items = [t for t in invoices if t.open_minor > 0 and t.at < end]
        if not open_items:
            return None
        items = [_item(t, t.open_minor) for t in open_items]
        opening, closing = 0, sum(t.open_minor for t in open_items)
    else:
        opening = sum(t.amount_minor for t in mine if t.at < start)
        period = [t for t in mine if start <= t.at < end]
        if not period and opening == 0:
            return None
        items, running = [], opening
        for t in period:
            running += t.amount_minor
            items.append(_item(t, running))
        closing = running
    return {
        "statement": {
            "style": style,
            "period_start": start.isoformat(),
            "period_end": end.isoformat(),
            "currency": currency,
            "opening_balance_minor": opening,
            "closing_balance_minor": closing,
            "overdue_minor": overdue,
            "items": items,
        }
    }


def currencies(transactions: Iterable[Transaction]) -> list[str]:
    return sorted({t.currency for t in transactions})


def _order(t: Transaction) -> tuple[datetime, int, str]:
    # Same instant: charges before what settles them, so a running balance never dips below 0.
    return t.at, 0 if t.type == "invoice" else 1, t.reference


def _item(t: Transaction, balance: int) -> dict[str, Any]:
    return {
        "date": t.at.isoformat(),
        "type": t.type,
        "reference": t.reference,
        "due_at": t.due_at.isoformat() if t.due_at else None,
        "amount_minor": t.amount_minor,
        "balance_minor": balance,
    }
