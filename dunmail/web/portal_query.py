"""The account page's query form: a customer raises a query (dispute) on one of their invoices.

* ``POST /l/<token>/account/query`` (multipart): invoice, reason, message and at most one
  file. The account page's CSRF (``portal._csrf``: an HMAC of its cookie and the token, and a
  same-origin browser) guards it; ``dunmail/services/queries.py`` checks that the invoice is the
  link's customer's, limits messages per hour, checks the file by its bytes, records the query
  beside the invoice's AR inbox thread and places the ``dispute`` hold, in one transaction.
  Taken: 303 back to the account page (``?query=sent#queries``); refused: the page again with
  why, in the customer's words. The body may be up to ``web.max_body_bytes``
  (:data:`UPLOAD_PATH`, ``dunmail/web/limits.py``); every other portal form keeps
  ``web.max_form_bytes``.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import RedirectResponse, Response

from dunmail.services import queries
from dunmail.web import auth
from dunmail.web import portal as portal_views
from dunmail.web.deps import services_of
from dunmail.web.link_service import NO_STORE
from dunmail.web.portal_page import selected_ids

router = APIRouter()
UPLOAD_PATH = re.compile(r"/l/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/account/query")


def N_(message: str) -> str:
    """Mark ``message`` for the portal catalog; it is translated when shown."""
    return message


_REFUSED = {
    queries.Refusal.FOREIGN: N_("Please choose one of your invoices."),
    queries.Refusal.REASON: N_("Please choose what is wrong with the invoice."),
    queries.Refusal.EMPTY: N_("Please write a message."),
    queries.Refusal.TOO_LONG: N_("Your message is too long. Please shorten it."),
    queries.Refusal.FILE_TYPE: N_("The file must be a PDF, PNG or JPEG."),
    queries.Refusal.FILE_SIZE: N_("The file is too large (at most 3 MB)."),
    queries.Refusal.LIMITED: N_("Too many messages. Please try again in an hour."),
}
_STATUS = {queries.Refusal.LIMITED: 429, queries.Refusal.FILE_SIZE: 413}


@router.post("/l/{token}/account/query")
async def raise_query(token: str, request: Request) -> Response:
    """Record the customer's query on one of their invoices and pause its reminders."""
    found = await portal_views._account(request, token)
    if found is None:
        return portal_views._not_valid(request)
    opened, account = found
    form = await request.form(max_files=1, max_fields=8)
    cookie = request.cookies.get(portal_views.COOKIE) or ""
    if (
        not cookie
        or not auth.same_origin(request)
        or not auth.tokens_match(portal_views._csrf(request, token, cookie), form.get("csrf"))
    ):
        notice = N_("This form has expired. Please try again.")
        return portal_views._account_page(request, token, opened, account, notice, 403)
    ids = selected_ids([v for v in form.getlist("invoice") if isinstance(v, str)])
    reason, text, file = form.get("reason"), form.get("message"), form.get("attachment")
    upload = None
    if isinstance(file, UploadFile) and file.filename:
        data = await file.read(queries.MAX_ATTACHMENT_BYTES + 1)
        upload = queries.Upload(file.filename, data)
    if not ids or len(ids) != 1:
        result: queries.Raised | queries.Refusal | None = queries.Refusal.FOREIGN
    else:
        result = await run_in_threadpool(
            lambda: queries.raise_query(
                services_of(request),
                opened,
                invoice_id=ids[0],
                reason=reason if isinstance(reason, str) else "",
                text=text if isinstance(text, str) else "",
                upload=upload,
            )
        )
    await form.close()
    if result is None:
        return portal_views._not_valid(request)
    if isinstance(result, queries.Refusal):
        status = _STATUS.get(result, 400)
        return portal_views._account_page(request, token, opened, account, _REFUSED[result], status)
    return RedirectResponse(
        f"/l/{token}/account?query=sent#query-{result.query_id}", status_code=303, headers=NO_STORE
    )
