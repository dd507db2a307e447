"""What ``/healthz`` and ``/metrics`` (routes in ``ops.py``) read of the database.

Metrics are read from the database on each scrape (a custom collector), so every engine
process reports the same truth and a restart loses no counts: the queue by state, emails sent,
failed, skipped and bounced, webhook deliveries waiting, and the send latency (queue to SMTP
acceptance) over the last hour.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import sqlalchemy as sa
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector
from sqlmodel import Session, col, select

from dunmail.app import Services
from mailer.inbox_models import DeliveryEvent
from mailer.outbound.models import (
    DeliveryAttempt,
    Message,
    MessageStatus,
    WebhookDelivery,
    WebhookStatus,
)


def database_problem(services: Services) -> str | None:
    """None when the database answers a ``SELECT 1``, else the error's type name."""
    try:
        with services.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        return type(exc).__name__
    return None


class LedgerCollector(Collector):
    """Metrics computed from the ledger at scrape time."""

    def __init__(self, services: Services) -> None:
        self._services = services

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | SummaryMetricFamily]:
        now = self._services.clock.now()
        with Session(self._services.engine) as session:
            by_status = dict(
                session.exec(
                    select(Message.status, sa.func.count()).group_by(col(Message.status))
                ).all()
            )
            events = dict(
                session.exec(
                    select(DeliveryEvent.kind, sa.func.count()).group_by(col(DeliveryEvent.kind))
                ).all()
            )
            webhooks = session.exec(
                select(sa.func.count()).where(col(WebhookDelivery.status) == WebhookStatus.PENDING)
            ).one()
            latencies = sorted(
                (finished - created).total_seconds()
                for finished, created in session.exec(
                    select(DeliveryAttempt.finished_at, Message.created_at)
                    .join(Message, col(Message.id) == col(DeliveryAttempt.message_id))
                    .where(
                        col(DeliveryAttempt.finished_at) >= now - timedelta(hours=1),
                        col(DeliveryAttempt.outcome).in_(["accepted", "partial"]),
                    )
                ).all()
            )
        queue = GaugeMetricFamily(
            "dunmail_queue_messages", "Messages in the outbox by state", labels=["state"]
        )
        for status in MessageStatus:
            queue.add_metric([status.value], by_status.get(status, 0))
        yield queue
        for name, status in (
            ("sent", MessageStatus.SENT),
            ("failed", MessageStatus.FAILED),
            ("skipped", MessageStatus.SKIPPED),
        ):
            yield CounterMetricFamily(
                f"dunmail_messages_{name}",
                f"Emails {name} since the ledger began",
                value=by_status.get(status, 0),
            )
        returned = CounterMetricFamily(
            "dunmail_returned", "Bounces, delays and complaints received", labels=["kind"]
        )
        for kind in ("bounce", "delayed", "complaint"):
            returned.add_metric([kind], events.get(kind, 0))
        yield returned
        yield GaugeMetricFamily(
            "dunmail_webhooks_pending", "Webhook deliveries waiting", value=webhooks
        )
        summary = SummaryMetricFamily(
            "dunmail_send_latency_seconds",
            "Queued to accepted by the SMTP server, over the last hour",
            count_value=len(latencies),
            sum_value=sum(latencies),
        )
        yield summary
        quantiles = GaugeMetricFamily(
            "dunmail_send_latency_quantile_seconds",
            "Send latency quantiles over the last hour",
            labels=["quantile"],
        )
        for q in (0.5, 0.95, 0.99):
            if latencies:
                quantiles.add_metric(
                    [str(q)], latencies[min(len(latencies) - 1, int(q * len(latencies)))]
                )
        yield quantiles
