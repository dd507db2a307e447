"""Routes for operators: ``/healthz``, Prometheus ``/metrics``, and the demo's start page.

What they read of the database is ``ops_service.py`` (the metrics' collector, the health
check's query).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, generate_latest

from dunmail.app import Services
from dunmail.capture_reader import Summary, viewer_box
from dunmail.demo import DEMO_PASSWORD, DEMO_USER
from dunmail.web import ops_service
from dunmail.web.deps import SECURITY_HEADERS, page, services_of

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
def healthz(request: Request) -> JSONResponse:
    """200 when the database answers, else 503 (for a load balancer or an orchestrator)."""
    problem = ops_service.database_problem(services_of(request))
    if problem is not None:
        return JSONResponse({"status": "error", "database": problem}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """The Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ops_service.LedgerCollector(services_of(request)))
    return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")


@router.get("/")
def start(request: Request) -> Response:
    """The demo's start page (``env = "dev"``): the demo tenant's outbox, the mail the capture
    server received and the AR inbox, so a newcomer sees the engine work. Elsewhere: sign in."""
    services = services_of(request)
    if services.config.env != "dev":
        return Response(status_code=303, headers={"Location": "/login", **SECURITY_HEADERS})
    slug = sorted(services.tenants.ids)[0] if services.tenants.ids else None
    tenant_id = services.tenants.ids[slug] if slug else None
    outbox = [r for r in services.desk.outbox_rows(limit=50) if r.get("tenant") == slug]
    captured = _captured(services)
    threads = services.inbox.threads(tenant=slug, status=None, limit=50) if slug else []
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


def _captured(services: Services) -> list[Summary]:
    """The newest captured messages (the viewer's first page): the one Maildir reader."""
    capture = services.config.capture
    box = viewer_box(env=services.config.env, enabled=capture.enabled, maildir=capture.maildir)
    return box.page().rows if box is not None else []
