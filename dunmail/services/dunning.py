"""SERVICE (shell): dunning. The engine's tick (decide and queue, then deliver) and the plan of
what a tick would send, over the three passes of the scheduler: invoices (scheduler/dunning.py),
statements (scheduler/statements.py) and ledger events (scheduler/events.py)."""

from __future__ import annotations

import asyncio

from dunmail.services.sending import Sending
from mailer.clock import Clock
from mailer.outbound.requests import PassReport
from mailer.tenants import Tenants
from scheduler.dunning import Dunning, DunningReport, PlanEntry
from scheduler.events import EventPass
from scheduler.rules import RulesBook
from scheduler.statements import StatementPass


class DunningService:
    """The passes, built once; ``invoices`` is also the simulator (``plan``)."""

    def __init__(
        self,
        *,
        clock: Clock,
        tenants: Tenants,
        rules: RulesBook,
        invoices: Dunning,
        statements: StatementPass,
        events: EventPass,
        sending: Sending,
    ) -> None:
        """``sending`` delivers what the passes queued, mail and webhooks, at each tick."""
        self._clock = clock
        self._tenants = tenants
        self.rules = rules  # each customer's cadence, calendar and minimum balance
        self.invoices = invoices
        self.statements = statements
        self.events = events
        self._sending = sending

    async def tick(self) -> tuple[DunningReport, PassReport]:
        """One pass of everything due at the clock's time: decide and queue, then deliver."""
        now = self._clock.now()
        dunning = await asyncio.to_thread(self.invoices.run_pass, now)
        await asyncio.to_thread(self.statements.run_pass, now, dunning)
        await asyncio.to_thread(self.events.run_pass, now, dunning)
        delivered = await self._sending.deliver()
        await self._sending.deliver_webhooks()
        return dunning, delivered

    def plan(
        self, *, tenant: str | None, customer: str | None = None, everything: bool = False
    ) -> list[PlanEntry]:
        """What a pass at the clock's time would send, to whom and why (nothing is written):
        the invoices' decisions, then the ledger's pending events."""
        now = self._clock.now()
        tenant_id = self._tenants.id(tenant)
        entries = self.invoices.plan(
            now, tenant_id=tenant_id, customer=customer, everything=everything
        )
        entries += self.events.plan(
            now, tenant_id=tenant_id, customer=customer, everything=everything
        )
        return entries
