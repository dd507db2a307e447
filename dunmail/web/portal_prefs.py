"""The account page's delivery preferences, and the link that confirms a new contact address.

* ``GET /l/<token>/account/preferences``: the customer's contacts (with any address waiting
  for confirmation), PDF attached or link only, and the language, behind the same View link
  token as the account page (``dunmail/services/preferences.py`` reads and writes them).
* ``POST /l/<token>/account/preferences``: one action (``delivery``, ``add``, ``change`` or
  ``remove``); success answers 303 back to the page with what was done.
* ``GET /l/<token>/confirm``: the link emailed to a new address shows a button, and only its
  ``POST`` confirms (``dunmail/services/contact_requests.py``), so a mail scanner that fetches
  links confirms nothing.

Every POST carries the account page's CSRF token (an HMAC of the ``SameSite=Strict`` cookie
and the token, ``portal._csrf``) and must be same-origin; changes are limited per customer per
hour in the service. Words are the ``portal`` gettext domain (``N_`` here, ``_`` in
``templates/web/portal/preferences.html``).
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from dunmail.portal_words import words_for
from dunmail.services import contact_requests, preferences
from dunmail.services.preferences import Outcome
from dunmail.web import auth, hosted
from dunmail.web.deps import page, services_of
from dunmail.web.link_service import NO_STORE, Opened, open_link
from dunmail.web.links import _branding
from dunmail.web.portal import COOKIE, _csrf, _gettext, _not_valid
from mailer.content.formatting import format_day
from mailer.errors import LinkInvalid
from mailer.ledger.localtime import local_date

router = APIRouter()
MAX_FIELD = 320  # an address's own limit (RFC 5321 s4.5.3.1) covers every field posted here


def N_(message: str) -> str:
    """Mark ``message`` for the portal catalog; it is translated when shown."""
    return message


WORDS = {
    Outcome.REQUESTED: N_(
        "We have emailed a confirmation link to the new address. It is used once it is confirmed."
    ),
    Outcome.CONFIRMED: N_("Thank you. The address is confirmed and will receive our emails."),
    Outcome.REMOVED: N_("The contact has been removed."),
    Outcome.SAVED: N_("Your preferences have been saved."),
    Outcome.UNCHANGED: N_("Nothing to change."),
    Outcome.INVALID_ADDRESS: N_("Please enter one email address, such as name@example.com."),
    Outcome.SUPPRESSED: N_(
        "We cannot send email to this address. Please use another one or contact us."
    ),
    Outcome.ALREADY: N_("This address is already one of your contacts."),
    Outcome.LAST_CONTACT: N_(
        "You need at least one contact: add another before removing this one."
    ),
    Outcome.UNKNOWN_CONTACT: N_("This contact is not on your account."),
    Outcome.TOO_MANY_CONTACTS: N_("Your account has the most contacts it can have."),
    Outcome.UNKNOWN_LANGUAGE: N_("Please choose one of the languages offered."),
    Outcome.LIMITED: N_("Too many changes. Please try again in an hour."),
    Outcome.UNAVAILABLE: N_("This change is not available. Please contact us."),
    Outcome.NOT_VALID: N_("This confirmation link is not valid any more."),
}
EXPIRED = N_("This form has expired. Please try again.")
DONE = {Outcome.REQUESTED, Outcome.REMOVED, Outcome.SAVED, Outcome.UNCHANGED, Outcome.CONFIRMED}
STATUS = {Outcome.LIMITED: 429, Outcome.SUPPRESSED: 422, Outcome.INVALID_ADDRESS: 422}


def _cookie(request: Request) -> str:
    cookie = request.cookies.get(COOKIE) or ""
    return cookie if 32 <= len(cookie) <= 64 else secrets.token_urlsafe(32)


def _respond(
    request: Request, name: str, context: dict[str, Any], status: int, cookie: str
) -> Response:
    response = page(request, name, context, status)
    response.headers.update(NO_STORE)
    response.set_cookie(
        COOKIE,
        cookie,
        httponly=True,
        samesite="strict",
        path="/l/",
        secure=services_of(request).config.web.secure_cookies,
    )
    return response


async def _opened(request: Request, token: str) -> Opened | None:
    try:
        return await run_in_threadpool(open_link, services_of(request), token)
    except LinkInvalid:
        return None


def _form_ok(request: Request, token: str, form: Any) -> bool:
    cookie = request.cookies.get(COOKIE) or ""
    return (
        bool(cookie)
        and auth.same_origin(request)
        and auth.tokens_match(_csrf(request, token, cookie), form.get("csrf"))
    )


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) and len(value) <= MAX_FIELD else None


async def _page(
    request: Request, token: str, opened: Opened, notice: str = "", status: int = 200
) -> Response:
    services = services_of(request)
    prefs = await run_in_threadpool(preferences.read_preferences, services, opened)
    if prefs is None:
        return _not_valid(request)
    _ = _gettext(prefs.locale)
    zone = prefs.time_zone or "UTC"
    pending = [
        (p.email, p.replaces, format_day(local_date(p.expires_at, zone), "medium", prefs.locale))
        for p in prefs.pending
    ]
    cookie = _cookie(request)
    brand = _branding(request, opened)
    context = {
        "prefs": prefs,
        "pending": pending,
        "lang": prefs.locale.split("_")[0],
        "brand": brand,
        "brand_color": brand.brand_color,
        "csrf": _csrf(request, token, cookie),
        "action": f"/l/{token}/account/preferences",
        "back_url": f"/l/{token}/account",
        "notice": _(notice) if notice else "",
        "error": status >= 400,
        "_": _,
    }
    return _respond(request, "portal/preferences.html", context, status, cookie)


@router.get("/l/{token}/account/preferences")
async def preferences_page(token: str, request: Request, done: str = "") -> Response:
    """The customer's contacts, PDF delivery and language."""
    opened = await _opened(request, token)
    if opened is None:
        return _not_valid(request)
    known = {o.value: o for o in DONE}
    return await _page(request, token, opened, WORDS[known[done]] if done in known else "")


