"""The AR inbox's side of a customer's query (dunmail/services/query_desk.py): answer it,
resolve it, download what the customer attached. A thread's page shows its queries
(``ui.py`` reads them, ``templates/web/ui/_queries.html`` shows them, autoescaped).

Every POST needs the session's CSRF token (``Checked``); every call passes the clerk's tenant,
so another tenant's query or file answers 404 like one that does not exist. An attachment is
served only as a download (``Content-Disposition: attachment``) of the type its bytes were
checked to be (PDF, PNG, JPEG), with ``nosniff`` and a sandboxing CSP, so nothing a customer
uploaded runs in the inbox's origin.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from dunmail.services import query_desk
from dunmail.web.deps import RowId, services_of
from dunmail.web.ui_common import Checked, SignedIn, not_found, redirect_back, thread_url
from mailer.errors import MailerError, NotFoundError

router = APIRouter()
Answer = Annotated[str, Form(max_length=4000)]
Back = Annotated[int, Form(ge=1)]


@router.post("/inbox/queries/{query_id}/answer")
async def answer(
    request: Request, query_id: RowId, clerk: Checked, text: Answer, thread: Back
) -> Response:
    """Answer the customer: kept with the invoice and emailed to them."""
    try:
        await query_desk.answer(
            services_of(request), query_id, text, tenant=clerk.tenant, by=clerk.email
        )
    except NotFoundError:
        return not_found(request, clerk, f"query {query_id}")
    except MailerError as exc:
        return redirect_back(thread_url(thread), "error", str(exc))
    return redirect_back(thread_url(thread), "ok", "answer emailed to the customer")


@router.post("/inbox/queries/{query_id}/resolve")
def resolve(request: Request, query_id: RowId, clerk: Checked) -> Response:
    """Resolve the query: its dispute hold is lifted, chasing resumes."""
    try:
        thread_id = query_desk.resolve(
            services_of(request), query_id, tenant=clerk.tenant, by=clerk.email
        )
    except NotFoundError:
        return not_found(request, clerk, f"query {query_id}")
    return redirect_back(thread_url(thread_id), "ok", "query resolved: reminders resume")


@router.get("/inbox/queries/files/{attachment_id}")
def attachment(request: Request, attachment_id: RowId, clerk: SignedIn) -> Response:
    """A file the customer attached, as a download."""
    try:
        found = query_desk.attachment(services_of(request), attachment_id, tenant=clerk.tenant)
    except NotFoundError:
        return not_found(request, clerk, f"attachment {attachment_id}")
    return Response(
        found.data,
        media_type=found.content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{found.filename}"',
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, no-store",
        },
    )
