"""The customer's account page behind a signed View link, and "pay one or several".

* ``GET /l/<token>/account``: the account of the customer the View link belongs to
  (``dunmail/services/portal.py`` reads it, ``portal_page.py`` words it). The link's own token
  grants it: same tenant, customer, expiry and revocation; any other link is "not valid".
* ``POST /l/<token>/account/pay``: the chosen invoices (or "all overdue") of one currency are
  recorded and handed off: a page showing the server's total with a form to the provider, or
  a 303 to Stripe Checkout. CSRF: the form carries an HMAC (under the link key) of a random
  cookie (``SameSite=Strict``, path ``/l/``) and the token, and the browser must say the POST
  is same-origin. Hand-offs are limited per customer per hour (``INTENTS_PER_HOUR``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from dunmail.portal_words import words_for
from dunmail.services import portal
from dunmail.services.handoff import CheckoutClient, StripeHttp
from dunmail.web import auth
from dunmail.web.deps import page, services_of
from dunmail.web.link_service import NO_STORE, Opened, open_link
from dunmail.web.links import _branding
from dunmail.web.portal_page import build_account, build_handoff, selected_ids
from dunmail.web.portal_query_page import read_section
from dunmail.web.portal_sections import section_context
from mailer.config import is_loopback
from mailer.errors import LinkInvalid
from mailer.outbound.links import token_hash

router = APIRouter()
COOKIE = "dunmail_portal"


def N_(message: str) -> str:
    """Mark ``message`` for the portal catalog; it is translated when shown."""
    return message


_REFUSED = {
    portal.Refusal.NOTHING: N_("Please choose at least one invoice."),
    portal.Refusal.FOREIGN: N_("One of the chosen invoices is not open on this account."),
    portal.Refusal.MIXED: N_("Invoices in different currencies are paid separately."),
    portal.Refusal.TOO_MANY: N_("Please choose fewer invoices at a time."),
    portal.Refusal.LIMITED: N_("Too many payment attempts. Please try again in an hour."),
    portal.Refusal.UNAVAILABLE: N_("Online payment is not available. Please contact us."),
}


def _gettext(locale: str) -> Any:
    words = words_for(locale)

    def _(message: str, **values: Any) -> str:
        text = words.gettext(message)
        return text % values if values else text

    return _


def _csrf(request: Request, token: str, cookie: str) -> str:
    key = services_of(request).links.signing
    return hmac.new(
        key, f"portal|{cookie}|{token_hash(token)}".encode(), hashlib.sha256
    ).hexdigest()


def _checkout_client(request: Request) -> CheckoutClient:
    client: CheckoutClient | None = getattr(request.app.state, "checkout_client", None)
    return client if client is not None else StripeHttp()


def _not_valid(request: Request) -> Response:
    context = {
        "title": "This link is not valid",
        "paragraphs": ["Please use the link from your email, or contact the sender."],
        "form_action": None,
        "brand": None,
    }
    response = page(request, "link_message.html", context, 404)
    response.headers.update(NO_STORE)
    return response


async def _account(request: Request, token: str) -> tuple[Opened, portal.Account] | None:
    services = services_of(request)
    try:
        opened = await run_in_threadpool(open_link, services, token)
    except LinkInvalid:
        return None
    account = await run_in_threadpool(portal.read_account, services, opened)
    return (opened, account) if account is not None else None


def _account_page(
    request: Request,
    token: str,
    opened: Opened,
    account: portal.Account,
    notice: str = "",
    status: int = 200,
    transfer: list[int] | None = None,
) -> Response:
    services = services_of(request)
    sections, refused = section_context(services, token, opened, account, transfer=transfer)
    if refused is not None:  # a bank-transfer selection (portal_documents.py) not taken
        notice, status = _REFUSED[refused], 400
    cookie = request.cookies.get(COOKIE) or ""
    if len(cookie) < 32 or len(cookie) > 64:
        cookie = secrets.token_urlsafe(32)
    _ = _gettext(account.locale)
    acct = build_account(account, now=services.clock.now(), words=words_for(account.locale))
    brand = _brand(request, opened)
    context = {
        "acct": acct,
        "lang": acct.lang,
        "brand": brand,
        "brand_color": brand.brand_color,
        "csrf": _csrf(request, token, cookie),
        "pay_action": f"/l/{token}/account/pay",
        "queries": read_section(services, opened, account),  # portal_query.py
        "query_action": f"/l/{token}/account/query",
        "notice": _(notice) if notice else "",
        "_": _,
        **sections,  # the bank-transfer box and the statements (portal_sections.py)
    }
    response = page(request, "portal/account.html", context, status)
    response.headers.update(NO_STORE)
    response.set_cookie(
        COOKIE,
        cookie,
        httponly=True,
        samesite="strict",
        path="/l/",
        secure=services.config.web.secure_cookies,
    )
    return response


def _brand(request: Request, opened: Opened) -> Any:
    return _branding(request, opened)  # the document page's branding: one place


@router.get("/l/{token}/account")
async def account_page(token: str, request: Request) -> Response:
    """The customer's open invoices, credits and payments."""
    found = await _account(request, token)
    if found is None:
        return _not_valid(request)
    return _account_page(request, token, *found)


@router.post("/l/{token}/account/pay")
async def pay_selected(token: str, request: Request) -> Response:
    """Hand the chosen invoices of one currency to the tenant's payment provider."""
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
        return _account_page(
            request, token, opened, account, N_("This form has expired. Please try again."), 403
        )
    ids = selected_ids([v for v in form.getlist("invoice") if isinstance(v, str)])
    currency = form.get("currency")
    if ids is None or not isinstance(currency, str) or len(currency) != 3:
        return _account_page(request, token, opened, account, _REFUSED[portal.Refusal.FOREIGN], 400)
    result = await run_in_threadpool(
        lambda: portal.hand_off(
            services_of(request),
            opened,
            currency=currency,
            invoice_ids=ids,
            all_overdue=form.get("action") == "overdue",
            client=_checkout_client(request),
        )
    )
    if result is None:
        return _not_valid(request)
    if isinstance(result, portal.Refusal):
        status = 429 if result is portal.Refusal.LIMITED else 400
        return _account_page(request, token, opened, account, _REFUSED[result], status)
    return _handoff_page(request, token, opened, account, result)


def _handoff_page(
    request: Request, token: str, opened: Opened, account: portal.Account, result: portal.Handoff
) -> Response:
    target = urlsplit(result.url)
    loopback = target.hostname is not None and is_loopback(target.hostname)
    plain_host = re.fullmatch(r"[A-Za-z0-9.:\[\]-]+", target.netloc) is not None
    if not plain_host or (target.scheme != "https" and not (target.scheme == "http" and loopback)):
        return _account_page(
            request, token, opened, account, _REFUSED[portal.Refusal.UNAVAILABLE], 502
        )
    if not result.fields:  # Stripe: its own page shows the total
        return RedirectResponse(result.url, status_code=303, headers=NO_STORE)
    brand = _brand(request, opened)
    context = {
        "hand": build_handoff(result.selection, account),
        "target": result.url,
        "fields": result.fields,
        "back_url": f"/l/{token}/account",
        "lang": account.locale.split("_")[0],
        "brand": brand,
        "brand_color": brand.brand_color,
        "_": _gettext(account.locale),
    }
    response = page(request, "portal/handoff.html", context)
    response.headers.update(NO_STORE)
    origin = f"{target.scheme}://{target.netloc}"
    response.headers["Content-Security-Policy"] = NO_STORE["Content-Security-Policy"].replace(
        "form-action 'self'", f"form-action 'self' {origin}"
    )
    return response
