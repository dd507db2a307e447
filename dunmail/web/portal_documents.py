"""The account page's PDFs and its bank transfer for chosen invoices, under the View link.

* ``GET /l/<token>/account/invoices/<id>/pdf``: the stored PDF of one of the customer's
  invoices; ``/statements/<id>/pdf``: a statement email's PDF; ``/statement/<CUR>/pdf``: an
  open-item statement of the account as it stands now (rendered, limited per customer per
  hour). Each is served under the View link's own token after the page's own checks
  (``dunmail/services/portal_documents.py``), so revoking that token stops them all.
* ``POST /l/<token>/account/transfer``: the ticked invoices' bank transfer (amount, reference,
  EPC QR) shown in the page's bank-transfer box; the same CSRF check as "pay".
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from dunmail.services import portal_documents
from dunmail.services.portal import Refusal
from dunmail.web import auth
from dunmail.web.deps import services_of
from dunmail.web.link_service import NO_STORE, Opened, open_link
from dunmail.web.portal import (
    _REFUSED,
    COOKIE,
    N_,
    _account,
    _account_page,
    _csrf,
    _not_valid,
)
from dunmail.web.portal_page import selected_ids
from mailer.errors import LinkInvalid, MailerError

log = logging.getLogger(__name__)
router = APIRouter()
_AGENT = 300


async def _opened(request: Request, token: str) -> Opened | None:
    try:
        return await run_in_threadpool(open_link, services_of(request), token)
    except LinkInvalid:
        return None


def _pdf(found: portal_documents.Pdf) -> Response:
    # file_stem() already removed quotes and separators; filename* keeps a non-ASCII number.
    plain = "".join(c if c.isascii() and c.isprintable() else "_" for c in found.filename)
    headers = {
        **NO_STORE,
        "Content-Disposition": f'attachment; filename="{plain}"; '
        f"filename*=UTF-8''{quote(found.filename, safe='')}",
    }
    return Response(found.data, media_type="application/pdf", headers=headers)


@router.get("/l/{token}/account/invoices/{invoice_id}/pdf")
async def invoice_pdf(token: str, invoice_id: int, request: Request) -> Response:
    """One of the link's customer's invoices as its stored PDF."""
    opened = await _opened(request, token)
    found = None
    if opened is not None:
        found = await run_in_threadpool(
            lambda: portal_documents.invoice_pdf(
                services_of(request), opened, invoice_id=invoice_id
            )
        )
    return _pdf(found) if found is not None else _not_valid(request)


@router.get("/l/{token}/account/statements/{message_id}/pdf")
async def sent_statement_pdf(token: str, message_id: int, request: Request) -> Response:
    """A statement the link's customer was sent, as its PDF."""
    opened = await _opened(request, token)
    found = None
    if opened is not None:
        try:
            found = await portal_documents.sent_statement_pdf(
                services_of(request), opened, message_id=message_id
            )
        except MailerError:
            log.exception("statement PDF of message %d failed", message_id)
    return _pdf(found) if found is not None else _not_valid(request)


@router.get("/l/{token}/account/statement/{currency}/pdf")
async def current_statement_pdf(token: str, currency: str, request: Request) -> Response:
    """An open-item statement of the link's customer's account in ``currency``, now."""
    opened = await _opened(request, token)
    if opened is None or len(currency) != 3 or not currency.isascii() or not currency.isupper():
        return _not_valid(request)
    agent = request.headers.get("user-agent", "")[:_AGENT]
    try:
        found = await portal_documents.current_statement_pdf(
            services_of(request), opened, currency=currency, user_agent=agent
        )
    except portal_documents.StatementRefused:
        return Response(
            "Too many statements requested. Please try again in an hour.",
            status_code=429,
            media_type="text/plain",
            headers={**NO_STORE, "Retry-After": "3600"},
        )
    except MailerError:
        log.exception("statement PDF of the account (%s) failed", currency)
        found = None
    return _pdf(found) if found is not None else _not_valid(request)


@router.post("/l/{token}/account/transfer")
async def transfer_selected(token: str, request: Request) -> Response:
    """The account page with the bank transfer for the ticked invoices of one currency."""
    found = await _account(request, token)
    if found is None:
        return _not_valid(request)
    opened, account = found
    form = await request.form()
    cookie = request.cookies.get(COOKIE) or ""
    if (
        not cookie
        or not auth.same_origin(request)
        or not auth.tokens_match(_csrf(request, token, cookie), form.get("csrf"))
    ):
        notice = N_("This form has expired. Please try again.")
        return _account_page(request, token, opened, account, notice, 403)
    ids = selected_ids([v for v in form.getlist("invoice") if isinstance(v, str)])
    if ids is None:
        return _account_page(request, token, opened, account, _REFUSED[Refusal.FOREIGN], 400)
    return _account_page(request, token, opened, account, transfer=ids)
