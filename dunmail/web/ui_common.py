"""What the AR inbox pages share: the page renderer with the clerk's nav, one-time messages
after an action, and the form and sign-in annotations."""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from dunmail.labels import Labels, labels_for
from dunmail.web.auth import Clerk, csrf_checked, signed_in
from dunmail.web.deps import page, services_of
from mailer.ledger.models import HoldReason

FLASH_COOKIE = "dunmail_flash"
FILTERS = {
    "open": "Open",
    "resolved": "Resolved",
    "all": "All",
    "bounced": "Bounced",
    "replied": "Replied",
    "fix_contact": "Needs contact fix",
    "review": "Needs bounce review",
    "unmatched": "Unmatched",
}
# Holds a clerk places by hand; contact_bounced is the engine's own and ends with a resend.
HOLD_REASONS = [r.value for r in HoldReason if r is not HoldReason.CONTACT_BOUNCED]
SignedIn = Annotated[Clerk, Depends(signed_in)]
Checked = Annotated[Clerk, Depends(csrf_checked)]
Text = Annotated[str, Form(max_length=2000)]


# -- rendering and redirects -------------------------------------------------------------------


def render(
    request: Request,
    clerk: Clerk | None,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
) -> HTMLResponse:
    """A page of the inbox, with the clerk's nav, the flash message of the last action, and
    ``L``, the clerk's words for the engine's codes in the tenant's language (dunmail/labels.py).
    """
    flash = read_flash(request)
    labels = words(request, clerk)
    extra = {"clerk": clerk, "flash": flash, "L": labels, "lang": labels.language}
    response = page(request, f"ui/{name}", {**context, **extra}, status_code)
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/")
    response.headers["Cache-Control"] = "no-store"
    return response


def words(request: Request, clerk: Clerk | None) -> Labels:
    """The clerk's words (dunmail/labels.py) in the language of the clerk's tenant."""
    locale = services_of(request).customers.language(tenant=clerk.tenant) if clerk else None
    return labels_for(locale)


def redirect_back(url: str, level: str, text: str) -> RedirectResponse:
    """303 to ``url`` carrying a one-time message (a cookie, so no URL can forge one)."""
    response = RedirectResponse(url, status_code=303)
    payload = json.dumps([level, text[:500]]).encode()
    response.set_cookie(
        FLASH_COOKIE,
        base64.urlsafe_b64encode(payload).decode(),
        max_age=60,
        httponly=True,
        samesite="lax",
        path="/",
    )
    return response


def read_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw or len(raw) > 2000:
        return None
    try:
        level, text = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (ValueError, TypeError):
        return None
    if level not in ("ok", "error") or not isinstance(text, str):
        return None
    return {"level": level, "text": text}


def not_found(request: Request, clerk: Clerk, what: str) -> HTMLResponse:
    return render(request, clerk, "not_found.html", {"what": what}, status_code=404)


def thread_url(thread_id: int) -> str:
    return f"/inbox/threads/{thread_id}"
