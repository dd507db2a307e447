"""Outbound webhooks: events queued in the transaction that caused them, delivered later.

:meth:`Webhooks.emit` adds one :class:`~.models.WebhookDelivery` row per endpoint of the
tenant that wants the event, in the caller's transaction (an event exists exactly when what
caused it was committed). :meth:`Webhooks.deliver_due` (``DunningService.tick``) claims due rows,
signs and POSTs them, and records the answer: a 2xx is delivered; anything else is retried
with exponential backoff and jitter (1 minute doubling up to 6 hours) until
:data:`GIVE_UP_AFTER` (3 days) has passed since the event, when the row becomes ``failed``.
Nothing is lost while an endpoint is down: its rows stay ``pending``.

Each request carries::

    Content-Type: application/json
    Dunmail-Event: message.sent
    Dunmail-Delivery: evt_5d0c...            (the payload's ``id``; unique: dedupe on it)
    Dunmail-Signature: t=1772442000,v1=<hex HMAC-SHA256 of f"{t}.{body}" with the secret>

and the body ``{"id": ..., "type": ..., "created_at": ISO 8601, "data": {...}}``.

Verifying on the receiving side (Stripe's scheme; :func:`verify_signature` does this)::

    t, v1 = (dict(p.split("=", 1) for p in header.split(",")))[k] for k in ("t", "v1")
    expected = hmac.new(secret, f"{t}.".encode() + raw_body, hashlib.sha256).hexdigest()
    ok = hmac.compare_digest(expected, v1) and abs(unix_now - int(t)) <= 300

Sign the raw bytes received, not a re-serialised JSON; the timestamp bounds replays. A retry
is signed again with its own time, and has the same ``Dunmail-Delivery``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import random
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mailer.db import session_scope
from mailer.outbound.models import WebhookDelivery, WebhookStatus
from mailer.tenant_config import TenantConfig, WebhookConfig

log = logging.getLogger(__name__)

EVENTS = (
    "message.sent",
    "message.failed",
    "message.skipped",
    "message.bounced",
    "message.complained",
    "link.clicked",
    "thread.replied",
    "payment.intent",  # a customer chose invoices to pay on their account page
    "customer.preferences_changed",  # a contact, PDF delivery or language, on that page
)
FIRST_RETRY_AFTER = timedelta(minutes=1)
MAX_RETRY_AFTER = timedelta(hours=6)
GIVE_UP_AFTER = timedelta(days=3)
TIMEOUT_SECONDS = 10.0
# A claimed row is pushed this far into the future before it is sent: a worker that dies
# mid-request leaves the row to be retried once this runs out (the lease of
# mailer/outbound/dispatch.py).
LEASE = timedelta(minutes=2)
SIGNATURE_TOLERANCE = timedelta(minutes=5)


def sign(secret: str, body: bytes, *, timestamp: int) -> str:
    """The ``Dunmail-Signature`` header value for ``body`` sent at ``timestamp`` (Unix)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_signature(
    secret: str,
    body: bytes,
    header: str,
    *,
    now: datetime,
    tolerance: timedelta = SIGNATURE_TOLERANCE,
) -> bool:
    """What a receiver does: the HMAC matches and the timestamp is within ``tolerance``."""
    try:
        parts = dict(p.strip().split("=", 1) for p in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    expected = sign(secret, body, timestamp=timestamp).rpartition("v1=")[2]
    fresh = abs(now.timestamp() - timestamp) <= tolerance.total_seconds()
    return hmac.compare_digest(expected, given) and fresh


def retry_after(attempts: int, rng: random.Random) -> timedelta:
    """The wait after the ``attempts``-th failure: 1 min, 2, 4 ... capped at 6 h, each drawn
    from the upper half of its step ("equal jitter"), so endpoints that failed together do not
    retry together, and no retry comes later than the schedule says."""
    doublings = min(max(attempts - 1, 0), 20)
    step: timedelta = min(FIRST_RETRY_AFTER * (2**doublings), MAX_RETRY_AFTER)
    return step * (0.5 + rng.random() / 2)


@dataclass(frozen=True)
class _Due:
    id: int
    event_id: str
    event: str
    url: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime
    tenant_id: int


@dataclass
class WebhookReport:
    """What one delivery pass did."""

    delivered: int = 0
    retrying: int = 0
    failed: int = 0  # gave up for good
    errors: list[str] = field(default_factory=list)


class Webhooks:
    """The tenants' endpoints and the queue of deliveries to them."""

    def __init__(
        self,
        tenants: Mapping[str, TenantConfig] | None = None,
        tenant_ids: Mapping[str, int] | None = None,
        *,
        secret: Callable[[str], str | None] = os.environ.get,
        rng: random.Random | None = None,
        batch_size: int = 100,
    ) -> None:
        """``tenants`` and ``tenant_ids`` as in the config and ``Services``; ``secret`` maps a
        ``secret_env`` name to the secret (looked up when a request is signed, so a rotated
        secret applies without a restart). Without tenants nothing is ever queued."""
        self._endpoints: dict[int, tuple[WebhookConfig, ...]] = {}
        for slug, tenant in (tenants or {}).items():
            if tenant.webhooks and tenant_ids is not None and slug in tenant_ids:
                self._endpoints[tenant_ids[slug]] = tuple(tenant.webhooks)
        self._secret = secret
        self._rng = rng or random.Random()
        self._batch_size = batch_size

    def endpoints(self, tenant_id: int) -> tuple[WebhookConfig, ...]:
        """The tenant's configured endpoints."""
        return self._endpoints.get(tenant_id, ())

    def missing_secrets(self) -> list[str]:
        """The ``secret_env`` names that are not set (their deliveries wait and retry)."""
        return sorted(
            {
                e.secret_env
                for ends in self._endpoints.values()
                for e in ends
                if not self._secret(e.secret_env)
            }
        )

    def emit(
        self,
        session: Session,
        *,
        tenant_id: int,
        event: str,
        data: Mapping[str, Any],
        now: datetime,
    ) -> int:
        """Queue ``event`` for every endpoint of the tenant that wants it, in the caller's
        transaction; returns how many deliveries were queued."""
        wanted = [
            e for e in self._endpoints.get(tenant_id, ()) if "*" in e.events or event in e.events
        ]
        for endpoint in wanted:
            event_id = f"evt_{secrets.token_hex(16)}"
            session.add(
                WebhookDelivery(
                    tenant_id=tenant_id,
                    event_id=event_id,
                    event=event,
                    url=endpoint.url,
                    payload={
                        "id": event_id,
                        "type": event,
                        "created_at": now.isoformat(),
                        "data": dict(data),
                    },
                    created_at=now,
                    next_attempt_at=now,
                )
            )
        return len(wanted)

    # -- delivery ----------------------------------------------------------------------------

    async def deliver_due(
        self, engine: Engine, now: datetime, http: httpx.AsyncClient | None = None
    ) -> WebhookReport:
        """One pass: send every delivery due at ``now``, batch by batch, then return."""
        report = WebhookReport()
        if not self._endpoints:
            return report
        client = http or httpx.AsyncClient(
            timeout=TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
        )
        try:
            while True:
                batch = await asyncio.to_thread(self.claim_due, engine, now)
                if not batch:
                    break
                results = await asyncio.gather(*(self._post(client, d, now) for d in batch))
                await asyncio.to_thread(self._record, engine, batch, results, now, report)
        finally:
            if http is None:
                await client.aclose()
        return report

    def claim_due(self, engine: Engine, now: datetime) -> list[_Due]:
        """Lease up to a batch of due rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite
        serialises writers), pushing their ``next_attempt_at`` past the lease, and commit."""
        with session_scope(engine) as session:
            ids = list(
                session.execute(
                    sa.select(col(WebhookDelivery.id))
                    .where(
                        col(WebhookDelivery.status) == WebhookStatus.PENDING,
                        col(WebhookDelivery.next_attempt_at) <= now,
                    )
                    .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.id))
                    .limit(self._batch_size)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            if not ids:
                return []
            session.execute(
                sa.update(WebhookDelivery)
                .where(col(WebhookDelivery.id).in_(ids))
                .values(next_attempt_at=now + LEASE)
            )
            rows = session.exec(select(WebhookDelivery).where(col(WebhookDelivery.id).in_(ids)))
            return [
                _Due(
                    id=r.id or 0,
                    event_id=r.event_id,
                    event=r.event,
                    url=r.url,
                    payload=r.payload,
                    attempts=r.attempts,
                    created_at=r.created_at,
                    tenant_id=r.tenant_id,
                )
                for r in rows
            ]

    def _secret_for(self, due: _Due) -> str | None:
        for endpoint in self._endpoints.get(due.tenant_id, ()):
            if endpoint.url == due.url:
                return self._secret(endpoint.secret_env)
        return None

    async def _post(self, client: httpx.AsyncClient, due: _Due, now: datetime) -> str | None:
        """Send one delivery; None when the endpoint took it (2xx), else why not."""
        secret = self._secret_for(due)
        if not secret:
            return "no signing secret: the endpoint is not configured or its secret_env is unset"
        body = json.dumps(due.payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "dunmail-webhooks/1",
            "Dunmail-Event": due.event,
            "Dunmail-Delivery": due.event_id,
            "Dunmail-Signature": sign(secret, body, timestamp=int(now.timestamp())),
        }
        try:
            response = await client.post(due.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            # The exception's text names the URL and the cause, never the headers.
            return f"{type(exc).__name__}: {exc}"[:1000]
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    def _record(
        self,
        engine: Engine,
        batch: list[_Due],
        results: list[str | None],
        now: datetime,
        report: WebhookReport,
    ) -> None:
        with session_scope(engine) as session:
            for due, error in zip(batch, results, strict=True):
                values: dict[str, Any] = {"attempts": due.attempts + 1, "last_error": error}
                if error is None:
                    values.update(status=WebhookStatus.DELIVERED, delivered_at=now)
                    report.delivered += 1
                else:
                    retry_at = now + retry_after(due.attempts + 1, self._rng)
                    if retry_at - due.created_at > GIVE_UP_AFTER:
                        values.update(status=WebhookStatus.FAILED)
                        report.failed += 1
                        log.warning(
                            "webhook %s %s to %s failed for good after %d attempts: %s",
                            due.event_id,
                            due.event,
                            due.url,
                            due.attempts + 1,
                            error,
                        )
                    else:
                        values.update(next_attempt_at=retry_at)
                        report.retrying += 1
                        log.info(
                            "webhook %s %s to %s: %s; retry at %s",
                            due.event_id,
                            due.event,
                            due.url,
                            error,
                            retry_at.isoformat(),
                        )
                    report.errors.append(error)
                session.execute(
                    sa.update(WebhookDelivery)
                    .where(col(WebhookDelivery.id) == due.id)
                    .values(**values)
                )
