"""Who is not mailed: a tenant's blocked addresses, blocking and unblocking by hand, and the
bounce and complaint report that explains them.

One part of :class:`dunmail.app.Services`; the rules of a suppression (kinds, expiry, the
soft-bounce count) are mailer/outbound/suppression.py's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from bounce.pause import pause_unreachable
from bounce.reporting import bounce_rows
from mailer.address import parse_addr_spec
from mailer.clock import Clock
from mailer.db import session_scope
from mailer.outbound.models import Suppression
from mailer.outbound.suppression import SuppressionKind, suppress, unblock
from mailer.outbound.suppression import is_active as is_suppressed
from mailer.tenants import Tenants


class Suppressions:
    """A tenant's suppression list, by its slug, as the CLI and the AR inbox show and edit it."""

    def __init__(self, engine: Engine, *, clock: Clock, tenants: Tenants) -> None:
        self.engine = engine
        self.clock = clock
        self.tenants = tenants

    def blocked(self, *, tenant: str | None, everything: bool = False) -> list[dict[str, Any]]:
        """The tenant's blocked addresses (``everything``: lifted and expired ones too), oldest
        first."""
        tenant_id = self.tenants.id(tenant)
        now = self.clock.now()
        with Session(self.engine) as session:
            rows = session.exec(
                select(Suppression)
                .where(Suppression.tenant_id == tenant_id)
                .order_by(col(Suppression.created_at), col(Suppression.id))
            ).all()
        return [
            {
                "address": r.address,
                "kind": r.kind,
                "reason": r.reason,
                "created_at": r.created_at.isoformat(),
                "created_by": r.created_by,
                "expires_at": r.expires_at.isoformat() if r.expires_at else None,
                "active": is_suppressed(r, now),
                "lifted_at": r.lifted_at.isoformat() if r.lifted_at else None,
                "lifted_by": r.lifted_by,
                "lift_reason": r.lift_reason,
            }
            for r in rows
            if everything or is_suppressed(r, now)
        ]

    def suppress(self, address: str, *, tenant: str | None, reason: str, by: str) -> bool:
        """Block an address by hand (until unblocked); False if it was blocked already. A
        customer left with no reachable contact is paused as a bounce would pause it
        (bounce/recovery.py), so its chasing waits visibly for a fixed contact."""
        tenant_id = self.tenants.id(tenant)
        now = self.clock.now()
        with session_scope(self.engine) as session:
            blocked = parse_addr_spec(address)
            new = suppress(
                session,
                tenant_id=tenant_id,
                address=blocked,
                kind=SuppressionKind.MANUAL,
                reason=reason,
                now=now,
                by=by,
            )
            if new:
                pause_unreachable(
                    session,
                    tenant_id=tenant_id,
                    addresses=[blocked],
                    why=f"blocked by {by} ({reason})",
                    now=now,
                )
            return new

    def unblock(self, address: str, *, tenant: str | None, by: str, why: str) -> None:
        """Let mail go to a blocked address again, recording who, when and why."""
        tenant_id = self.tenants.id(tenant)
        with session_scope(self.engine) as session:
            unblock(
                session, tenant_id=tenant_id, address=address, by=by, why=why, now=self.clock.now()
            )

    def bounce_report(self, *, tenant: str | None, since: datetime) -> list[dict[str, Any]]:
        """The tenant's bounces and complaints since ``since`` (bounce/reporting.py)."""
        tenant_id = self.tenants.id(tenant)
        with Session(self.engine) as session:
            return bounce_rows(session, tenant_id=tenant_id, since=since, now=self.clock.now())
