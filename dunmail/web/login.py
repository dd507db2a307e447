"""Signing AR clerks in and out (argon2 passwords, sessions, CSRF: dunmail/web/auth.py)."""

from __future__ import annotations

import math
import re
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from dunmail.web import auth
from dunmail.web.deps import services_of
from dunmail.web.ui_common import (
    Checked,
    render,
)
from dunmail.web.users import MAX_PASSWORD

router = APIRouter()


# -- sign in and out ---------------------------------------------------------------------------


def _login_page(
    request: Request,
    *,
    next_url: str,
    email: str = "",
    error: str = "",
    status_code: int = 200,
    retry_after: int | None = None,
) -> HTMLResponse:
    token = request.cookies.get(auth.LOGIN_COOKIE) or ""
    if not re.fullmatch(r"[A-Za-z0-9_-]{32,64}", token):
        token = secrets.token_urlsafe(32)
    context = {"next": next_url, "email": email, "error": error, "csrf": token}
    response = render(request, None, "login.html", context, status_code)
    response.set_cookie(
        auth.LOGIN_COOKIE,
        token,
        max_age=3600,
        httponly=True,
        samesite="lax",
        secure=services_of(request).config.web.secure_cookies,
        path="/login",
    )
    if retry_after is not None:  # RFC 9110 s10.2.3, with 429 (RFC 6585 s4) or 503
        response.headers["Retry-After"] = str(retry_after)
    return response


def _busy(request: Request, target: str, email: str) -> HTMLResponse:
    """503 with Retry-After: the database is too busy to count or check a sign-in now."""
    return _login_page(
        request,
        next_url=target,
        email=email,
        status_code=503,
        retry_after=5,
        error="Sign-in is busy: try again in a few seconds.",
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    """The sign-in form (a signed-in clerk goes straight on)."""
    target = auth.local_path(next)
    if auth.find_clerk(request) is not None:
        return RedirectResponse(target, status_code=303)
    return _login_page(request, next_url=target)


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=MAX_PASSWORD)],
    csrf: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/inbox",
) -> Response:
    """Check the password; on success a new session cookie, then on to ``next``."""
    services = services_of(request)
    target = auth.local_path(next)
    expected = request.cookies.get(auth.LOGIN_COOKIE) or ""
    if not auth.same_origin(request) or not auth.tokens_match(expected, csrf):
        return _login_page(
            request,
            next_url=target,
            email=email,
            error="The form expired: try again.",
            status_code=403,
        )
    # The peer, or X-Forwarded-For's client when uvicorn trusts the proxy that sent it.
    client = request.client.host if request.client else "-"
    attempt = await services.accounts.attempt_sign_in(
        email, password, client=client, previous=request.cookies.get(auth.COOKIE)
    )
    if attempt.busy:
        return _busy(request, target, email)
    if attempt.refused is not None:
        retry_after = attempt.refused.retry_after
        return _login_page(
            request,
            next_url=target,
            email=email,
            status_code=429,
            retry_after=retry_after,
            error=f"Too many sign-in attempts: try again in {math.ceil(retry_after / 60)} "
            "minute(s).",
        )
    if attempt.token is None:
        return _login_page(
            request,
            next_url=target,
            email=email,
            status_code=401,
            error="Wrong email or password.",
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        auth.COOKIE,
        attempt.token,
        max_age=services.config.web.session_hours * 3600,
        httponly=True,
        samesite="lax",
        secure=services.config.web.secure_cookies,
        path="/",
    )
    response.delete_cookie(auth.LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, clerk: Checked) -> Response:
    """Revoke this session; the cookie is worthless from now on, even if kept."""
    services_of(request).accounts.sign_out(request.cookies.get(auth.COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.COOKIE, path="/")
    return response
