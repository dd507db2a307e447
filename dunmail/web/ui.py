"""The AR inbox pages: sign-in, threads and their actions, outbox, suppressions, holds, report.

Every page needs a signed-in clerk (``auth.signed_in``) and every POST the session's CSRF token
(``auth.csrf_checked``). A clerk sees one tenant: each services call passes ``clerk.tenant``,
so another tenant's thread or hold answers 404 like one that does not exist. Text that came
from mail is only ever shown through the autoescaping templates, never marked safe.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session

from bounce.reporting import by_reason, to_csv
from dunmail.app import Services
from dunmail.web import auth
from dunmail.web.auth import Clerk, csrf_checked, signed_in
from dunmail.web.deps import SECURITY_HEADERS, page, services_of
from mailer.clock import as_utc
from mailer.errors import MailerError, NotFoundError
from mailer.models import HoldReason, Message, MessageStatus, ThreadStatus

router = APIRouter()

FLASH_COOKIE = "dunmail_flash"
FILTERS = {
    "open": "Open",
    "resolved": "Resolved",
    "all": "All",
    "bounced": "Bounced",
    "replied": "Replied",
    "fix_contact": "Needs contact fix",
    "unmatched": "Unmatched",
}
# Holds a clerk places by hand; contact_bounced is the engine's own and ends with a resend.
HOLD_REASONS = [r.value for r in HoldReason if r is not HoldReason.CONTACT_BOUNCED]
SignedIn = Annotated[Clerk, Depends(signed_in)]
Checked = Annotated[Clerk, Depends(csrf_checked)]
Text = Annotated[str, Form(max_length=2000)]


# -- rendering and redirects -------------------------------------------------------------------


def _render(
    request: Request,
    clerk: Clerk | None,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
) -> HTMLResponse:
    """A page of the inbox, with the clerk's nav and the flash message of the last action."""
    flash = _read_flash(request)
    response = page(request, f"ui/{name}", {**context, "clerk": clerk, "flash": flash}, status_code)
    if flash is not None:
        response.delete_cookie(FLASH_COOKIE, path="/")
    response.headers["Cache-Control"] = "no-store"
    return response


def _back(url: str, level: str, text: str) -> RedirectResponse:
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


def _read_flash(request: Request) -> dict[str, str] | None:
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


def _not_found(request: Request, clerk: Clerk, what: str) -> HTMLResponse:
    return _render(request, clerk, "not_found.html", {"what": what}, status_code=404)


def _thread_url(thread_id: int) -> str:
    return f"/inbox/threads/{thread_id}"


# -- sign in and out ---------------------------------------------------------------------------


def _throttle(request: Request) -> auth.LoginThrottle:
    """The app's in-memory login throttle, made on first use (see auth.LoginThrottle)."""
    throttle = getattr(request.app.state, "login_throttle", None)
    if not isinstance(throttle, auth.LoginThrottle):
        throttle = auth.LoginThrottle()
        request.app.state.login_throttle = throttle
    return throttle


def _login_page(
    request: Request, *, next_url: str, email: str = "", error: str = "", status_code: int = 200
) -> HTMLResponse:
    token = request.cookies.get(auth.LOGIN_COOKIE) or ""
    if not re.fullmatch(r"[A-Za-z0-9_-]{32,64}", token):
        token = secrets.token_urlsafe(32)
    context = {"next": next_url, "email": email, "error": error, "csrf": token}
    response = _render(request, None, "login.html", context, status_code)
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
    if throttle.blocked(email, client, services.clock.now()):
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
        throttle.failed(email, client, services.clock.now())
        return _login_page(
            request,
            next_url=target,
            email=email,
            status_code=401,
            error="Wrong email or password.",
        )
    throttle.succeeded(email, client)
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


# -- threads -----------------------------------------------------------------------------------


def _types(services: Services, thread_id: int, tenant: str) -> set[str]:
    return {e["type"] for e in services.inbox_thread(thread_id, tenant=tenant)["timeline"]}


