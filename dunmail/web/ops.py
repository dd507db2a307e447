"""Routes for operators: ``/healthz``, Prometheus ``/metrics``, and the demo's start page.

Metrics are read from the database on each scrape (a custom collector), so every engine
process reports the same truth and a restart loses no counts: the queue by state, emails sent,
failed, skipped and bounced, webhook deliveries waiting, and the send latency (queue to SMTP
acceptance) over the last hour.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector
from sqlmodel import Session, col, select

from dunmail.app import Services
from dunmail.demo import DEMO_PASSWORD, DEMO_USER
from dunmail.web.deps import SECURITY_HEADERS, page, services_of
from mailer.inbox_models import DeliveryEvent
from mailer.outbound.models import (
    DeliveryAttempt,
    Message,
    MessageStatus,
    WebhookDelivery,
    WebhookStatus,
)

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
def healthz(request: Request) -> JSONResponse:
    """200 when the database answers, else 503 (for a load balancer or an orchestrator)."""
    services = services_of(request)
    try:
        with services.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        return JSONResponse({"status": "error", "database": type(exc).__name__}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """The Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(services_of(request)))
    return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")


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


@router.get("/")
def start(request: Request) -> Response:
    """The demo's start page (``env = "dev"``): the demo tenant's outbox, the mail the capture
    server received and the AR inbox, so a newcomer sees the engine work. Elsewhere: sign in."""
    services = services_of(request)
    if services.config.env != "dev":
        return Response(status_code=303, headers={"Location": "/login", **SECURITY_HEADERS})
    slug = sorted(services.tenant_ids)[0] if services.tenant_ids else None
    tenant_id = services.tenant_ids[slug] if slug else None
    outbox = [r for r in services.outbox_rows(limit=50) if r.get("tenant") == slug]
    captured = _captured(services)
    threads = services.inbox(tenant=slug, status=None, limit=50) if slug else []
    return page(
        request,
        "demo.html",
        {
            "tenant": slug,
            "tenant_id": tenant_id,
            "outbox": outbox,
            "captured": captured,
            "threads": threads,
            "demo_user": DEMO_USER,
            "demo_password": DEMO_PASSWORD,
        },
    )


def _captured(services: Services) -> list[dict[str, str]]:
    """The newest messages in the capture server's Maildir: date, recipient, subject."""
    import mailbox
    from email import policy
    from email.parser import BytesHeaderParser

    capture = services.config.capture
    if not capture.enabled or not (capture.maildir / "new").is_dir():
        return []
    box = mailbox.Maildir(capture.maildir, factory=None, create=False)
    rows = []
    for key in sorted(box.keys())[-50:]:
        with box.get_file(key) as handle:
            headers = BytesHeaderParser(policy=policy.default).parsebytes(handle.read(65536))
        rows.append(
            {
                "date": str(headers["Date"] or ""),
                "to": str(headers["To"] or ""),
                "subject": str(headers["Subject"] or ""),
            }
        )
    return list(reversed(rows))
