"""The ledger's commands: import a JSON document, and mark an invoice sent by hand.

One part of :class:`dunmail.app.Services`. The upsert itself is mailer/ledger/imports.py; this
part adds what the shell knows: the tenant's settings, the import lock, batch commits.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from dunmail.config import Config
from mailer.clock import Clock
from mailer.content.kinds import Kind
from mailer.db import session_scope
from mailer.ledger.importlock import BatchCommits, ImportLocks
from mailer.ledger.imports import Commits, ImportReport, import_document
from mailer.ledger.queries import find_invoice
from mailer.outbound.models import Message, MessageStatus
from mailer.tenants import Tenants


class LedgerService:
    """Imports into the ledger and the invoice marked sent by hand, a tenant's by its slug."""

    def __init__(self, engine: Engine, *, config: Config, clock: Clock, tenants: Tenants) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock
        self.tenants = tenants

    def import_document(
        self, data: object, *, tenant: str | None, wait: float = 0.0
    ) -> ImportReport:
        """Upsert a JSON import document; invalid records are reported, the rest applied.

        Holds the tenant's import lock (another import waits up to ``wait`` seconds, then gets
        a BusyError) and commits in short batches, so the running engine keeps answering; an
        import that dies leaves its committed batches, and running it again completes it
        (mailer/ledger/importlock.py).
        """
        tenant_id = self.tenants.id(tenant)
        db = self.config.database
        locks = ImportLocks(self.engine, lease=timedelta(seconds=db.import_lock_lease_seconds))
        with locks.held(tenant_id, wait=wait) as lease, session_scope(self.engine) as session:
            commits = BatchCommits(
                session,
                renew=lambda: locks.renew(session, lease),
                records=db.import_batch_records,
                seconds=db.import_batch_seconds,
                pause_ratio=db.import_pause_ratio if self.engine.dialect.name == "sqlite" else 0,
            )
            report = self.import_into(session, data, tenant_id=tenant_id, commits=commits)
            commits.commit()
            return report

    def import_into(
        self, session: Session, data: object, *, tenant_id: int, commits: Commits | None = None
    ) -> ImportReport:
        """:meth:`import_document` in the caller's transaction (the JSON API stores its
        Idempotency-Key answer in the same one); nothing is committed here unless ``commits``
        says where."""
        _, config = self.tenants.config(tenant_id)
        return import_document(
            session,
            tenant_id=tenant_id,
            data=data,
            now=self.clock.now(),
            cadences=config.dunning.cadences.keys(),
            grace=config.dunning.grace,
            billed_soon_days=config.dunning.billed_soon_days,
            notice_max_age=timedelta(days=config.dunning.notice_max_age_days),
            commits=commits,
            max_lines=self.config.pdf.max_lines,
        )

    def mark_sent(self, number: str, *, tenant: str | None) -> int:
        """The invoice went out by hand (or from the ERP): no automatic new-invoice email.

        Returns how many queued new-invoice emails were cancelled (those not being sent now).
        """
        tenant_id = self.tenants.id(tenant)
        now = self.clock.now()
        with session_scope(self.engine) as session:
            invoice = find_invoice(session, tenant_id=tenant_id, number=number)
            invoice.sent_at = invoice.sent_at or now
            invoice.next_action_at = now
            result = session.execute(
                sa.update(Message)
                .where(
                    col(Message.invoice_id) == invoice.id,
                    col(Message.kind) == Kind.NEW_INVOICE,
                    col(Message.manual).is_(False),
                    col(Message.status).in_((MessageStatus.QUEUED, MessageStatus.DEFERRED)),
                    col(Message.attempts) == 0,
                    sa.or_(col(Message.claimed_until).is_(None), col(Message.claimed_until) < now),
                )
                .values(
                    status=MessageStatus.CANCELLED,
                    skip_reason="marked sent by hand",
                    finished_at=now,
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)
