"""The AR inbox's lists: the tenant's outbox with skip reasons, suppressions (and unblocking),
holds, and the bounce report as a page or CSV."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from bounce.reporting import by_reason, to_csv
from dunmail.web import auth
from dunmail.web.deps import SECURITY_HEADERS, services_of
from dunmail.web.ui_common import (
    Checked,
    SignedIn,
    Text,
    redirect_back,
    render,
)
from mailer.clock import as_utc
from mailer.errors import MailerError

router = APIRouter()


# -- outbox, suppressions, holds, bounce report ----------------------------------------------


@router.get("/inbox/outbox", response_class=HTMLResponse)
def outbox(request: Request, clerk: SignedIn) -> Response:
    """The tenant's newest emails: status, recipients, and why any was skipped or failed."""
    rows = services_of(request).desk.tenant_outbox(tenant=clerk.tenant)
    return render(request, clerk, "outbox.html", {"rows": rows})


@router.get("/inbox/suppressions", response_class=HTMLResponse)
def suppressions(request: Request, clerk: SignedIn, all: bool = False) -> Response:
    """The tenant's blocked addresses (``all``: lifted and expired too)."""
    rows = services_of(request).suppressions.blocked(tenant=clerk.tenant, everything=all)
    return render(request, clerk, "suppressions.html", {"rows": rows, "everything": all})


@router.post("/inbox/suppressions/unblock")
def unblock(
    request: Request,
    clerk: Checked,
    address: Annotated[str, Form(max_length=320)],
    reason: Text,
    back: Annotated[str, Form()] = "",
) -> Response:
    """Let mail go to a blocked address again; who and why are kept."""
    target = auth.local_path(back, "/inbox/suppressions")
    if not reason.strip():
        return redirect_back(target, "error", "say why the address may get mail again")
    try:
        services_of(request).suppressions.unblock(
            address, tenant=clerk.tenant, by=clerk.email, why=reason.strip()
        )
    except MailerError as exc:
        return redirect_back(target, "error", str(exc))
    return redirect_back(target, "ok", f"{address} unblocked")


@router.get("/inbox/holds", response_class=HTMLResponse)
def holds(request: Request, clerk: SignedIn) -> Response:
    """The tenant's active holds."""
    rows = services_of(request).desk.holds(tenant=clerk.tenant)
    return render(request, clerk, "holds.html", {"rows": rows})


def _since(request: Request, value: str | None) -> datetime:
    if value:
        try:
            return as_utc(datetime.fromisoformat(value))
        except ValueError:
            pass
    return services_of(request).clock.now() - timedelta(days=30)


@router.get("/inbox/report", response_class=HTMLResponse)
def report(request: Request, clerk: SignedIn, since: str | None = None) -> Response:
    """Bounces and complaints since a date, by reason, with the CSV to download."""
    start = _since(request, since)
    rows = services_of(request).suppressions.bounce_report(tenant=clerk.tenant, since=start)
    context = {"rows": rows, "since": start.date().isoformat(), "by_reason": by_reason(rows)}
    return render(request, clerk, "report.html", context)


@router.get("/inbox/report.csv")
def report_csv(request: Request, clerk: SignedIn, since: str | None = None) -> Response:
    """The bounce report as a CSV attachment (formula-like cells defused by ``to_csv``)."""
    start = _since(request, since)
    rows = services_of(request).suppressions.bounce_report(tenant=clerk.tenant, since=start)
    name = re.sub(r"[^a-z0-9_-]", "_", clerk.tenant.lower())
    headers = {
        **SECURITY_HEADERS,
        "Content-Disposition": (
            f'attachment; filename="bounces-{name}-since-{start.date().isoformat()}.csv"'
        ),
        "Cache-Control": "no-store",
    }
    return Response(to_csv(rows), media_type="text/csv; charset=utf-8", headers=headers)