@router.get("/inbox", response_class=HTMLResponse)
def inbox(request: Request, clerk: SignedIn, filter: str = "open") -> Response:
    """The tenant's threads, newest activity first, by filter."""
    services = services_of(request)
    chosen = filter if filter in FILTERS else "open"
    rows: list[dict[str, Any]] = []
    if chosen in ("open", "resolved"):
        rows = services.inbox(tenant=clerk.tenant, status=ThreadStatus(chosen))
    elif chosen != "unmatched":
        rows = services.inbox(tenant=clerk.tenant, status=None)
    if chosen == "fix_contact":
        rows = [r for r in rows if r["task"] == "fix_contact"]
    elif chosen in ("bounced", "replied"):
        # The list carries only the last event; these need the whole timeline of each thread.
        wanted = {"bounced": {"bounce", "complaint"}, "replied": {"reply"}}[chosen]
        rows = [r for r in rows if wanted & _types(services, r["id"], clerk.tenant)]
    context = {"rows": rows, "filters": FILTERS, "chosen": chosen}
    return _render(request, clerk, "inbox.html", context)


@router.get("/inbox/threads/{thread_id}", response_class=HTMLResponse)
def thread_page(request: Request, thread_id: int, clerk: SignedIn) -> Response:
    """One thread: its timeline and what can be done about it."""
    services = services_of(request)
    try:
        thread = services.inbox_thread(thread_id, tenant=clerk.tenant)
        about = services.inbox_context(thread_id, tenant=clerk.tenant)
    except NotFoundError:
        return _not_found(request, clerk, f"thread {thread_id}")
    holds = [h for h in services.holds(tenant=clerk.tenant) if h["customer"] == about["customer"]]
    with Session(services.engine) as session:
        users = [u.email for u in auth.list_users(session, tenant_id=clerk.tenant_id)]
    context = {
        "thread": thread,
        "about": about,
        "holds": holds,
        "users": users,
        "hold_reasons": HOLD_REASONS,
        "bounced": any(e["type"] == "bounce" for e in thread["timeline"]),
        "back": _thread_url(thread_id),
    }
    return _render(request, clerk, "thread.html", context)


def _act(thread_id: int, done: str, action: Callable[[], object]) -> RedirectResponse:
    """Run one services call for a thread's form; back to the thread with how it went.
    NotFoundError (another tenant's thread) goes up to the route, which answers 404."""
    try:
        action()
    except NotFoundError:
        raise
    except MailerError as exc:
        return _back(_thread_url(thread_id), "error", str(exc))
    return _back(_thread_url(thread_id), "ok", done)


@router.post("/inbox/threads/{thread_id}/assign")
def assign(request: Request, thread_id: int, clerk: Checked, assignee: Text = "") -> Response:
    """Give the thread to a clerk (empty: to nobody)."""
    services = services_of(request)
    who = assignee.strip()
    try:
        return _act(
            thread_id,
            f"assigned to {who}" if who else "unassigned",
            lambda: services.inbox_update(thread_id, tenant=clerk.tenant, assignee=who),
        )
    except NotFoundError:
        return _not_found(request, clerk, f"thread {thread_id}")


@router.post("/inbox/threads/{thread_id}/status")
def set_status(
    request: Request, thread_id: int, clerk: Checked, status: Annotated[str, Form()]
) -> Response:
    """Resolve or reopen the thread."""
    services = services_of(request)
    if status not in ("open", "resolved"):
        return _back(_thread_url(thread_id), "error", "status is open or resolved")
    wanted = ThreadStatus(status)
    try:
        return _act(
            thread_id,
            "resolved" if wanted is ThreadStatus.RESOLVED else "reopened",
            lambda: services.inbox_update(thread_id, tenant=clerk.tenant, status=wanted),
        )
    except NotFoundError:
        return _not_found(request, clerk, f"thread {thread_id}")


@router.post("/inbox/threads/{thread_id}/note")
def note(request: Request, thread_id: int, clerk: Checked, text: Text) -> Response:
    """Leave a note on the thread."""
    services = services_of(request)
    if not text.strip():
        return _back(_thread_url(thread_id), "error", "the note is empty")
    try:
        return _act(
            thread_id,
            "note added",
            lambda: services.inbox_note(
                thread_id, text.strip(), tenant=clerk.tenant, author=clerk.email
            ),
        )
    except NotFoundError:
        return _not_found(request, clerk, f"thread {thread_id}")


