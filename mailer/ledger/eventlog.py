"""SERVICE: record, refresh and retire ``Event`` rows: the emails the ledger asks for.

The ledger decides *which* occasion a record is (a new payment, a changed credit note, a moved
bill date); this module keeps the rule that each occasion, named by its key, is one row, and that
only a pending row may still change: once queued, the email is what was sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, SQLModel, col, select

from mailer.ledger.models import Event, EventStatus


@dataclass(frozen=True)
class EventSpec:
    """Everything an event row holds that its record decides (see ``Event``'s docstring)."""

    kind: str
    key: str
    customer_id: int
    document: str
    context: dict[str, Any]
    due_at: datetime
    version: int = 1
    invoice_id: int | None = None
    happened_at: datetime | None = None  # when the payment, refund, ... itself took place


class EventLog:
    """One tenant's events, as one import sees them at ``now``; counts the rows it records."""

    def __init__(
        self,
        session: Session,
        tenant_id: int,
        now: datetime,
        *,
        max_age: timedelta | None = None,
    ) -> None:
        """``max_age``: an occasion that happened longer ago than this when it reaches the
        ledger is history, not news (the first import of an ERP's past payments): it is
        recorded as skipped, so no customer gets a receipt for last year's payment."""
        self.session = session
        self.tenant_id = tenant_id
        self.now = now
        self.max_age = max_age
        self.recorded = 0

    def find(self, key: str) -> Event | None:
        """The event ``key`` names, whatever became of it."""
        query = select(Event).where(col(Event.tenant_id) == self.tenant_id, col(Event.key) == key)
        return self.session.exec(query).first()

    def record(self, spec: EventSpec) -> bool:
        """Record ``spec`` as a pending event unless its key exists; True when it was recorded.

        An existing key is left alone even when skipped or queued long ago: the occasion has
        had its email (or its decision not to send one), and re-importing must not repeat it.
        """
        if self.find(spec.key) is not None:
            return False
        stale = (
            self.max_age is not None
            and spec.happened_at is not None
            and spec.happened_at < self.now - self.max_age
        )
        self.session.add(
            Event(
                tenant_id=self.tenant_id,
                customer_id=spec.customer_id,
                invoice_id=spec.invoice_id,
                kind=spec.kind,
                key=spec.key,
                document=spec.document,
                version=spec.version,
                context=spec.context,
                due_at=spec.due_at,
                status=EventStatus.SKIPPED if stale else EventStatus.PENDING,
                created_at=self.now,
                handled_at=self.now if stale else None,
                note=(
                    f"happened {spec.happened_at:%Y-%m-%d}, more than {self.max_age.days} days "
                    "before it was imported: no email"
                    if stale and spec.happened_at and self.max_age
                    else None
                ),
            )
        )
        self.session.flush()
        self.recorded += 1
        return True

    def refresh(self, spec: EventSpec, *, restart: bool = False) -> bool:
        """Bring a still-pending event up to date with its changed record; True if it changed.

        ``restart`` also moves its due time to ``spec.due_at`` (a grace period starts again with
        every edit); otherwise it keeps its time. A queued or skipped event is not touched.
        """
        event = self.find(spec.key)
        if event is None or event.status is not EventStatus.PENDING:
            return False
        return self.revise(event, spec, restart=restart)

    def announce(self, spec: EventSpec, *, new: bool, restart: bool = False) -> None:
        """The occasion of a record that changed: recorded when the record is ``new``, else its
        still-pending event is refreshed (:meth:`refresh`)."""
        if new:
            self.record(spec)
        else:
            self.refresh(spec, restart=restart)

    def record_or_refresh(self, spec: EventSpec) -> None:
        """Record ``spec``, or when its key exists, bring the pending event up to date and due
        at ``spec.due_at`` (a grace period starts again with every edit)."""
        if not self.record(spec):
            self.refresh(spec, restart=True)

    def revise(self, event: Event, spec: EventSpec, *, restart: bool = False) -> bool:
        """Make a pending ``event`` ask for ``spec``, its key included; True if it changed.

        For an occasion named by a document version (``"estimate:E-1:v2"``): an edit made
        while the last version's email still waits replaces that email instead of adding one.
        ``restart`` moves the due time as in :meth:`refresh`. Not for a queued or skipped event.
        """
        if event.status is not EventStatus.PENDING:
            return False
        values: dict[str, Any] = {
            "key": spec.key,
            "customer_id": spec.customer_id,
            "invoice_id": spec.invoice_id,
            "document": spec.document,
            "version": spec.version,
            "context": spec.context,
        }
        if restart:
            values["due_at"] = spec.due_at
        return assign(event, **values)

    def pending(self, *, kind: str, document: str) -> list[Event]:
        """The pending events of one kind about one document (``"subscription:7"``)."""
        query = select(Event).where(
            col(Event.tenant_id) == self.tenant_id,
            col(Event.kind) == kind,
            col(Event.document) == document,
            col(Event.status) == EventStatus.PENDING,
        )
        return list(self.session.exec(query))

    def skip(self, event: Event, note: str) -> None:
        """Retire a pending event that no longer applies, saying why (``Event.note``)."""
        event.status = EventStatus.SKIPPED
        event.handled_at = self.now
        event.note = note[:300]


def assign(row: SQLModel, **values: Any) -> bool:
    """Set the attributes that differ; True when any did (so unchanged rows are not written)."""
    changed = False
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed
