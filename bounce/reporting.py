"""SERVICE: the bounce report, one row per failed or complained-about recipient of a tenant.

What an AR lead reviews each week and a deliverability person sorts by reason: which emails
did not arrive, to whom, why, and whether the address is blocked now.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from mailer.inbox_models import DeliveryEvent
from mailer.ledger.models import Customer, Invoice
from mailer.outbound.models import Message
from mailer.outbound.suppression import active as active_suppressions

# Delivery events that mean the email did not arrive (or was unwanted); a delay is not one.
REPORTED_KINDS = ("bounce", "complaint")
COLUMNS = (
    "at",
    "document",
    "customer",
    "email_kind",
    "address",
    "event",
    "status",
    "reply_code",
    "reason",
    "hard",
    "suppressed",
    "diagnostic",
)


def bounce_rows(
    session: Session, *, tenant_id: int, since: datetime, now: datetime
) -> list[dict[str, Any]]:
    """The tenant's bounces and complaints recorded since ``since``, oldest first."""
    rows = session.exec(
        select(DeliveryEvent, Message, Invoice.number, Customer.external_id)
        .join(Message, col(Message.id) == col(DeliveryEvent.message_id))
        .outerjoin(Invoice, col(Invoice.id) == col(Message.invoice_id))
        .outerjoin(Customer, col(Customer.id) == col(Message.customer_id))
        .where(
            col(Message.tenant_id) == tenant_id,
            col(DeliveryEvent.created_at) >= since,
            col(DeliveryEvent.kind).in_(REPORTED_KINDS),
        )
        .order_by(col(DeliveryEvent.created_at), col(DeliveryEvent.id))
    ).all()
    blocked = active_suppressions(session, [tenant_id], {e.address for e, *_ in rows}, now)
    return [
        {
            "at": event.created_at.isoformat(),
            "document": number or message.kind,
            "customer": customer,
            "email_kind": message.kind,
            "address": event.address,
            "event": event.kind,
            "status": event.status,
            "reply_code": event.reply_code,
            "reason": event.reason,
            "hard": event.hard,
            "suppressed": (tenant_id, event.address) in blocked,
            "diagnostic": event.diagnostic,
        }
        for event, message, number, customer in rows
    ]


def by_reason(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(reason, count), most frequent first: the report's summary."""
    return Counter(str(r["reason"] or "unknown") for r in rows).most_common()


def to_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV with a header line. A cell a spreadsheet would run as a formula
    (``=``, ``+``, ``-``, ``@`` first: the diagnostic comes from a stranger's server) is
    prefixed with an apostrophe (OWASP's CSV injection advice)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row[k]) for k in COLUMNS})
    return out.getvalue()


def _cell(value: object) -> object:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
