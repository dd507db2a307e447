"""The suppression list: which of a tenant's addresses must not be mailed now, and why.

One place decides whether an address is blocked, so pre-flight, contact selection, the bounce
processor and the inbox agree: a row blocks while it is not lifted and not expired. Hard
bounces and complaints block until a person unblocks the address; repeated soft bounces
(a full mailbox, a greylisting server that never relents) block for a period only, because
the mailbox usually recovers. Addresses are compared case-insensitively (RFC 5321 allows a
case-sensitive local part, but no real mailbox relies on it and ERPs re-type addresses).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailer.errors import MailerError, NotFoundError
from mailer.inbox_models import DeliveryEvent
from mailer.outbound.models import Message, Suppression


class SuppressionKind(StrEnum):
    HARD = "hard"  # the address does not exist: until unblocked
    COMPLAINT = "complaint"  # the person marked our email as spam: until unblocked
    SOFT = "soft"  # repeated temporary failures: for a period
    MANUAL = "manual"  # a person blocked it


@dataclass(frozen=True)
class SoftBouncePolicy:
    """How many soft bounces within ``window`` block an address, and for how long."""

    limit: int = 3
    window: timedelta = timedelta(days=7)
    period: timedelta = timedelta(days=14)


def normal(address: str) -> str:
    """The form suppressions are stored and compared in."""
    return address.strip().lower()


def is_active(row: Suppression, now: datetime) -> bool:
    """Whether ``row`` blocks its address at ``now``."""
    if row.lifted_at is not None:
        return False
    return row.expires_at is None or row.expires_at > now


def active(
    session: Session, tenant_ids: Iterable[int], addresses: Iterable[str], now: datetime
) -> dict[tuple[int, str], Suppression]:
    """(tenant id, normal address) -> the row blocking it, for the given addresses only."""
    wanted = {normal(a) for a in addresses}
    tenants = set(tenant_ids)
    if not wanted or not tenants:
        return {}
    rows = session.exec(
        select(Suppression).where(
            col(Suppression.tenant_id).in_(sorted(tenants)),
            col(Suppression.address).in_(sorted(wanted)),
            col(Suppression.lifted_at).is_(None),
        )
    ).all()
    return {(r.tenant_id, r.address): r for r in rows if is_active(r, now)}


def suppress(
    session: Session,
    *,
    tenant_id: int,
    address: str,
    kind: SuppressionKind,
    reason: str,
    now: datetime,
    until: datetime | None = None,
    by: str = "bounce",
) -> bool:
    """Block ``address`` for the tenant; returns whether it was not blocked before.

    An address already blocked keeps its row, except that a permanent block replaces a
    temporary one. A lifted or expired row is re-armed with the new reason, so the
    suppression list has one row per address and its current state.
    """
    key = normal(address)
    row = session.exec(
        select(Suppression).where(Suppression.tenant_id == tenant_id, Suppression.address == key)
    ).first()
    if row is not None and is_active(row, now):
        if row.expires_at is not None and until is None:
            row.kind, row.reason, row.expires_at, row.created_by = kind.value, reason, None, by
            session.add(row)
        return False
    if row is None:
        row = Suppression(tenant_id=tenant_id, address=key, reason=reason, created_at=now)
    row.kind = kind.value
    row.reason = reason[:300]
    row.created_at = now
    row.created_by = by[:200]
    row.expires_at = until
    row.lifted_at = row.lifted_by = row.lift_reason = None
    session.add(row)
    session.flush()
    return True


def unblock(
    session: Session, *, tenant_id: int, address: str, by: str, why: str, now: datetime
) -> Suppression:
    """Lift the block on ``address``, recording who did it, when and why."""
    if not by.strip() or not why.strip():
        raise MailerError("unblocking an address needs who (--by) and why (--reason)")
    row = session.exec(
        select(Suppression).where(
            Suppression.tenant_id == tenant_id, Suppression.address == normal(address)
        )
    ).first()
    if row is None or not is_active(row, now):
        raise NotFoundError(f"{address} is not suppressed")
    row.lifted_at = now
    row.lifted_by = by.strip()[:200]
    row.lift_reason = why.strip()[:300]
    session.add(row)
    session.flush()
    return row


def soft_bounces_reached(
    session: Session,
    *,
    tenant_id: int,
    address: str,
    policy: SoftBouncePolicy,
    now: datetime,
) -> int | None:
    """The number of soft bounces of ``address`` within the policy's window when it reaches
    the limit, else None. Counts distinct inbound reports, so a report listed twice counts once.
    """
    since = now - policy.window
    count = session.exec(
        select(sa.func.count(sa.distinct(col(DeliveryEvent.inbound_id))))
        .join(Message, col(Message.id) == col(DeliveryEvent.message_id))
        .where(
            col(Message.tenant_id) == tenant_id,
            col(DeliveryEvent.address) == normal(address),
            col(DeliveryEvent.kind) == "bounce",
            col(DeliveryEvent.hard).is_(False),
            col(DeliveryEvent.created_at) >= since,
        )
    ).one()
    return int(count) if int(count) >= policy.limit else None
