"""Outbound webhooks: events queued in the transaction that caused them, delivered later.

To be written (issue 6): ``emit`` adds one ``WebhookDelivery`` row per subscribed endpoint of
the tenant; the worker signs and POSTs due rows, retrying with backoff.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlmodel import Session

EVENTS = (
    "message.sent",
    "message.failed",
    "message.skipped",
    "message.bounced",
    "message.complained",
    "link.clicked",
    "thread.replied",
)


class Webhooks:
    """The tenants' endpoints and the queue of deliveries to them."""

    def emit(
        self,
        session: Session,
        *,
        tenant_id: int,
        event: str,
        data: Mapping[str, Any],
        now: datetime,
    ) -> int:
        """Queue ``event`` for every endpoint of the tenant that wants it, in the caller's
        transaction; returns how many deliveries were queued."""
        return 0
