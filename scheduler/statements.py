"""Statements: on a schedule (monthly on day D, weekly on a weekday) and on demand.

A statement is a :class:`~mailer.ledger.models.Event` like a receipt: recorded with its frozen
content, then queued by the event pass. The schedule lives in ``customer.next_statement_at``
(indexed), so a pass reads only the customers whose statement is due, and a statement skipped
during downtime is sent once on restart, covering the whole period since the last one.
Statements go out at the window's opening in the customer's zone (else the tenant's), and
only inside the window on a business day: one found due at night or on a weekend waits.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mailer.content.kinds import Kind
from mailer.content.statement import StatementStyle, Transaction, currencies, statement
from mailer.db import session_scope
from mailer.dunning_config import WEEKDAYS, StatementSchedule, parse_statement_schedule
from mailer.ledger.importlock import tenants_importing
from mailer.ledger.localtime import customer_zone
from mailer.ledger.models import (
    CreditNote,
    Customer,
    Event,
    EventStatus,
    Invoice,
    InvoiceStatus,
    Payment,
    Tenant,
)
from scheduler.calendar import SendCalendar
from scheduler.dunning import DunningReport
from scheduler.rules import RulesBook

log = logging.getLogger(__name__)

# tenant id -> its statement schedule and send calendar (in the tenant's zone; each customer
# with a zone of its own gets the same window and business days in that zone)


def next_statement_day(schedule: StatementSchedule, after: date) -> date | None:
    """The first scheduled statement day strictly after ``after``; None: no schedule."""
    if schedule.every == "monthly":
        candidate = after.replace(day=schedule.day)
        if candidate <= after:
            candidate = _add_month(candidate)
        return candidate
    if schedule.every == "weekly":
        ahead = (WEEKDAYS.index(schedule.weekday) - after.weekday()) % 7 or 7
        return after + timedelta(days=ahead)
    return None


def previous_statement_day(schedule: StatementSchedule, on: date) -> date:
    """Where the period of the statement sent on ``on`` starts."""
    if schedule.every == "weekly":
        return on - timedelta(days=7)
    month = on.month - 1 or 12
    year = on.year - (1 if on.month == 1 else 0)
    return date(year, month, min(schedule.day, 28))


def _add_month(day: date) -> date:
    return date(day.year + (day.month == 12), day.month % 12 + 1, day.day)


def transactions(session: Session, customer: Customer) -> list[Transaction]:
    """Every charge and credit on the customer's account, as statements read them."""
    found: list[Transaction] = []
    invoices = session.exec(
        select(Invoice).where(
            col(Invoice.customer_id) == customer.id,
            col(Invoice.status).in_((InvoiceStatus.OPEN, InvoiceStatus.PAID)),
        )
    ).all()
    for inv in invoices:
        found.append(
            Transaction(
                inv.issued_at,
                "invoice",
                inv.number,
                inv.currency,
                inv.total_minor,
                due_at=inv.due_at,
                open_minor=inv.balance_minor if inv.status is InvoiceStatus.OPEN else 0,
            )
        )
    for pay in session.exec(select(Payment).where(col(Payment.customer_id) == customer.id)):
        found.append(
            Transaction(
                pay.received_at, "payment", pay.external_id, pay.currency, -pay.amount_minor
            )
        )
    for note in session.exec(select(CreditNote).where(col(CreditNote.customer_id) == customer.id)):
        found.append(
            Transaction(
                note.issued_at, "credit_note", note.number, note.currency, -note.amount_minor
            )
        )
    return found


def record_statements(
    session: Session,
    customer: Customer,
    *,
    style: StatementStyle,
    start: datetime,
    end: datetime,
    now: datetime,
    key: str,
) -> list[Event]:
    """One pending statement event per currency with something to say; none twice (``key``)."""
    moves = transactions(session, customer)
    tenant = session.get(Tenant, customer.tenant_id)
    zone = customer_zone(customer.time_zone, tenant.time_zone if tenant else None)
    events: list[Event] = []
    for currency in currencies(moves):
        content = statement(style, moves, currency=currency, start=start, end=end, zone=zone)
        if content is None:
            continue
        event_key = f"statement:{customer.external_id}:{currency}:{key}"[:200]
        exists = session.exec(
            select(Event.id).where(
                col(Event.tenant_id) == customer.tenant_id, col(Event.key) == event_key
            )
        ).first()
        if exists is not None:
            continue
        event = Event(
            tenant_id=customer.tenant_id,
            customer_id=customer.id or 0,
            kind=Kind.STATEMENT,
            key=event_key,
            document=f"statement:{customer.id}:{currency}",
            version=int(end.timestamp()) // 60,  # minutes since 1970: fits an INTEGER
            context=content,
            due_at=now,
            status=EventStatus.PENDING,
            created_at=now,
        )
        session.add(event)
        events.append(event)
    session.flush()
    return events


