"""``create_app``: one FastAPI app over one :class:`~dunmail.app.Services`.

Routers live beside this module, one per audience: ``links`` (customers following a link from
an email), ``ui`` (AR clerks, signed in), ``api`` (ERPs, with an API key), ``ops`` (health,
metrics, the demo's start page). Each reads the services from ``request.app.state``.

Two middlewares run before any route reads a body (``limits``): the size limits of
``[web]`` (``max_body_bytes`` for the API's upserts, ``max_form_bytes`` for everything else)
and the session check of the inbox's form posts.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

from dunmail.app import Services
from dunmail.web import api, api_reads, capture_views, links, login, ops, ui, ui_lists
from dunmail.web import portal as portal_views
from dunmail.web import portal_documents as portal_files
from dunmail.web import portal_prefs as prefs_views
from dunmail.web import portal_query as query_views
from dunmail.web import ui_queries as query_desk_views
from dunmail.web.limits import BodyLimit, Limit, SignedInFirst


def create_app(services: Services) -> FastAPI:
    """The app; it owns no resources of its own (the services are closed by their owner)."""
    app = FastAPI(
        title="dunmail",
        summary="Invoice email delivery and dunning for AR teams",
        docs_url=None,  # served by _serve_docs from packaged assets, not from a CDN
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    _serve_docs(app)
    app.state.services = services
    app.state.large_bodies = anyio.CapacityLimiter(1)  # apikeys.Call.in_thread
    app.include_router(ops.router)
    app.include_router(capture_views.router)  # dev only: the capture viewer
    app.include_router(links.router)
    app.include_router(portal_views.router)  # a customer's account behind a View link
    app.include_router(portal_files.router)  # its PDFs and bank transfer
    app.include_router(prefs_views.router)  # its delivery preferences, contact confirmation
    app.include_router(login.router)
    app.include_router(query_views.router)  # a query (dispute) raised on the account page
    app.include_router(ui.router)
    app.include_router(query_desk_views.router)  # the clerk's answer and resolve of a query
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
        patterns=[(query_views.UPLOAD_PATH, large)],  # a query's attached file
    )
    return app


DOCS_ASSETS = "/docs-assets"
# The API docs load only what this app serves; ReDoc's search runs in a worker made from a blob.
DOCS_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def _serve_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` with their scripts and styles from the
    fastapi-offline package, served by this app: FastAPI's defaults load them from a CDN, so
    the pages would be blank offline or behind a firewall, and would run a third party's code."""
    app.mount(
        DOCS_ASSETS,
        StaticFiles(directory=str(files("fastapi_offline") / "static")),
        name="docs-assets",
    )
    openapi_url = str(app.openapi_url)
    headers = {"Content-Security-Policy": DOCS_POLICY, "X-Content-Type-Options": "nosniff"}

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )
        page.headers.update(headers)
        return page

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        page.headers.update(headers)
        return page
