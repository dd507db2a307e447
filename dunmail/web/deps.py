"""What every router shares: the services, the page templates, and security headers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import Path as PathParam
from fastapi import Request
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.responses import HTMLResponse

from dunmail.app import Services

# A row id in a path, for every route that takes one (pages and API alike). The id columns are
# INTEGER, a signed 32-bit number on PostgreSQL: past it the driver raises (a 500), so such an
# id is refused as invalid (422) before it reaches a query. SQLite's are 64-bit; the stricter
# bound serves both, and no table comes near two billion rows.
MAX_ROW_ID = 2**31 - 1
RowId = Annotated[int, PathParam(ge=1, le=MAX_ROW_ID)]

TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "web"
# Autoescaped everywhere: every page shows text that came from mail or from an ERP.
templates = Jinja2Templates(
    env=Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        auto_reload=False,
    )
)
# Pages whose route gives no translations (``_`` in the context) show the English message ids.
templates.env.globals["_"] = lambda message, **values: message % values if values else message

# No script, style or frame from anywhere else; no inline script at all. What a page shows from
# mail is text, and this header makes sure nothing from mail could ever run even if it slipped.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' https: data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def services_of(request: Request) -> Services:
    """The app's services (``create_app`` puts them on ``app.state``)."""
    services: Services = request.app.state.services
    return services


def page(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    """A rendered page with the security headers."""
    response: HTMLResponse = templates.TemplateResponse(
        request, name, context, status_code=status_code
    )
    response.headers.update(SECURITY_HEADERS)
    return response