class StatementPass:
    """Records the statements that are due by schedule; the event pass then queues them."""

    def __init__(
        self,
        engine: Engine,
        *,
        tenant_ids: Collection[int],
        rules: RulesBook,
        batch_size: int = 500,
    ) -> None:
        """``rules`` gives each tenant's statement schedule and send calendar."""
        self._engine = engine
        self._tenant_ids = sorted(tenant_ids)
        self._rules = rules
        self._batch_size = batch_size

    def run_pass(self, now: datetime, report: DunningReport) -> None:
        with session_scope(self._engine) as session:
            importing = tenants_importing(session)  # half-applied ledgers wait for their import
        for tenant_id in self._tenant_ids:
            if tenant_id in importing:
                continue
            schedule, calendar = self._rules.statement_settings(tenant_id)
            self._schedule_new_customers(tenant_id, schedule, calendar, now)
            while self._batch(tenant_id, schedule, calendar, now, report):
                pass

    def _schedule_new_customers(
        self, tenant_id: int, schedule: StatementSchedule, calendar: SendCalendar, now: datetime
    ) -> None:
        """Customers without a next statement get their schedule's next day, at the window's
        opening in their own zone: those on the tenant's schedule in one UPDATE per zone,
        those with their own schedule one by one (they are few)."""
        with session_scope(self._engine) as session:
            if schedule.every != "never":
                waiting = (
                    col(Customer.tenant_id) == tenant_id,
                    col(Customer.next_statement_at).is_(None),
                    col(Customer.statement_schedule).is_(None),
                )
                zones = session.exec(select(Customer.time_zone).where(*waiting).distinct()).all()
                for zone in zones:
                    local = calendar.in_zone(zone)
                    first = next_statement_day(schedule, local.local_date(now))
                    same_zone = (
                        col(Customer.time_zone).is_(None)
                        if zone is None
                        else col(Customer.time_zone) == zone
                    )
                    session.execute(
                        sa.update(Customer)
                        .where(*waiting, same_zone)
                        .values(next_statement_at=local.at(first) if first else None)
                    )
            own = session.exec(
                select(Customer).where(
                    col(Customer.tenant_id) == tenant_id,
                    col(Customer.next_statement_at).is_(None),
                    col(Customer.statement_schedule).is_not(None),
                    col(Customer.statement_schedule) != "never",
                )
            ).all()
            for customer in own:
                local = calendar.in_zone(customer.time_zone)
                day = next_statement_day(_own(customer, schedule), local.local_date(now))
                customer.next_statement_at = local.at(day) if day else None

    def _batch(
        self,
        tenant_id: int,
        tenant_schedule: StatementSchedule,
        calendar: SendCalendar,
        now: datetime,
        report: DunningReport,
    ) -> bool:
        with session_scope(self._engine) as session:
            due = session.exec(
                select(Customer)
                .where(
                    col(Customer.tenant_id) == tenant_id,
                    col(Customer.next_statement_at) <= now,
                )
                .order_by(col(Customer.next_statement_at))
                .limit(self._batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            for customer in due:
                schedule = _own(customer, tenant_schedule)
                if schedule.every == "never":  # switched off since it was scheduled
                    customer.next_statement_at = None
                    continue
                local = calendar.in_zone(customer.time_zone)
                opens = local.next_open(now)
                if opens > now:
                    # Due while the engine was down, or found at night: the statement waits
                    # for the customer's window, and says what is true when it goes.
                    customer.next_statement_at = opens
                    continue
                report.evaluated += 1
                scheduled = customer.next_statement_at or now
                end_day = local.local_date(scheduled)
                start = local.at(previous_statement_day(schedule, end_day))
                record_statements(
                    session,
                    customer,
                    style=schedule.style,
                    start=min(start, now),
                    end=now,
                    now=now,
                    key=end_day.isoformat(),
                )
                following = next_statement_day(schedule, local.local_date(now))
                customer.next_statement_at = local.at(following) if following else None
            return len(due) == self._batch_size


def _own(customer: Customer, tenant: StatementSchedule) -> StatementSchedule:
    """The customer's own statement schedule, else the tenant's."""
    if customer.statement_schedule is None:
        return tenant
    return parse_statement_schedule(customer.statement_schedule, tenant.style)
