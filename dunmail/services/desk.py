"""The AR desk's controls: holds on chasing, tenants' template overrides and the outbox
listings. One part of :class:`dunmail.app.Services`, built once with what it reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mailer.clock import Clock
from mailer.content.kinds import KINDS
from mailer.content.models import TemplateOverride
from mailer.content.overrides import (
    fetch_overrides,
    list_overrides,
    reset_overrides,
    store_override,
)
from mailer.content.render import PARTS, Renderer
from mailer.db import session_scope
from mailer.errors import MailerError
from mailer.ledger.models import Hold, HoldReason, Tenant
from mailer.outbound.models import Message, MessageRecipient
from mailer.tenants import Tenants
from scheduler.holds import lift_hold, list_holds, place_hold


class Desk:
    """Holds, template overrides and outbox listings, each a tenant's by its slug."""

    def __init__(
        self, engine: Engine, *, clock: Clock, tenants: Tenants, renderer: Renderer
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.tenants = tenants
        self.renderer = renderer  # validates a template before it is stored

    # -- holds -------------------------------------------------------------------------------

    def place_hold(
        self,
        *,
        tenant: str | None,
        customer: str | None,
        invoice: str | None,
        reason: HoldReason,
        until: datetime | None,
        note: str | None,
        by: str,
    ) -> Hold:
        """Pause chasing an invoice or a whole customer, until ``until`` or until lifted."""
        tenant_id = self.tenants.id(tenant)
        with session_scope(self.engine) as session:
            hold = place_hold(
                session,
                tenant_id=tenant_id,
                customer=customer,
                invoice=invoice,
                reason=reason,
                ends_at=until,
                note=note,
                by=by,
                now=self.clock.now(),
            )
            session.expunge(hold)
            return hold

    def lift_hold(self, hold_id: int, *, tenant: str | None) -> Hold:
        """End a hold now; chasing resumes on the next pass."""
        tenant_id = self.tenants.id(tenant)
        with session_scope(self.engine) as session:
            hold = lift_hold(session, tenant_id=tenant_id, hold_id=hold_id, now=self.clock.now())
            session.expunge(hold)
            return hold

    def holds(self, *, tenant: str | None, active_only: bool = True) -> list[dict[str, Any]]:
        """The tenant's holds, newest first."""
        tenant_id = self.tenants.id(tenant)
        with Session(self.engine) as session:
            return list_holds(
                session, tenant_id=tenant_id, now=self.clock.now(), active_only=active_only
            )

    # -- template overrides ------------------------------------------------------------------

    def save_template(
        self, kind: str, part: str, source: str, *, tenant: str | None, updated_by: str
    ) -> TemplateOverride:
        """Validate and store a tenant's template; a refusal (TemplateError) stores nothing."""
        tenant_id = self.tenants.id(tenant)
        with session_scope(self.engine) as session:
            row = store_override(
                session,
                tenant_id=tenant_id,
                kind=kind,
                part=part,
                source=source,
                updated_by=updated_by,
                now=self.clock.now(),
                renderer=self.renderer,
            )
            session.expunge(row)
            return row

    def reset_template(self, kind: str, *, tenant: str | None, part: str | None = None) -> int:
        """Go back to the built-in template(s) of ``kind``; returns how many were removed."""
        tenant_id = self.tenants.id(tenant)
        with session_scope(self.engine) as session:
            return reset_overrides(session, tenant_id=tenant_id, kind=kind, part=part)

    def template_overrides(self, kind: str, *, tenant: str | None) -> dict[str, str]:
        """The tenant's overrides of ``kind``: part -> source."""
        tenant_id = self.tenants.id(tenant)
        with Session(self.engine) as session:
            return fetch_overrides(session, tenant_id=tenant_id, kind=kind)

    def template_sources(
        self, kind: str, *, tenant: str | None
    ) -> list[tuple[str, str, str | None]]:
        """What each part of ``kind`` renders from, as (part, origin, source): the tenant's
        override, else the built-in; a text part converted from an HTML override has no source.
        """
        if kind not in KINDS:
            raise MailerError(f"unknown email kind {kind!r}; known kinds: {', '.join(KINDS)}")
        overrides = self.template_overrides(kind, tenant=tenant)
        parts: list[tuple[str, str, str | None]] = []
        for name in PARTS:
            if name in overrides:
                parts.append((name, "override", overrides[name]))
            elif name == "text" and "html" in overrides:
                parts.append((name, "converted from the HTML override", None))
            else:
                parts.append((name, "built-in", self.renderer.builtin_source(kind, name)))
        return parts

    def template_list(self, *, tenant: str | None) -> list[TemplateOverride]:
        """Every override the tenant has."""
        tenant_id = self.tenants.id(tenant)
        with Session(self.engine) as session:
            rows = list_overrides(session, tenant_id=tenant_id)
            session.expunge_all()
            return rows

    def database(self) -> str:
        """The database's URL without its password, for ``dunmail init`` to say where it is."""
        return self.engine.url.render_as_string(hide_password=True)

    # -- outbox listings ---------------------------------------------------------------------

    def outbox_rows(self, *, limit: int = 200) -> list[dict[str, Any]]:
        """The newest outbox messages with their recipients, for ``dunmail outbox``."""
        with Session(self.engine) as session:
            slugs: dict[int | None, str] = {
                t.id: t.slug for t in session.exec(select(Tenant)).all()
            }
            return _listing(session, select(Message), slugs, limit)

    def tenant_outbox(self, *, tenant: str | None, limit: int = 200) -> list[dict[str, Any]]:
        """:meth:`outbox_rows` of one tenant only (the AR inbox's outbox page)."""
        tenant_id = self.tenants.id(tenant)
        query = select(Message).where(col(Message.tenant_id) == tenant_id)
        slugs: dict[int | None, str] = {tenant_id: tenant or self.tenants.slug(tenant_id)}
        with Session(self.engine) as session:
            return _listing(session, query, slugs, limit)


def _listing(
    session: Session, query: Any, slugs: dict[int | None, str], limit: int
) -> list[dict[str, Any]]:
    """The newest ``limit`` messages ``query`` selects, each with its recipients."""
    messages = session.exec(query.order_by(col(Message.id).desc()).limit(limit)).all()
    recipients = session.exec(
        select(MessageRecipient).where(
            col(MessageRecipient.message_id).in_([m.id for m in messages])
        )
    ).all()
    by_message: dict[int, list[MessageRecipient]] = {}
    for r in recipients:
        by_message.setdefault(r.message_id, []).append(r)
    return [_row(m, slugs, by_message.get(m.id or 0, [])) for m in messages]


def _row(m: Message, slugs: dict[int | None, str], rcpts: list[MessageRecipient]) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": m.id,
        "uid": m.uid,
        "tenant": slugs.get(m.tenant_id),
        "kind": m.kind,
        "document": m.context.get("invoice", {}).get("number"),
        "status": m.status.value,
        "language": m.language,  # what it is rendered in, which may not be the customer's
        "attempts": m.attempts,
        "created_at": iso(m.created_at),
        "next_attempt_at": iso(m.next_attempt_at),
        "finished_at": iso(m.finished_at),
        "last_error": m.last_error,
        "skip_reason": m.skip_reason,
        "recipients": [
            {"address": r.address, "status": r.status.value, "code": r.code} for r in rcpts
        ],
    }