@router.post("/l/{token}/account/preferences")
async def change_preferences(token: str, request: Request) -> Response:
    """One change: delivery (PDF, language), or add, change or remove a contact."""
    services = services_of(request)
    opened = await _opened(request, token)
    if opened is None:
        return _not_valid(request)
    form = await request.form()
    if not _form_ok(request, token, form):
        return await _page(request, token, opened, EXPIRED, 403)
    action = form.get("action")
    email, name, old = _field(form, "email"), _field(form, "name"), _field(form, "contact")
    result: Outcome | None
    if action == "delivery":
        language = _field(form, "language") or ""
        pdf = form.get("pdf")
        if pdf not in ("attach", "link"):
            return await _page(request, token, opened, WORDS[Outcome.UNAVAILABLE], 400)
        result = await run_in_threadpool(
            lambda: preferences.set_delivery(
                services, opened, pdf_link_only=pdf == "link", language=language
            )
        )
    elif action in ("add", "change") and email is not None:
        if action == "change" and old is None:
            return await _page(request, token, opened, WORDS[Outcome.UNKNOWN_CONTACT], 400)
        result = await contact_requests.request_contact(
            services,
            opened,
            email=email,
            name=name or "",
            replaces=old if action == "change" else None,
        )
    elif action == "remove" and old is not None:
        result = await run_in_threadpool(
            lambda: preferences.remove_contact(services, opened, email=old)
        )
    else:
        result = Outcome.INVALID_ADDRESS if action in ("add", "change") else Outcome.UNAVAILABLE
    if result is None:
        return _not_valid(request)
    if result in DONE:
        return RedirectResponse(
            f"/l/{token}/account/preferences?done={result.value}", status_code=303, headers=NO_STORE
        )
    return await _page(request, token, opened, WORDS[result], STATUS.get(result, 400))


def _confirm_page(
    request: Request,
    token: str,
    found: contact_requests.Confirmation | None,
    notice: str,
    status: int,
) -> Response:
    if found is None:
        return _not_valid(request)
    services = services_of(request)
    _, config = services.tenants.config(found.tenant_id)
    brand = hosted.build_branding({}, config.branding.as_context())
    brand = brand if brand.name else replace(brand, name=config.name)
    cookie = _cookie(request)
    context = {
        "found": found,
        "lang": found.locale.split("_")[0],
        "brand": brand,
        "brand_color": brand.brand_color,
        "csrf": _csrf(request, token, cookie),
        "action": f"/l/{token}/confirm",
        "notice": notice,
        "_": _gettext(found.locale),
    }
    return _respond(request, "portal/confirm_contact.html", context, status, cookie)


@router.get("/l/{token}/confirm")
async def confirm_page(token: str, request: Request) -> Response:
    """The emailed link: what will be confirmed, and the button that does it."""
    services = services_of(request)
    found = await run_in_threadpool(contact_requests.read_confirmation, services, token)
    return _confirm_page(request, token, found, "", 200)


@router.post("/l/{token}/confirm")
async def confirm_contact(token: str, request: Request) -> Response:
    """Confirm the address the emailed link names: once, before it expires."""
    services = services_of(request)
    found = await run_in_threadpool(contact_requests.read_confirmation, services, token)
    if found is None:
        return _not_valid(request)
    form = await request.form()
    _ = _gettext(found.locale)
    if not _form_ok(request, token, form):
        return _confirm_page(request, token, found, _(EXPIRED), 403)
    result = await run_in_threadpool(contact_requests.confirm_contact, services, token)
    if result not in (Outcome.CONFIRMED, Outcome.ALREADY):
        return _not_valid(request)
    words = words_for(found.locale)
    context: dict[str, Any] = {
        "title": words.gettext(WORDS[Outcome.CONFIRMED]),
        "paragraphs": [],
        "form_action": None,
        "brand": None,
    }
    response = page(request, "link_message.html", context, 200)
    response.headers.update(NO_STORE)
    return response
