"""The AR inbox's lists: the tenant's outbox with skip reasons, suppressions (and unblocking),
holds, the bounce report as a page or CSV; finding a customer or a document, a customer's page,
and sending any email of a thread again."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from bounce.reporting import by_reason, to_csv
from dunmail.services import preferences
from dunmail.web import auth
from dunmail.web.deps import SECURITY_HEADERS, RowId, services_of
from dunmail.web.ui_common import (
    Checked,
    SignedIn,
    Text,
    not_found,
    redirect_back,
    render,
    thread_url,
    words,
)
from mailer.clock import as_utc
from mailer.errors import MailerError, NotFoundError
from mailer.outbound.models import MessageStatus

router = APIRouter()


# -- outbox, suppressions, holds, bounce report ----------------------------------------------


@router.get("/inbox/outbox", response_class=HTMLResponse)
def outbox(request: Request, clerk: SignedIn) -> Response:
    """The tenant's newest emails: state, each recipient's SMTP answer and any later bounce
    apart, and why any was skipped or failed."""
    rows = services_of(request).customers.outbox(tenant=clerk.tenant)
    return render(request, clerk, "outbox.html", {"rows": rows})


@router.get("/inbox/suppressions", response_class=HTMLResponse)
def suppressions(request: Request, clerk: SignedIn, all: bool = False) -> Response:
    """The tenant's blocked addresses (``all``: lifted and expired too), each with since when,
    why and by whom or what."""
    rows = services_of(request).customers.blocked(tenant=clerk.tenant, everything=all)
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


# -- customers, documents, resending any email -----------------------------------------------

SearchText = Annotated[str, Query(max_length=200)]


@router.get("/inbox/customers", response_class=HTMLResponse)
def customers(request: Request, clerk: SignedIn, q: SearchText = "") -> Response:
    """Find a customer by name, number or a contact's address."""
    rows = services_of(request).customers.search(q, tenant=clerk.tenant)
    return render(request, clerk, "customers.html", {"rows": rows, "q": q})


@router.get("/inbox/documents", response_class=HTMLResponse)
def documents(request: Request, clerk: SignedIn, q: SearchText = "") -> Response:
    """Find an invoice or a credit note by its number."""
    rows = services_of(request).customers.documents(q, tenant=clerk.tenant)
    return render(request, clerk, "documents.html", {"rows": rows, "q": q})


@router.get("/inbox/customers/{customer_id}", response_class=HTMLResponse)
def customer(request: Request, customer_id: RowId, clerk: SignedIn) -> Response:
    """One customer: contacts (and whether each is blocked), documents, emails, threads."""
    try:
        about = services_of(request).customers.customer(customer_id, tenant=clerk.tenant)
    except NotFoundError:
        return not_found(request, clerk, f"customer {customer_id}")
    back = f"/inbox/customers/{customer_id}"
    # What the customer changed themselves on their account page (services/preferences.py).
    prefs = preferences.for_clerk(services_of(request), customer_id, tenant=clerk.tenant)
    return render(
        request, clerk, "customer.html", {"customer": about, "back": back, "prefs": prefs}
    )


@router.post("/inbox/threads/{thread_id}/emails/{message_id}/resend")
async def resend_email(
    request: Request, thread_id: RowId, message_id: RowId, clerk: Checked
) -> Response:
    """Send one email of the thread again, as it was, to the customer's contacts as they are."""
    url = thread_url(thread_id)
    try:
        message, addresses = await services_of(request).inbox.resend_email(
            thread_id, message_id, tenant=clerk.tenant, by=clerk.email
        )
    except NotFoundError:
        return not_found(request, clerk, f"email {message_id} in thread {thread_id}")
    except MailerError as exc:
        return redirect_back(url, "error", str(exc))
    done = f"{words(request, clerk).kind(message.kind)} resent to {', '.join(addresses)}"
    if message.status is MessageStatus.SENT:
        return redirect_back(url, "ok", done)
    labels = words(request, clerk)
    why = message.skip_reason or message.last_error or ""
    state = labels.message_state(message.status.value)
    return redirect_back(url, "error", f"{done}: {state}{': ' + why if why else ''}")
