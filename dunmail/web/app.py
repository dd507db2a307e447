"""``create_app``: one FastAPI app over one :class:`~dunmail.app.Services`.

Routers live beside this module, one per audience: ``links`` (customers following a link from
an email), ``ui`` (AR clerks, signed in), ``api`` (ERPs, with an API key), ``ops`` (health,
metrics, the demo's start page). Each reads the services from ``request.app.state``.
"""

from __future__ import annotations

from fastapi import FastAPI

from dunmail.app import Services
from dunmail.web import api, api_reads, links, login, ops, ui, ui_lists


def create_app(services: Services) -> FastAPI:
    """The app; it owns no resources of its own (the services are closed by their owner)."""
    app = FastAPI(
        title="dunmail",
        summary="Invoice email delivery and dunning for AR teams",
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.services = services
    app.include_router(ops.router)
    app.include_router(links.router)
    app.include_router(login.router)
    app.include_router(ui.router)
    app.include_router(ui_lists.router)
    app.include_router(api.router)
    app.include_router(api_reads.router)
    return app
