"""What a pass reads about an invoice from the ledger and writes back: its dunning state, its
customer, the holds in force, whether a credit note closed it.

The dunning pass, pre-flight and a send by hand all read and write an invoice's dunning state
here, so the columns and the rules for reading them are in one place.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailer.ledger.models import Customer, Hold, Invoice, InvoiceStatus, PaymentAllocation
from scheduler.cadence import ActiveHold, DunningState, InvoiceFacts


def facts_of(
    invoice: Invoice,
    customer: Customer,
    hold: ActiveHold | None,
    *,
    closed_by_credit: bool = False,
) -> InvoiceFacts:
    return InvoiceFacts(
        closed_by_credit=closed_by_credit,
        number=invoice.number,
        status=invoice.status,
        balance_minor=invoice.balance_minor,
        currency=invoice.currency,
        issued_at=invoice.issued_at,
        due_at=invoice.due_at,
        updated_at=invoice.updated_at,
        chase=customer.chase,
        state=state_of(invoice),
        hold=hold,
    )


def closed_by_credit(session: Session, invoices: Iterable[Invoice]) -> set[int]:
    """The paid invoices among ``invoices`` whose balance a credit note closed: their newest
    settlement (allocation) is a credit note's, not a payment's.

    An import replaces a payment's or a credit note's allocations whenever they change, so the
    newest allocation of an invoice is the settlement that last moved its balance, the one
    that made it paid. A paid invoice with no allocation was paid in the ERP: a payment.
    """
    paid = [i.id for i in invoices if i.status is InvoiceStatus.PAID and i.id is not None]
    if not paid:
        return set()
    newest = (
        sa.select(
            col(PaymentAllocation.invoice_id),
            sa.func.max(col(PaymentAllocation.id)).label("newest"),
        )
        .where(col(PaymentAllocation.invoice_id).in_(paid))
        .group_by(col(PaymentAllocation.invoice_id))
        .subquery()
    )
    rows = session.execute(
        sa.select(col(PaymentAllocation.invoice_id))
        .join(newest, newest.c.newest == col(PaymentAllocation.id))
        .where(col(PaymentAllocation.credit_note_id).is_not(None))
    )
    return {int(invoice_id) for invoice_id in rows.scalars()}


def state_of(invoice: Invoice) -> DunningState:
    return DunningState(
        sent_at=invoice.sent_at,
        step=invoice.dunning_step,
        repeats=invoice.dunning_repeats,
        last_dunned_at=invoice.last_dunned_at,
    )


def state_columns(state: DunningState) -> dict[str, Any]:
    return {
        "sent_at": state.sent_at,
        "dunning_step": state.step,
        "dunning_repeats": state.repeats,
        "last_dunned_at": state.last_dunned_at,
    }


def update_invoices(session: Session, rows: list[dict[str, Any]]) -> None:
    """One executemany UPDATE by id: thousands of invoices per pass, one prepared statement."""
    if not rows:
        return
    table = Invoice.__table__  # type: ignore[attr-defined]
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        _update_as_json(connection, table, rows)
        return
    values: dict[str, Any] = {name: sa.bindparam(name) for name in rows[0] if name != "b_id"}
    connection.execute(
        sa.update(table).where(table.c.id == sa.bindparam("b_id")).values(**values), rows
    )


def _update_as_json(connection: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """:func:`update_invoices` on PostgreSQL: one UPDATE ... FROM over one JSON parameter,
    planned once, instead of an executemany that runs every row on its own. Each value goes
    through its column's bind processing first (UTC datetimes), as the executemany's would."""
    dialect = connection.dialect
    names = [name for name in rows[0] if name != "b_id"]
    types = {name: table.c[name].type for name in names}
    decorators = {n: t for n, t in types.items() if isinstance(t, sa.types.TypeDecorator)}

    def plain(name: str, value: Any) -> Any:
        if name in decorators:
            value = decorators[name].process_bind_param(value, dialect)
        return value.isoformat() if isinstance(value, datetime) else value

    payload = [{"b_id": row["b_id"], **{n: plain(n, row[n]) for n in names}} for row in rows]
    columns = ", ".join(f"{n} {types[n].compile(dialect=dialect)}" for n in names)
    statement = sa.text(
        f"UPDATE {table.name} SET {', '.join(f'{n} = r.{n}' for n in names)} "
        f"FROM json_to_recordset(CAST(:rows AS json)) AS r(b_id integer, {columns}) "
        f"WHERE {table.name}.id = r.b_id"
    )
    connection.execute(statement, {"rows": json.dumps(payload)})


def store_state(invoice: Invoice, state: DunningState) -> None:
    invoice.sent_at = state.sent_at
    invoice.dunning_step = state.step
    invoice.dunning_repeats = state.repeats
    invoice.last_dunned_at = state.last_dunned_at


def customers_by_id(session: Session, ids: Iterable[int]) -> dict[int, Customer]:
    wanted = list(ids)
    if not wanted:
        return {}
    rows = session.exec(select(Customer).where(col(Customer.id).in_(wanted))).all()
    return {c.id or 0: c for c in rows}


def active_holds(
    session: Session, invoices: Iterable[Invoice], now: datetime
) -> dict[int, ActiveHold]:
    """The hold in force at ``now`` for each invoice (its own, or its customer's).

    Where several apply, the one that lasts longest wins (an open-ended one beats all).
    """
    invoices = list(invoices)
    if not invoices:
        return {}
    customer_ids = list({i.customer_id for i in invoices})
    rows = session.exec(
        select(Hold).where(
            col(Hold.customer_id).in_(customer_ids),
            col(Hold.lifted_at).is_(None),
            sa.or_(col(Hold.ends_at).is_(None), col(Hold.ends_at) > now),
        )
    ).all()
    if not rows:
        return {}
    far = now + timedelta(days=365 * 1000)
    result: dict[int, ActiveHold] = {}
    for invoice in invoices:
        applicable = [
            h
            for h in rows
            if h.customer_id == invoice.customer_id
            and (h.invoice_id is None or h.invoice_id == invoice.id)
        ]
        if applicable:
            best = max(applicable, key=lambda h: h.ends_at or far)
            result[invoice.id or 0] = ActiveHold(best.reason, best.ends_at)
    return result
