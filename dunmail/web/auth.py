"""The HTTP side of AR users: the session cookie, the signed-in clerk, CSRF checks.

Passwords and sessions themselves are :class:`dunmail.web.accounts.Accounts` (``users.py``):
the cookie holds a random token whose SHA-256 alone is stored. Each session has its own CSRF
token, embedded in every form of its pages and compared in constant time on every POST.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from fastapi import HTTPException, Request

from dunmail.web.deps import services_of
from mailer.errors import NotFoundError

COOKIE = "dunmail_session"
LOGIN_COOKIE = "dunmail_login"  # the login form's own CSRF token (double submit: no session yet)


@dataclass(frozen=True)
class Clerk:
    """The signed-in user of a request, and the one tenant they see."""

    user_id: int
    email: str
    name: str
    tenant_id: int
    tenant: str  # the tenant's slug: every services call passes it
    csrf: str


def find_clerk(request: Request) -> Clerk | None:
    """The signed-in user of this request's cookie, if the session is live."""
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 100:
        return None
    services = services_of(request)
    found = services.accounts.signed_in(token)
    if found is None:
        return None
    user, csrf = found
    try:
        slug = services.tenants.slug(user.tenant_id)
    except NotFoundError:  # the tenant left the configuration: its users see nothing
        return None
    return Clerk(
        user_id=user.id or 0,
        email=user.email,
        name=user.name,
        tenant_id=user.tenant_id,
        tenant=slug,
        csrf=csrf,
    )


def local_path(value: str | None, default: str = "/inbox") -> str:
    """``value`` if it is a path on this site, else ``default`` (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(ch) < 32 for ch in value):
        return default
    return value


async def signed_in(request: Request) -> Clerk:
    """Dependency of every inbox page: the clerk, else a 303 to the login page."""
    clerk = find_clerk(request)
    if clerk is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        location = f"/login?next={quote(target, safe='/')}"
        raise HTTPException(303, "sign in first", headers={"Location": location})
    return clerk


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another site.

    ``Sec-Fetch-Site`` (sent by current browsers) must be ``same-origin`` or ``none`` (typed by
    the user). An ``Origin`` header must name this host or the configured public URL; ``null``
    says nothing (our own pages send it: their ``Referrer-Policy: no-referrer`` hides the
    origin too), so the CSRF token alone decides then.
    """
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    public = urlsplit(services_of(request).config.web.public_url)
    return bool(parts.netloc) and (
        parts.netloc == host or (parts.scheme, parts.netloc) == (public.scheme, public.netloc)
    )


def tokens_match(expected: str, given: object) -> bool:
    """Constant-time comparison of a CSRF token with a form field."""
    return (
        isinstance(given, str)
        and bool(expected)
        and hmac.compare_digest(expected.encode(), given.encode())
    )


async def csrf_checked(request: Request) -> Clerk:
    """Dependency of every state-changing POST: a signed-in clerk (else 303 to login), a
    same-origin request and the session's CSRF token in the form (else 403)."""
    clerk = await signed_in(request)
    form = await request.form()
    if not same_origin(request) or not tokens_match(clerk.csrf, form.get("csrf")):
        raise HTTPException(403, "the form has expired or came from another site: reload")
    return clerk
