"""The event pass: ledger events whose time has come become outbox emails.

A payment's receipt, a refund, a credit note (after its grace period), a failed autopay, a
subscription notice, a statement: the ledger records each as an :class:`~mailer.ledger.models.Event`
with its due time, in the transaction that recorded the payment (or the rest). This pass claims
the due ones like the dunning pass claims invoices (``FOR UPDATE SKIP LOCKED`` on PostgreSQL)
and queues each email in the same transaction that marks the event done, so an event becomes
exactly one email, or stays pending, never both and never neither.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mailer.content.kinds import waits_for_window
from mailer.db import session_scope
from mailer.errors import MailerError
from mailer.ledger.models import Customer, Event, EventStatus
from scheduler.cadence import Action
from scheduler.dunning import DunningReport, PlanEntry
from scheduler.rules import RulesBook
from scheduler.triggers import SkipEvent, Triggers

log = logging.getLogger(__name__)


class EventPass:
    """Queues the emails of due events for the configured tenants."""

    def __init__(
        self,
        engine: Engine,
        *,
        tenant_ids: Collection[int],
        triggers: Triggers,
        rules: RulesBook,
        batch_size: int = 500,
    ) -> None:
        """``triggers`` queues each due event's email (raising SkipEvent when there is
        nothing to send: kind switched off, no contact); ``rules`` gives the customer's send
        window, which a windowed kind waits for."""
        self._engine = engine
        self._tenant_ids = sorted(tenant_ids)
        self._triggers = triggers
        self._rules = rules
        self._batch_size = batch_size

    def plan(
        self, now: datetime, *, tenant_id: int, customer: str | None, everything: bool
    ) -> list[PlanEntry]:
        """The pending events a pass at ``now`` would queue (``everything``: later ones too)."""
        with Session(self._engine) as session:
            query = (
                select(Event, Customer.external_id)
                .join(Customer, col(Customer.id) == col(Event.customer_id))
                .where(
                    col(Event.tenant_id) == tenant_id,
                    col(Event.status) == EventStatus.PENDING,
                )
                .order_by(col(Event.due_at), col(Event.id))
            )
            if customer is not None:
                query = query.where(col(Customer.external_id) == customer)
            if not everything:
                query = query.where(col(Event.due_at) <= now)
            entries = []
            for event, who in session.exec(query).all():
                wait = (
                    event.due_at if event.due_at > now else self._window_opens(session, event, now)
                )
                entries.append(
                    PlanEntry(
                        document=event.key,
                        customer=who,
                        action=Action(event.kind, f"event {event.id}") if wait is None else None,
                        recipients=(),
                        reason="recorded by the ledger; due"
                        if wait is None
                        else f"waits until {wait:%Y-%m-%d %H:%M} UTC"
                        + (" (the send window)" if wait != event.due_at else ""),
                        next_at=wait,
                    )
                )
        return entries

    def run_pass(self, now: datetime, report: DunningReport) -> None:
        """Queue every event due at ``now``, batch by batch, into ``report``."""
        while self._tenant_ids:
            with session_scope(self._engine) as session:
                events = list(
                    session.exec(
                        select(Event)
                        .where(
                            col(Event.status) == EventStatus.PENDING,
                            col(Event.due_at) <= now,
                            col(Event.tenant_id).in_(self._tenant_ids),
                        )
                        .order_by(col(Event.due_at), col(Event.id))
                        .limit(self._batch_size)
                        .with_for_update(skip_locked=True)
                    ).all()
                )
                if not events:
                    return
                for event in events:
                    self._one(session, event, now, report)

    def _window_opens(self, session: Session, event: Event, now: datetime) -> datetime | None:
        """When the customer's send window next opens, if ``event`` must wait for it.

        Notices the engine sends on its own schedule (statements, billed-soon) wait for the
        window, like reminders; receipts, refunds and the rest go at once (the per-kind table
        is ``KindSpec.windowed`` in mailer/content/kinds.py)."""
        if not waits_for_window(event.kind):
            return None
        customer = session.get(Customer, event.customer_id)
        if customer is None:
            return None
        opens = self._rules.calendar_for(customer).next_open(now)
        return opens if opens > now else None

    def _one(self, session: Session, event: Event, now: datetime, report: DunningReport) -> None:
        opens = self._window_opens(session, event, now)
        if opens is not None:  # outside the window: wait for it to open
            event.due_at = opens
            return
        report.evaluated += 1
        event.handled_at = now
        try:
            with session.begin_nested():
                self._triggers.enqueue_event(session, event, now)
        except SkipEvent as exc:
            event.status = EventStatus.SKIPPED
            event.note = str(exc)[:300]
            log.info("event %s (%s): not sent: %s", event.key, event.kind, exc)
            return
        except MailerError as exc:
            # One bad event never stops the batch; it is kept, with the reason, for a person.
            event.status = EventStatus.SKIPPED
            event.note = f"error: {exc}"[:300]
            report.errors.append(f"{event.kind} {event.key}: {exc}")
            log.warning("event %s (%s): %s", event.key, event.kind, exc)
            return
        event.status = EventStatus.QUEUED
        report.queued[event.kind] += 1