@router.post("/inbox/threads/{thread_id}/contact")
def fix_contact(
    request: Request,
    thread_id: int,
    clerk: Checked,
    old: Annotated[str, Form(max_length=320)],
    new: Annotated[str, Form(max_length=320)],
) -> Response:
    """Correct a contact's address (then resend from the thread)."""
    services = services_of(request)
    try:
        return _act(
            thread_id,
            f"contact {old} is now {new.strip()}: resend the bounced email when ready",
            lambda: services.inbox_fix_contact(
                thread_id, tenant=clerk.tenant, old=old, new=new, by=clerk.email
            ),
        )
    except NotFoundError:
        return _not_found(request, clerk, f"thread {thread_id}")


@router.post("/inbox/threads/{thread_id}/resend")
async def resend(request: Request, thread_id: int, clerk: Checked) -> Response:
    """Send the bounced email again to the customer's contacts as they are now."""
    services = services_of(request)
    try:
        message, addresses = await services.inbox_resend(
            thread_id, tenant=clerk.tenant, by=clerk.email
        )
    except NotFoundError:
        return _not_found(request, clerk, f"thread {thread_id}")
    except MailerError as exc:
        return _back(_thread_url(thread_id), "error", str(exc))
    return _back(_thread_url(thread_id), *_outcome(message, "resent to " + ", ".join(addresses)))


def _outcome(message: Message, done: str) -> tuple[str, str]:
    """How a send by hand went, in the clerk's words."""
    if message.status is MessageStatus.SENT:
        return "ok", done
    why = message.skip_reason or message.last_error or ""
    return "error", f"{done}: {message.status.value}{': ' + why if why else ''}"


@router.post("/inbox/threads/{thread_id}/send")
async def send_now(
    request: Request, thread_id: int, clerk: Checked, what: Annotated[str, Form()]
) -> Response:
    """A reminder of the thread's invoice, or a statement of its customer, now."""
    services = services_of(request)
    url = _thread_url(thread_id)
    try:
        about = services.inbox_context(thread_id, tenant=clerk.tenant)
        if what == "reminder" and about["invoice"] is not None:
            kind = about["invoice"]["reminder_kind"]
            message = await services.send_invoice(
                about["invoice"]["number"], kind=kind, tenant=clerk.tenant
            )
            return _back(url, *_outcome(message, f"{kind} sent"))
        if what == "statement" and about["customer"] is not None:
            messages = await services.send_statement(about["customer"], tenant=clerk.tenant)
            outcomes = [_outcome(m, "statement sent") for m in messages]
            failed = [text for level, text in outcomes if level == "error"]
            return _back(url, "error", "; ".join(failed)) if failed else _back(url, *outcomes[0])
    except NotFoundError:
        return _not_found(request, clerk, f"thread {thread_id}")
    except MailerError as exc:
        return _back(url, "error", str(exc))
    return _back(url, "error", "nothing to send for this thread")


def _until(value: str) -> datetime | None:
    if not value.strip():
        return None
    try:
        return as_utc(datetime.fromisoformat(value.strip()))
    except ValueError:
        raise MailerError(f"{value!r} is not a date (YYYY-MM-DD)") from None


@router.post("/inbox/threads/{thread_id}/hold")
def hold(
    request: Request,
    thread_id: int,
    clerk: Checked,
    reason: Annotated[str, Form()],
    scope: Annotated[str, Form()] = "invoice",
    until: Annotated[str, Form(max_length=40)] = "",
    note: Text = "",
) -> Response:
    """Pause chasing this thread's invoice, or all of its customer's."""
    services = services_of(request)

    def place() -> None:
        if reason not in HOLD_REASONS:
            raise MailerError(f"a hold's reason is one of {', '.join(HOLD_REASONS)}")
        about = services.inbox_context(thread_id, tenant=clerk.tenant)
        number = about["invoice"]["number"] if about["invoice"] else None
        if scope == "invoice" and number is None:
            raise MailerError("this thread is about no invoice: hold the customer")
        services.place_hold(
            tenant=clerk.tenant,
            customer=about["customer"] if scope == "customer" else None,
            invoice=number if scope == "invoice" else None,
            reason=HoldReason(reason),
            until=_until(until),
            note=note.strip() or None,
            by=clerk.email,
        )

    try:
        return _act(thread_id, "hold placed", place)
    except NotFoundError:
        return _not_found(request, clerk, f"thread {thread_id}")


