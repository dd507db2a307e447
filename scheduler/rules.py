"""SERVICE: each tenant's dunning settings, resolved per customer and cached.

The passes (dunning, statements, events) and pre-flight ask here which cadence, grace, send
calendar and minimum balance apply to a customer; the answer depends only on the tenant's
config and the customer's cadence and zone, so it is computed once per combination.
"""

from __future__ import annotations

from mailer.dunning_config import StatementSchedule
from mailer.ledger.localtime import customer_zone
from mailer.ledger.models import Customer
from mailer.tenants import Tenants
from scheduler.cadence import Rules
from scheduler.calendar import SendCalendar


class RulesBook:
    """The dunning rules of every configured tenant, looked up by tenant and customer."""

    def __init__(self, tenants: Tenants) -> None:
        self._tenants = tenants
        self._cache: dict[tuple[int, str, str], Rules] = {}

    def rules_for(self, tenant_id: int, customer: Customer) -> Rules:
        """The tenant's dunning settings, resolved for this customer's cadence and zone."""
        _, config = self._tenants.config(tenant_id)
        dunning = config.dunning
        cadence = customer.cadence if customer.cadence in dunning.cadences else dunning.cadence
        zone = customer_zone(customer.time_zone, config.time_zone)
        key = (tenant_id, cadence, zone)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        rules = Rules(
            calendar=SendCalendar.of(dunning, zone),
            grace=dunning.grace,
            cadence=dunning.cadences[cadence],
            sends=config.sends,
            min_balance={c: dunning.min_balance_minor(c) for c in dunning.min_balance},
        )
        self._cache[key] = rules
        return rules

    def calendar_for(self, customer: Customer) -> SendCalendar:
        """When the customer may be written to: their tenant's send window in their zone."""
        return self.rules_for(customer.tenant_id, customer).calendar

    def statement_settings(self, tenant_id: int) -> tuple[StatementSchedule, SendCalendar]:
        """The tenant's statement schedule and its send calendar in the tenant's zone (the
        statement pass moves it to each customer's own zone)."""
        _, config = self._tenants.config(tenant_id)
        return config.dunning.statements, SendCalendar.of(config.dunning, config.time_zone)
