"""SERVICE: the one way an import section puts a record into the ledger.

Every section (customers, invoices, ... payment plans; ``mailer.ledger.receivables``,
``mailer.ledger.billing``, ``mailer.ledger.agreements``) follows the same skeleton: find the
tenant's row by the record's external id; insert it when there is none; otherwise write only
the values that differ, so an unchanged re-import writes nothing. A versioned document (one with
a ``content_hash``: invoices, estimates) is rewritten only when its hash changed, and then its
``version`` rises. The section then records the events the outcome calls for
(``mailer.ledger.eventlog``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from sqlmodel import Session, SQLModel, col, select

from mailer.errors import DocumentError
from mailer.ledger.eventlog import EventLog, assign
from mailer.ledger.models import (
    AutopayFailure,
    CreditNote,
    Customer,
    Estimate,
    Invoice,
    Payment,
    PaymentPlan,
    Refund,
    Subscription,
)

Outcome = Literal["created", "updated", "unchanged"]
# The tables the import's sections look up by external id.
Row = TypeVar(
    "Row",
    Customer,
    Invoice,
    Payment,
    CreditNote,
    Refund,
    AutopayFailure,
    Subscription,
    Estimate,
    PaymentPlan,
)
# Tables with created_at and updated_at: a new row gets both, a changed one a new updated_at.
_STAMPED = (Customer, Invoice, Estimate, Subscription, PaymentPlan)


@dataclass(frozen=True)
class Upserted(Generic[Row]):
    """The row a record was put into, what happened to it, and (for a known row) the values
    it held before, by the names given (a status change decides which email is due)."""

    row: Row
    outcome: Outcome
    previous: Mapping[str, Any] = field(default_factory=dict)

    @property
    def created(self) -> bool:
        return self.outcome == "created"


class LedgerScope:
    """One import's view of one tenant's ledger at ``now``: every query is scoped to the
    tenant, and ``rejected`` names the records of this document that were refused, so a
    reference to one says why it is unknown."""

    def __init__(self, session: Session, tenant_id: int, now: datetime, events: EventLog) -> None:
        self.session = session
        self.tenant_id = tenant_id
        self.now = now
        self.events = events
        self.rejected: dict[str, set[str]] = {}

    def find(self, table: type[Row], external_id: str) -> Row | None:
        """The tenant's row of ``table`` with this external id, if any."""
        query = select(table).where(
            col(table.tenant_id) == self.tenant_id, col(table.external_id) == external_id
        )
        return self.session.exec(query).first()

    def ref(self, table: type[Row], external_id: str, where: str) -> Row:
        """The row a record refers to; a DocumentError at ``where`` when there is none."""
        row = self.find(table, external_id)
        if row is None:
            kind, section = table.__name__.lower(), f"{table.__name__.lower()}s"
            note = (
                " (its record in this document was refused)"
                if external_id in self.rejected.get(section, ())
                else ""
            )
            raise DocumentError(where, f"unknown {kind} {external_id!r}{note}")
        return row

    def claim_number(
        self, table: type[Invoice | Estimate], number: str, rec_where: str, external_id: str
    ) -> None:
        """A number the tenant prints belongs to one of its invoices (or estimates): a
        DocumentError at ``rec_where.number`` when another row of ``table`` has it."""
        clash = self.session.exec(
            select(table).where(
                col(table.tenant_id) == self.tenant_id,
                col(table.number) == number,
                col(table.external_id) != external_id,
            )
        ).first()
        if clash is not None:
            kind = table.__name__.lower()
            raise DocumentError(
                f"{rec_where}.number",
                f"number {number!r} already belongs to {kind} {clash.external_id!r}",
            )

    def upsert(
        self,
        table: type[Row],
        external_id: str,
        values: dict[str, Any],
        *,
        new: Mapping[str, Any] | None = None,
        versioned: bool = False,
        before_update: Callable[[Row], None] | None = None,
    ) -> Upserted[Row]:
        """Insert or update the tenant's ``table`` row ``external_id`` with ``values``.

        ``new`` holds values only a new row takes (an invoice's first status). A new row is
        flushed at once, so it has its id. ``versioned``: the row is rewritten only when
        ``values["content_hash"]`` differs from its own, and its version rises. ``before_update``
        sees a known row before it is changed: it may refuse the change (DocumentError) or add
        to ``values``.
        """
        row = self.find(table, external_id)
        if row is None:
            fields: dict[str, Any] = {"tenant_id": self.tenant_id, "external_id": external_id}
            if issubclass(table, _STAMPED):
                fields.update(created_at=self.now, updated_at=self.now)
            row = table(**fields, **(new or {}), **values)
            self.session.add(row)
            self.session.flush()
            return Upserted(row, "created")
        previous = {name: getattr(row, name) for name in values}
        if versioned and previous["content_hash"] == values["content_hash"]:
            return Upserted(row, "unchanged", previous)
        if before_update is not None:
            before_update(row)
        if not assign(row, **values):
            return Upserted(row, "unchanged", previous)
        if isinstance(row, Invoice | Estimate) and versioned:
            row.version += 1
        if isinstance(row, _STAMPED):
            row.updated_at = self.now
        return Upserted(row, "updated", previous)


class Section:
    """A group of import sections run within one import (``mailer.ledger.billing``,
    ``mailer.ledger.agreements``): the import's scope, session, tenant, ``now`` and events."""

    def __init__(self, scope: LedgerScope) -> None:
        self.scope = scope
        self.session = scope.session
        self.tenant_id = scope.tenant_id
        self.now = scope.now
        self.events = scope.events


def row_id(row: SQLModel) -> int:
    """The primary key of a flushed row (SQLModel types it optional until the INSERT)."""
    value = getattr(row, "id", None)
    if not isinstance(value, int):
        raise RuntimeError(f"{type(row).__name__} was never flushed")
    return value
