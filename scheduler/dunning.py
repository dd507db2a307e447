"""The dunning pass: evaluate the invoices that are due, queue their emails, move their clocks.

Every due time is ``invoice.next_action_at`` (indexed), so a pass reads only the rows whose
time has come, in batches, each batch in one transaction that also queues the emails it
decided on: a crash anywhere rolls back both, and the next pass does the batch again. On
PostgreSQL the batch is claimed ``FOR UPDATE SKIP LOCKED``, so several ``dunmail run``
processes split the due invoices between them; on SQLite ``BEGIN IMMEDIATE`` serialises them.
The idempotency key of each email includes its occasion ("step 2"), a second lock on the door.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mailer.content.kinds import REMINDERS, Kind
from mailer.db import session_scope
from mailer.errors import MailerError
from mailer.ledger.importlock import tenants_importing
from mailer.ledger.models import (
    Customer,
    HoldReason,
    Invoice,
    InvoiceStatus,
)
from scheduler.cadence import (
    Action,
    ActiveHold,
    Evaluation,
    evaluate,
)
from scheduler.invoice_state import (
    active_holds,
    closed_by_credit,
    customers_by_id,
    facts_of,
    state_columns,
    update_invoices,
)
from scheduler.rules import RulesBook
from scheduler.triggers import Triggers

log = logging.getLogger(__name__)


@dataclass
class DunningReport:
    """What one pass did."""

    evaluated: int = 0
    queued: Counter[str] = field(default_factory=Counter)  # by email kind
    errors: list[str] = field(default_factory=list)

    @property
    def total_queued(self) -> int:
        return sum(self.queued.values())

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.queued.items())) or "nothing"
        return f"evaluated {self.evaluated} invoice(s); queued {kinds}" + (
            f"; {len(self.errors)} error(s)" if self.errors else ""
        )


@dataclass(frozen=True)
class PlanEntry:
    """One line of ``dunmail plan``: what the engine would do for a document, and why.

    ``document`` is an invoice number, or an event's key (``payment:p-1``, ``statement:...``).
    """

    document: str
    customer: str
    action: Action | None
    recipients: tuple[str, ...]
    reason: str
    next_at: datetime | None

    def as_dict(self) -> dict[str, object]:
        return {
            "document": self.document,
            "customer": self.customer,
            "send": self.action.kind if self.action else None,
            "occasion": self.action.occasion if self.action else None,
            "to": list(self.recipients),
            "why": self.reason,
            "next_at": self.next_at.isoformat() if self.next_at else None,
        }


class Dunning:
    """The pass and the simulator over one database, for the configured tenants."""

    def __init__(
        self,
        engine: Engine,
        *,
        tenant_ids: Collection[int],
        rules: RulesBook,
        triggers: Triggers,
        batch_size: int = 500,
    ) -> None:
        """``rules`` says each customer's cadence and calendar; ``triggers`` queues the email
        a decision calls for, in the pass's transaction."""
        self._engine = engine
        self._tenant_ids = sorted(tenant_ids)
        self._rules = rules
        self._triggers = triggers
        self._batch_size = batch_size

    # -- the pass ----------------------------------------------------------------------------

    def run_pass(self, now: datetime) -> DunningReport:
        """Evaluate every invoice due at ``now``, batch by batch, until none is left."""
        report = DunningReport()
        while self._tenant_ids:
            with session_scope(self._engine) as session:
                invoices = self._claim(session, now)
                if not invoices:
                    break
                self._decide(session, invoices, now, report)
        if report.evaluated:
            log.info("dunning pass at %s: %s", now.isoformat(), report.summary())
        return report

    def _claim(self, session: Session, now: datetime) -> list[Invoice]:
        # A tenant whose import is running has a half-applied ledger (an invoice in, its
        # payment not yet): its invoices wait until the import is done
        # (mailer/ledger/importlock.py).
        importing = tenants_importing(session)
        query = (
            select(Invoice)
            .where(
                col(Invoice.next_action_at) <= now,
                col(Invoice.tenant_id).in_([t for t in self._tenant_ids if t not in importing]),
            )
            .order_by(col(Invoice.next_action_at))
            .limit(self._batch_size)
            .with_for_update(skip_locked=True)
        )
        return list(session.exec(query).all())

    def _decide(
        self, session: Session, invoices: list[Invoice], now: datetime, report: DunningReport
    ) -> None:
        decisions = self._evaluate(session, invoices, now)
        # Every plain email of the batch is queued in a few statements, not several per invoice.
        plain = [
            (d.invoice, d.customer, d.result.action)
            for d in decisions
            if d.result.action is not None and d.summary is None
        ]
        failed = dict(self._triggers.enqueue_batch(session, plain, now)) if plain else {}
        states: list[dict[str, Any]] = []  # new state and next time, one UPDATE for the batch
        times: list[dict[str, Any]] = []  # next time only
        for decision in decisions:
            invoice, result = decision.invoice, decision.result
            report.evaluated += 1
            next_at = result.next_at if result.next_at and result.next_at > now else None
            if result.action is not None:
                error = failed.get(invoice.id or 0)
                if error is None and decision.summary is not None:
                    try:
                        with session.begin_nested():
                            self._summarise(session, decision, now)
                    except MailerError as exc:
                        error = str(exc)
                if error is not None:
                    # One bad record never stops the batch: it waits until its data changes
                    # (an import or a contact fix sets next_action_at again). A customer
                    # already paused for a contact nobody can reach is known, and shown in
                    # the inbox: an error on every pass would only bury the real ones.
                    times.append({"b_id": invoice.id, "next_action_at": None})
                    if _waits_for_contact(decision):
                        log.debug(
                            "invoice %s: %s; waits for the contact fix", invoice.number, error
                        )
                        continue
                    report.errors.append(f"invoice {invoice.number}: {error}")
                    log.warning("invoice %s: %s; not queued", invoice.number, error)
                    continue
                report.queued[result.action.kind] += 1
            if decision.rides_along:  # its state is written by the summary that carries it
                times.append({"b_id": invoice.id, "next_action_at": next_at})
            else:
                states.append(
                    {"b_id": invoice.id, **state_columns(result.state), "next_action_at": next_at}
                )
        update_invoices(session, states)
        update_invoices(session, times)

    def _summarise(self, session: Session, decision: _Decision, now: datetime) -> None:
        """The customer-level email; every invoice on it counts as chased now."""
        assert decision.summary is not None and decision.result.action is not None
        self._triggers.enqueue_summary(
            session, decision.customer, decision.summary, decision.result.action.occasion, now
        )
        for other in decision.summary:
            if other.id != decision.invoice.id:
                other.last_dunned_at = now

    def _evaluate(
        self, session: Session, invoices: list[Invoice], now: datetime
    ) -> list[_Decision]:
        """Evaluate each invoice; under a per-customer cadence, only the customer's oldest
        overdue invoice (per currency) drives the reminders, as one email listing them all."""
        customers = customers_by_id(session, {i.customer_id for i in invoices})
        holds = active_holds(session, invoices, now)
        credited = closed_by_credit(session, invoices)
        decisions = []
        drivers: dict[tuple[int, str], Invoice | None] = {}
        for invoice in invoices:
            customer = customers[invoice.customer_id]
            rules = self._rules.rules_for(invoice.tenant_id, customer)
            facts = facts_of(
                invoice,
                customer,
                holds.get(invoice.id or 0),
                closed_by_credit=(invoice.id or 0) in credited,
            )
            result = evaluate(facts, rules, now)
            decision = _Decision(invoice, customer, result, hold=facts.hold)
            action = result.action
            if rules.cadence.per == "customer" and action is not None and action.kind in REMINDERS:
                group = (invoice.customer_id, invoice.currency)
                if group not in drivers:
                    drivers[group] = _oldest_open(session, invoice, rules.minimum(invoice.currency))
                driver = drivers[group]
                if driver is None or driver.id != invoice.id:
                    wake = driver.next_action_at if driver is not None else None
                    decision.rides_along = True
                    decision.result = Evaluation(
                        None,
                        facts.state,
                        wake if wake is not None and wake > now else now + timedelta(days=1),
                        f"chased with the customer's oldest invoice"
                        f" {driver.number if driver else ''}".rstrip(),
                    )
                else:
                    decision.summary = _overdue(session, invoice, now)
                    decision.result = replace(
                        result,
                        action=Action(
                            Kind.OVERDUE_SUMMARY, f"{invoice.number} {action.occasion}"[:63]
                        ),
                        reason=f"{result.reason}; one email for {len(decision.summary)} overdue",
                    )
            decisions.append(decision)
        return decisions

    # -- the simulator -----------------------------------------------------------------------

    def plan(
        self,
        now: datetime,
        *,
        tenant_id: int,
        customer: str | None = None,
        everything: bool = False,
        limit: int = 1000,
    ) -> list[PlanEntry]:
        """What a pass at ``now`` would send, to whom, and why; nothing is written.

        By default only invoices whose next action time has come are listed (what the pass
        will look at); ``everything`` lists every open invoice with the reason it waits, and
        ``customer`` every invoice of that customer.
        """
        with Session(self._engine) as session:
            query = select(Invoice).where(col(Invoice.tenant_id) == tenant_id)
            if customer is not None:
                query = query.join(Customer, col(Customer.id) == col(Invoice.customer_id)).where(
                    col(Customer.external_id) == customer
                )
            if customer is None and not everything:
                query = query.where(col(Invoice.next_action_at) <= now)
            elif customer is None:
                query = query.where(col(Invoice.status) == InvoiceStatus.OPEN)
            invoices = list(
                session.exec(
                    query.order_by(col(Invoice.next_action_at), col(Invoice.id)).limit(limit)
                ).all()
            )
            entries = []
            for decision in self._evaluate(session, invoices, now):
                invoice, who, result = decision.invoice, decision.customer, decision.result
                recipients = self._triggers.recipients_of(session, invoice) if result.action else ()
                entries.append(
                    PlanEntry(
                        document=invoice.number,
                        customer=who.external_id,
                        action=result.action,
                        recipients=recipients,
                        reason=result.reason
                        + ("" if recipients or not result.action else ": no contact to send to"),
                        next_at=result.next_at,
                    )
                )
        return entries


@dataclass
class _Decision:
    invoice: Invoice
    customer: Customer
    result: Evaluation
    summary: list[Invoice] | None = None  # a customer-level email listing these invoices
    # Chased by the customer's oldest invoice: its state is written by that one's summary.
    rides_along: bool = False
    hold: ActiveHold | None = None  # the hold in force for the invoice, if any


def _waits_for_contact(decision: _Decision) -> bool:
    """Whether the invoice's customer is paused because nobody can be reached (a return
    blocked its last contact): its email could not be queued for that known reason."""
    return decision.hold is not None and decision.hold.reason is HoldReason.CONTACT_BOUNCED


def _oldest_open(session: Session, invoice: Invoice, minimum: int) -> Invoice | None:
    """The customer's open invoice in this currency that has been due longest."""
    return session.exec(
        select(Invoice)
        .where(
            col(Invoice.customer_id) == invoice.customer_id,
            col(Invoice.currency) == invoice.currency,
            col(Invoice.status) == InvoiceStatus.OPEN,
            col(Invoice.balance_minor) >= minimum,
        )
        .order_by(col(Invoice.due_at), col(Invoice.id))
        .limit(1)
    ).first()


def _overdue(session: Session, invoice: Invoice, now: datetime) -> list[Invoice]:
    """Every open invoice of the customer in this currency past its due date, oldest first."""
    rows = session.exec(
        select(Invoice)
        .where(
            col(Invoice.customer_id) == invoice.customer_id,
            col(Invoice.currency) == invoice.currency,
            col(Invoice.status) == InvoiceStatus.OPEN,
            col(Invoice.balance_minor) > 0,
            col(Invoice.due_at) < now,
        )
        .order_by(col(Invoice.due_at), col(Invoice.id))
    ).all()
    found = list(rows)
    return found if any(i.id == invoice.id for i in found) else [invoice, *found]
