"""Customers' links from their emails: ``/l/<token>`` and what each purpose leads to.

* ``view``: the hosted page of the document version the email carried (``hosted.py``);
* ``pay``, ``update_payment``, ``manage``: a 303 to the tenant's configured payment URL (only
  ever built from the config: never an open redirect);
* ``download`` and ``/l/<token>/pdf``: the PDF of that version, the bytes the email attached.

A token that fails its MAC, names another tenant's email, or is malformed is a 404 that says
no more than "not valid". An expired or revoked one is a 410 page offering a fresh link: the
same email is queued again to the customer's contacts on file (never to an address typed on
the page; the form has no fields and the body is never read), at most
``[web] fresh_links_per_day`` times per document in 24 hours. A link revoked by itself may ask
(the new email goes only to the contacts on file); a document whose links were all revoked may
not (its new links would be revoked too). Every open is a ``LinkEvent`` (never the token) shown
in the document's AR inbox thread, and a ``link.clicked`` webhook for views, clicks and
downloads. Tokens never reach a log (dunmail/logs.py scrubs them; `dunmail run` keeps
no access log).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from gettext import NullTranslations
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from dunmail.app import Services
from dunmail.portal_words import email_words, page_gettext
from dunmail.web import hosted
from dunmail.web.deps import page, services_of
from dunmail.web.link_service import (
    NO_STORE,
    FreshLink,
    Opened,
    fetch_link_pdf,
    open_link,
    record_click,
    request_fresh_link,
    shown,
)
from mailer.content.attachment import plan_pdf
from mailer.content.kinds import KINDS
from mailer.errors import LinkInvalid, MailerError
from mailer.outbound.links import issue_link

router = APIRouter()
log = logging.getLogger(__name__)

_PAYMENT_URLS = {"pay": "pay_url", "update_payment": "update_payment_url", "manage": "manage_url"}


def N_(message: str) -> str:
    """Marks a notice for extraction into the portal catalogs (dunmail/portal_words.py); it is
    translated when shown, in the language of the email the link came from."""
    return message


# -- pages ---------------------------------------------------------------------------------


def _agent(request: Request) -> str:
    return request.headers.get("user-agent", "")


def _message_page(
    request: Request,
    title: str,
    text: list[str],
    *,
    status: int,
    opened: Opened | None = None,
    form: bool = False,
) -> Response:
    # In the language of the email the link came from; English without one (an invalid link).
    message = opened.message if opened is not None else None
    language, words = email_words(message.context) if message is not None else (None, None)
    say = page_gettext(words or NullTranslations())
    context: dict[str, Any] = {
        "lang": language.language.split("_")[0] if language is not None else "en",
        "_": say,
        "title": say(title),
        "paragraphs": [say(paragraph) for paragraph in text],
        "form_action": f"/l/{opened.token}/refresh" if form and opened else None,
        "brand": _branding(request, opened) if opened else None,
        "brand_color": _branding(request, opened).brand_color if opened else hosted.DEFAULT_BRAND,
    }
    response = page(request, "link_message.html", context, status)
    response.headers.update(NO_STORE)
    return response


def _invalid(request: Request) -> Response:
    return _message_page(
        request,
        "This link is not valid",
        ["Please use the link from your email exactly as it was sent, or contact the sender."],
        status=404,
    )


def _branding(request: Request, opened: Opened) -> hosted.Branding:
    services = services_of(request)
    _, config = services.tenants.config(opened.claims.tenant_id)
    context = opened.message.context if opened.message is not None else {}
    branding = hosted.build_branding(context, config.branding.as_context())
    if not branding.name:
        branding = replace(branding, name=config.name)
    return branding


def _gone(request: Request, opened: Opened) -> Response:
    if opened.revoked == "document":
        return _message_page(
            request,
            N_("This link has been withdrawn"),
            [N_("The sender has withdrawn the links to this document. Please contact them.")],
            status=410,
            opened=opened,
        )
    title = N_("This link has been revoked") if opened.revoked else N_("This link has expired")
    return _message_page(
        request,
        title,
        [
            N_(
                "We can email you a fresh link. It goes to the contacts we have on file for "
                "your account, not to an address typed here."
            ),
        ],
        status=410,
        opened=opened,
        form=True,
    )


async def _open(request: Request, token: str) -> Opened | Response:
    try:
        return await run_in_threadpool(open_link, services_of(request), token)
    except LinkInvalid:
        return _invalid(request)


@router.get("/l/{token}")
async def follow_link(token: str, request: Request) -> Response:
    """Where every link in an email leads; query parameters are ignored."""
    services = services_of(request)
    opened = await _open(request, token)
    if isinstance(opened, Response):
        return opened
    if opened.blocked:
        await run_in_threadpool(
            record_click, services, opened, action="refused", user_agent=_agent(request)
        )
        return _gone(request, opened)
    purpose = opened.claims.purpose
    if purpose == "download":
        return await _pdf_response(request, opened)
    if purpose == "view":
        await run_in_threadpool(
            record_click, services, opened, action="opened", user_agent=_agent(request)
        )
        return _document_page(request, opened)
    target = _payment_target(services, opened)
    if target is None:
        await run_in_threadpool(
            record_click, services, opened, action="refused", user_agent=_agent(request)
        )
        return _message_page(
            request,
            N_("Online payment is not available"),
            [N_("Please use the payment details on your invoice, or contact the sender.")],
            status=404,
            opened=opened,
        )
    await run_in_threadpool(
        record_click, services, opened, action="redirected", user_agent=_agent(request)
    )
    return RedirectResponse(target, status_code=303, headers=NO_STORE)


@router.get("/l/{token}/pdf")
async def link_pdf(token: str, request: Request) -> Response:
    """The PDF of a view or download link's document version."""
    opened = await _open(request, token)
    if isinstance(opened, Response):
        return opened
    if opened.claims.purpose not in ("view", "download"):
        return _invalid(request)
    if opened.blocked:
        return _gone(request, opened)
    return await _pdf_response(request, opened)