@router.post("/inbox/holds/{hold_id}/lift")
def lift(
    request: Request, hold_id: int, clerk: Checked, back: Annotated[str, Form()] = ""
) -> Response:
    """End a hold now; chasing resumes at the next pass."""
    services = services_of(request)
    try:
        services.lift_hold(hold_id, tenant=clerk.tenant)
    except NotFoundError:
        return _not_found(request, clerk, f"hold {hold_id}")
    return _back(auth.local_path(back, "/inbox/holds"), "ok", f"hold {hold_id} lifted")


# -- outbox, suppressions, holds, bounce report ----------------------------------------------


@router.get("/inbox/outbox", response_class=HTMLResponse)
def outbox(request: Request, clerk: SignedIn) -> Response:
    """The tenant's newest emails: status, recipients, and why any was skipped or failed."""
    rows = services_of(request).tenant_outbox(tenant=clerk.tenant)
    return _render(request, clerk, "outbox.html", {"rows": rows})


@router.get("/inbox/suppressions", response_class=HTMLResponse)
def suppressions(request: Request, clerk: SignedIn, all: bool = False) -> Response:
    """The tenant's blocked addresses (``all``: lifted and expired too)."""
    rows = services_of(request).suppressions(tenant=clerk.tenant, everything=all)
    return _render(request, clerk, "suppressions.html", {"rows": rows, "everything": all})


@router.post("/inbox/suppressions/unblock")
def unblock(
    request: Request,
    clerk: Checked,
    address: Annotated[str, Form(max_length=320)],
    reason: Text,
    back: Annotated[str, Form()] = "",
) -> Response:
    """Let mail go to a blocked address again; who and why are kept."""
    target = auth.local_path(back, "/inbox/suppressions")
    if not reason.strip():
        return _back(target, "error", "say why the address may get mail again")
    try:
        services_of(request).unblock(
            address, tenant=clerk.tenant, by=clerk.email, why=reason.strip()
        )
    except MailerError as exc:
        return _back(target, "error", str(exc))
    return _back(target, "ok", f"{address} unblocked")


@router.get("/inbox/holds", response_class=HTMLResponse)
def holds(request: Request, clerk: SignedIn) -> Response:
    """The tenant's active holds."""
    rows = services_of(request).holds(tenant=clerk.tenant)
    return _render(request, clerk, "holds.html", {"rows": rows})


def _since(request: Request, value: str | None) -> datetime:
    if value:
        try:
            return as_utc(datetime.fromisoformat(value))
        except ValueError:
            pass
    return services_of(request).clock.now() - timedelta(days=30)


@router.get("/inbox/report", response_class=HTMLResponse)
def report(request: Request, clerk: SignedIn, since: str | None = None) -> Response:
    """Bounces and complaints since a date, by reason, with the CSV to download."""
    start = _since(request, since)
    rows = services_of(request).bounce_report(tenant=clerk.tenant, since=start)
    context = {"rows": rows, "since": start.date().isoformat(), "by_reason": by_reason(rows)}
    return _render(request, clerk, "report.html", context)


@router.get("/inbox/report.csv")
def report_csv(request: Request, clerk: SignedIn, since: str | None = None) -> Response:
    """The bounce report as a CSV attachment (formula-like cells defused by ``to_csv``)."""
    start = _since(request, since)
    rows = services_of(request).bounce_report(tenant=clerk.tenant, since=start)
    name = re.sub(r"[^a-z0-9_-]", "_", clerk.tenant.lower())
    headers = {
        **SECURITY_HEADERS,
        "Content-Disposition": (
            f'attachment; filename="bounces-{name}-since-{start.date().isoformat()}.csv"'
        ),
        "Cache-Control": "no-store",
    }
    return Response(to_csv(rows), media_type="text/csv; charset=utf-8", headers=headers)
