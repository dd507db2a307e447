"""SERVICE: the statements a customer was sent, as the account page lists them.

Read in the account page's own read (``portal.read_account``), scoped to its tenant and
customer; the PDF of each is served under the View link (``portal_documents.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from mailer.content.kinds import Kind
from mailer.ledger.models import Customer
from mailer.outbound.models import Message, MessageStatus

STATEMENTS_SHOWN = 12  # the most recent statements listed on the page


@dataclass(frozen=True)
class SentStatement:
    """A statement email the customer was sent (its row id is the URL's, checked on use)."""

    id: int
    currency: str
    period_start: datetime
    period_end: datetime
    closing_minor: int
    stored: bool  # the email carried (or linked) a PDF kept in the PDF store


def sent_statements(session: Session, customer: Customer) -> list[SentStatement]:
    """The customer's most recent statement emails that went out, newest first, one per
    statement (a fresh-link copy of the same statement is not listed twice)."""
    rows = session.exec(
        select(Message)
        .where(
            Message.tenant_id == customer.tenant_id,
            Message.customer_id == customer.id,
            Message.kind == Kind.STATEMENT.value,
            Message.status == MessageStatus.SENT,
        )
        .order_by(col(Message.created_at).desc(), col(Message.id).desc())
        .limit(STATEMENTS_SHOWN * 2)
    ).all()
    found: dict[tuple[str, str], SentStatement] = {}
    for message in rows:
        body = message.context.get("statement")
        if not isinstance(body, dict):
            continue
        try:
            shown = SentStatement(
                id=message.id or 0,
                currency=str(body["currency"]),
                period_start=datetime.fromisoformat(body["period_start"]),
                period_end=datetime.fromisoformat(body["period_end"]),
                closing_minor=int(body["closing_balance_minor"]),
                stored=message.pdf_sha256 is not None,
            )
        except (KeyError, TypeError, ValueError):
            continue  # a context of another shape: not listed rather than a broken row
        found.setdefault((shown.currency, body["period_end"]), shown)
    return list(found.values())[:STATEMENTS_SHOWN]