@router.post("/l/{token}/refresh")
async def refresh_link(token: str, request: Request) -> Response:
    """Email a fresh link to the contacts on file. The request body is never read."""
    services = services_of(request)
    opened = await _open(request, token)
    if isinstance(opened, Response):
        return opened
    if not opened.blocked:
        return RedirectResponse(f"/l/{token}", status_code=303, headers=NO_STORE)
    result = await run_in_threadpool(
        request_fresh_link, services, opened, user_agent=_agent(request)
    )
    if result is FreshLink.WITHDRAWN:
        return _gone(request, opened)
    if result is FreshLink.LIMITED:
        text = [
            N_(
                "We have sent several fresh links for this document today. Please try again "
                "tomorrow, or contact the sender."
            )
        ]
        title = N_("Too many requests")
        return _message_page(request, title, text, status=429, opened=opened)
    if result is FreshLink.NO_CONTACT:
        text = [N_("We have no contact on file to send it to. Please contact the sender.")]
        title = N_("We could not send a fresh link")
        return _message_page(request, title, text, status=200, opened=opened)
    text = [N_("We have emailed a fresh link to the contacts we have on file for your account.")]
    title = N_("A fresh link is on its way")
    return _message_page(request, title, text, status=200, opened=opened)


def _payment_target(services: Services, opened: Opened) -> str | None:
    claims = opened.claims
    _, config = services.tenants.config(claims.tenant_id)
    template = getattr(config.payments, _PAYMENT_URLS.get(claims.purpose, ""), None)
    found = shown(services, opened)
    context = found.context if found is not None else {}
    customer = context.get("customer")
    return hosted.payment_target(
        template,
        number=hosted.document_number(context, claims.document),
        document=claims.document,
        customer=str(customer.get("id", "")) if isinstance(customer, dict) else "",
    )


def _document_page(request: Request, opened: Opened) -> Response:
    services = services_of(request)
    message, claims = opened.message, opened.claims
    found = shown(services, opened)
    if found is None:
        return _invalid(request)
    _, config = services.tenants.config(claims.tenant_id)
    # The email's language as it was rendered: its words, and its locale for numbers and dates.
    language, words = email_words(found.context)
    document = hosted.build_document(
        found.kind,
        {**found.context, "locale": language.locale},
        sent_at=found.sent_at,
        now=services.clock.now(),
        words=words,
    )
    pay_url = None
    if config.payments.pay_url and _offers_pay(found.kind):
        pay = issue_link(
            "pay",
            claims.tenant_id,
            claims.document,
            claims.version,
            key=services.links.signing,
            expires_at=claims.expires_at,
            message=message.uid if message is not None else None,
        )
        pay_url = f"/l/{pay}"
    has_pdf = plan_pdf(found.kind, found.context, invoice_id=found.invoice_id) is not None
    branding = _branding(request, opened)
    customer = found.context.get("customer")
    context = {
        "lang": language.language.split("_")[0],
        "_": page_gettext(words),
        "doc": document,
        "brand": branding,
        "brand_color": branding.brand_color,
        "customer_name": str(customer.get("name", "")) if isinstance(customer, dict) else "",
        "pay_url": pay_url,
        "account_url": f"/l/{opened.token}/account" if claims.purpose == "view" else None,
        "pdf_url": f"/l/{opened.token}/pdf"
        if has_pdf
        and message is not None
        and (services.pdfs.store is not None or message.pdf_sha256)
        else None,
    }
    response = page(request, "link_document.html", context)
    response.headers.update(NO_STORE)
    return response


def _offers_pay(kind: str) -> bool:
    spec = KINDS.get(kind)
    return spec is not None and "pay" in spec.buttons


async def _pdf_response(request: Request, opened: Opened) -> Response:
    services = services_of(request)
    try:
        found = await fetch_link_pdf(services, opened)
    except MailerError:
        log.exception("link PDF of %s v%d failed", opened.claims.document, opened.claims.version)
        found = None
    if found is None:
        return _message_page(
            request,
            N_("No PDF is available"),
            [N_("There is no PDF of this document to download. Please contact the sender.")],
            status=404,
            opened=opened,
        )
    data, filename = found
    await run_in_threadpool(
        record_click, services, opened, action="downloaded", user_agent=_agent(request)
    )
    # file_stem() already removed quotes and separators; the plain name is ASCII for old
    # clients, the RFC 6266 filename* keeps a non-ASCII number intact.
    plain = "".join(c if c.isascii() and c.isprintable() else "_" for c in filename)
    headers = {
        **NO_STORE,
        "Content-Disposition": f'attachment; filename="{plain}"; '
        f"filename*=UTF-8''{quote(filename, safe='')}",
    }
    return Response(data, media_type="application/pdf", headers=headers)
