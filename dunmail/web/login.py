"""Signing AR clerks in and out (argon2 passwords, sessions, CSRF: dunmail/web/auth.py)."""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session

from dunmail.web import auth
from dunmail.web.deps import services_of
from dunmail.web.ui_common import (
    Checked,
    render,
)

router = APIRouter()


# -- sign in and out ---------------------------------------------------------------------------


def _throttle(request: Request) -> auth.LoginThrottle:
    """The login throttle (see auth.LoginThrottle); its counts live in the database."""
    return auth.LoginThrottle(services_of(request).engine)


def _login_page(
    request: Request, *, next_url: str, email: str = "", error: str = "", status_code: int = 200
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
    return response


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
    password: Annotated[str, Form(max_length=auth.MAX_PASSWORD)],
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
    client = request.client.host if request.client else "-"
    throttle = _throttle(request)
    if await asyncio.to_thread(throttle.blocked, email, client, services.clock.now()):
        return _login_page(
            request,
            next_url=target,
            email=email,
            status_code=429,
            error="Too many failed sign-ins: wait a few minutes and try again.",
        )

    previous = request.cookies.get(auth.COOKIE)

    def check() -> str | None:
        with Session(services.engine) as session:
            user = auth.authenticate(session, email, password)
            if user is None:
                return None
            if previous:  # a new sign-in replaces the browser's old session, never reuses it
                auth.end_session(session, previous, now=services.clock.now())
            token = auth.start_session(
                session, user, now=services.clock.now(), hours=services.config.web.session_hours
            )
            session.commit()
            return token

    token = await asyncio.to_thread(check)  # argon2 takes tens of milliseconds of CPU
    if token is None:
        await asyncio.to_thread(throttle.failed, email, client, services.clock.now())
        return _login_page(
            request,
            next_url=target,
            email=email,
            status_code=401,
            error="Wrong email or password.",
        )
    await asyncio.to_thread(throttle.succeeded, email, client)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        auth.COOKIE,
        token,
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
    services = services_of(request)
    with Session(services.engine) as session:
        auth.end_session(session, request.cookies.get(auth.COOKIE, ""), now=services.clock.now())
        session.commit()
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.COOKIE, path="/")
    return response
