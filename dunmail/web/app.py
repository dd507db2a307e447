"""``create_app``: one FastAPI app over one :class:`~dunmail.app.Services`.

Routers live beside this module, one per audience: ``links`` (customers following a link from
an email), ``ui`` (AR clerks, signed in), ``api`` (ERPs, with an API key), ``ops`` (health,
metrics, the demo's start page). Each reads the services from ``request.app.state``.

Two middlewares run before any route reads a body (``limits``): the size limits of
``[web]`` (``max_body_bytes`` for the API's upserts, ``max_form_bytes`` for everything else)
and the session check of the inbox's form posts.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import FastAPI

from dunmail.app import Services
from dunmail.web import api, api_reads, capture_views, links, login, ops, ui, ui_lists
from dunmail.web.limits import BodyLimit, Limit, SignedInFirst


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
    app.state.large_bodies = anyio.CapacityLimiter(1)  # apikeys.Call.in_thread
    app.include_router(ops.router)
    app.include_router(capture_views.router)  # dev only: the capture viewer
    app.include_router(links.router)
    app.include_router(login.router)
    app.include_router(ui.router)
    app.include_router(ui_lists.router)
    app.include_router(api.router)
    app.include_router(api_reads.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = api.document_bodies(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend it
    # The last added runs first: the body limit sees every answer, the session check's too.
    web = services.config.web
    large = Limit(web.max_body_bytes, "web.max_body_bytes")
    app.add_middleware(SignedInFirst, prefix="/inbox/")
    app.add_middleware(
        BodyLimit,
        default=Limit(web.max_form_bytes, "web.max_form_bytes"),
        paths=dict.fromkeys(api.LARGE_BODY_PATHS, large),
    )
    return app
