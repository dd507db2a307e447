"""The AR inbox pages: threads and their actions (lists: ui_lists.py; sign-in: login.py).

Every page needs a signed-in clerk (``auth.signed_in``) and every POST the session's CSRF token
(``auth.csrf_checked``). A clerk sees one tenant: each services call passes ``clerk.tenant``,
so another tenant's thread or hold answers 404 like one that does not exist. Text that came
from mail is only ever shown through the autoescaping templates, never marked safe.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bounce.inbox import THREAD_FILTERS
from dunmail.services import query_desk
from dunmail.web import auth
from dunmail.web.deps import RowId, services_of
from dunmail.web.ui_common import (
    FILTERS,
    HOLD_REASONS,
    Checked,
    SignedIn,
    Text,
    not_found,
    redirect_back,
    render,
    thread_url,
    words,
)
from mailer.clock import as_utc
from mailer.content.kinds import Kind
from mailer.errors import MailerError, NotFoundError
from mailer.inbox_models import ThreadStatus
from mailer.ledger.models import HoldReason
from mailer.outbound.models import Message, MessageStatus

router = APIRouter()


# -- threads -----------------------------------------------------------------------------------


PAGE = 100  # threads per inbox page


@router.get("/inbox", response_class=HTMLResponse)
def inbox(
    request: Request, clerk: SignedIn, filter: str = "open", before: str | None = None
) -> Response:
    """The tenant's threads, newest activity first, by filter, a page at a time."""
    services = services_of(request)
    chosen = filter if filter in FILTERS else "open"
    rows: list[dict[str, Any]] = []
    if chosen != "unmatched":
        status = ThreadStatus(chosen) if chosen in ("open", "resolved") else None
        only = chosen if chosen in THREAD_FILTERS else None
        try:
            rows = services.inbox.threads(
                tenant=clerk.tenant, status=status, only=only, limit=PAGE + 1, before=before
            )
        except MailerError:  # a cursor edited by hand: the first page instead
            rows = services.inbox.threads(
                tenant=clerk.tenant, status=status, only=only, limit=PAGE + 1
            )
    older = rows[PAGE - 1]["cursor"] if len(rows) > PAGE else None
    rows = rows[:PAGE]
    context = {"rows": rows, "filters": FILTERS, "chosen": chosen, "older": older}
    return render(request, clerk, "inbox.html", context)


@router.get("/inbox/threads/{thread_id}", response_class=HTMLResponse)
def thread_page(request: Request, thread_id: RowId, clerk: SignedIn) -> Response:
    """One thread: its timeline and what can be done about it."""
    services = services_of(request)
    try:
        thread = services.inbox.thread(thread_id, tenant=clerk.tenant)
        about = services.inbox.context(thread_id, tenant=clerk.tenant)
    except NotFoundError:
        return not_found(request, clerk, f"thread {thread_id}")
    holds = [
        h for h in services.desk.holds(tenant=clerk.tenant) if h["customer"] == about["customer"]
    ]
    # The tenant's users who can sign in, as the assignee's choices (the service refuses others).
    users = [
        (u.email, f"{u.name} ({u.email})" if u.name else u.email)
        for u in services.accounts.users(tenant_id=clerk.tenant_id)
        if u.disabled_at is None
    ]
    # Each email of the thread (to resend any), and since when, why and by whom a contact is
    # blocked (services/customers.py).
    emails = services.customers.thread_emails(thread_id, tenant=clerk.tenant)
    addresses = [c["email"] for c in about["contacts"]]
    blocks = services.customers.blocks(addresses, tenant=clerk.tenant)
    context = {
        "thread": thread,
        "about": about,
        "emails": emails,
        "blocks": blocks,
        "holds": holds,
        "users": users,
        "hold_reasons": HOLD_REASONS,
        "bounced": any(e["type"] == "bounce" for e in thread["timeline"]),
        "queries": query_desk.thread_queries(services, thread_id, tenant=clerk.tenant),
        "back": thread_url(thread_id),
    }
    return render(request, clerk, "thread.html", context)


def _act(thread_id: int, done: str, action: Callable[[], object]) -> RedirectResponse:
    """Run one services call for a thread's form; back to the thread with how it went.
    NotFoundError (another tenant's thread) goes up to the route, which answers 404."""
    try:
        action()
    except NotFoundError:
        raise
    except MailerError as exc:
        return redirect_back(thread_url(thread_id), "error", str(exc))
    return redirect_back(thread_url(thread_id), "ok", done)


@router.post("/inbox/threads/{thread_id}/assign")
def assign(request: Request, thread_id: RowId, clerk: Checked, assignee: Text = "") -> Response:
    """Give the thread to a clerk (empty: to nobody)."""
    services = services_of(request)
    who = assignee.strip()
    try:
        return _act(
            thread_id,
            f"assigned to {who}" if who else "unassigned",
            lambda: services.inbox.update(thread_id, tenant=clerk.tenant, assignee=who),
        )
    except NotFoundError:
        return not_found(request, clerk, f"thread {thread_id}")


@router.post("/inbox/threads/{thread_id}/status")
def set_status(
    request: Request, thread_id: RowId, clerk: Checked, status: Annotated[str, Form()]
) -> Response:
    """Resolve or reopen the thread."""
    services = services_of(request)
    if status not in ("open", "resolved"):
        return redirect_back(thread_url(thread_id), "error", "status is open or resolved")
    wanted = ThreadStatus(status)
    try:
        return _act(
            thread_id,
            "resolved" if wanted is ThreadStatus.RESOLVED else "reopened",
            lambda: services.inbox.update(thread_id, tenant=clerk.tenant, status=wanted),
        )
    except NotFoundError:
        return not_found(request, clerk, f"thread {thread_id}")


@router.post("/inbox/threads/{thread_id}/note")
def note(request: Request, thread_id: RowId, clerk: Checked, text: Text) -> Response:
    """Leave a note on the thread."""
    services = services_of(request)
    if not text.strip():
        return redirect_back(thread_url(thread_id), "error", "the note is empty")
    try:
        return _act(
            thread_id,
            "note added",
            lambda: services.inbox.note(
                thread_id, text.strip(), tenant=clerk.tenant, author=clerk.email
            ),
        )
    except NotFoundError:
        return not_found(request, clerk, f"thread {thread_id}")


@router.post("/inbox/threads/{thread_id}/contact")
def fix_contact(
    request: Request,
    thread_id: RowId,
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
            lambda: services.inbox.fix_contact(
                thread_id, tenant=clerk.tenant, old=old, new=new, by=clerk.email
            ),
        )
    except NotFoundError:
        return not_found(request, clerk, f"thread {thread_id}")


@router.post("/inbox/threads/{thread_id}/suppress")
def suppress_unverified(
    request: Request,
    thread_id: int,
    clerk: Checked,
    address: Annotated[str, Form(max_length=320)],
) -> Response:
    """The one click on an unverified bounce or an open bounce review: block the address it
    names, as this clerk."""
    services = services_of(request)
    try:
        return _act(
            thread_id,
            f"{address.strip()} suppressed",
            lambda: services.inbox.suppress_unverified(
                thread_id, address, tenant=clerk.tenant, by=clerk.email
            ),
        )
    except NotFoundError:
        return not_found(request, clerk, f"thread {thread_id}")


@router.post("/inbox/threads/{thread_id}/dismiss")
def dismiss_review(
    request: Request,
    thread_id: int,
    clerk: Checked,
    address: Annotated[str, Form(max_length=320)],
) -> Response:
    """The clerk judges a bounce review's hard verdict wrong: the address stays in use."""
    services = services_of(request)
    try:
        return _act(
            thread_id,
            f"review of {address.strip()} dismissed",
            lambda: services.inbox.dismiss_review(
                thread_id, address, tenant=clerk.tenant, by=clerk.email
            ),
        )
    except NotFoundError:
        return not_found(request, clerk, f"thread {thread_id}")


@router.post("/inbox/threads/{thread_id}/proposals/{proposal_id}/accept")
def accept_proposal(
    request: Request, thread_id: RowId, proposal_id: RowId, clerk: Checked
) -> Response:
    """The clerk's one click on what a customer's reply proposes (hold, task, contact)."""
    services = services_of(request)
    try:
        done = services.inbox.accept(
            thread_id, tenant=clerk.tenant, by=clerk.email, proposal=proposal_id
        )
    except NotFoundError:
        return not_found(request, clerk, f"thread {thread_id}")
    except MailerError as exc:
        return redirect_back(thread_url(thread_id), "error", str(exc))
    return redirect_back(thread_url(thread_id), "ok", done)


@router.post("/inbox/threads/{thread_id}/resend")
async def resend(request: Request, thread_id: RowId, clerk: Checked) -> Response:
    """Send the bounced email again to the customer's contacts as they are now."""
    services = services_of(request)
    try:
        message, addresses = await services.inbox.resend(
            thread_id, tenant=clerk.tenant, by=clerk.email
        )
    except NotFoundError:
        return not_found(request, clerk, f"thread {thread_id}")
    except MailerError as exc:
        return redirect_back(thread_url(thread_id), "error", str(exc))
    return redirect_back(
        thread_url(thread_id), *_outcome(message, "resent to " + ", ".join(addresses))
    )


def _outcome(message: Message, done: str) -> tuple[str, str]:
    """How a send by hand went, in the clerk's words."""
    if message.status is MessageStatus.SENT:
        return "ok", done
    why = message.skip_reason or message.last_error or ""
    return "error", f"{done}: {message.status.value}{': ' + why if why else ''}"


@router.post("/inbox/threads/{thread_id}/send")
async def send_now(
    request: Request, thread_id: RowId, clerk: Checked, what: Annotated[str, Form()]
) -> Response:
    """A reminder of the thread's invoice, or a statement of its customer, now."""
    services = services_of(request)
    url = thread_url(thread_id)
    try:
        about = services.inbox.context(thread_id, tenant=clerk.tenant)
        if what == "reminder" and about["invoice"] is not None:
            kind = about["invoice"]["reminder_kind"]
            message = await services.sending.send_invoice(
                about["invoice"]["number"], kind=kind, tenant=clerk.tenant
            )
            said = words(request, clerk).kind(kind)
            return redirect_back(url, *_outcome(message, f"{said} sent"))
        if what == "statement" and about["customer"] is not None:
            messages = await services.sending.send_statement(about["customer"], tenant=clerk.tenant)
            said = words(request, clerk).kind(Kind.STATEMENT)
            outcomes = [_outcome(m, f"{said} sent") for m in messages]
            failed = [text for level, text in outcomes if level == "error"]
            return (
                redirect_back(url, "error", "; ".join(failed))
                if failed
                else redirect_back(url, *outcomes[0])
            )
    except NotFoundError:
        return not_found(request, clerk, f"thread {thread_id}")
    except MailerError as exc:
        return redirect_back(url, "error", str(exc))
    return redirect_back(url, "error", "nothing to send for this thread")


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
    thread_id: RowId,
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
        about = services.inbox.context(thread_id, tenant=clerk.tenant)
        number = about["invoice"]["number"] if about["invoice"] else None
        if scope == "invoice" and number is None:
            raise MailerError("this thread is about no invoice: hold the customer")
        services.desk.place_hold(
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
        return not_found(request, clerk, f"thread {thread_id}")


@router.post("/inbox/holds/{hold_id}/lift")
def lift(
    request: Request, hold_id: RowId, clerk: Checked, back: Annotated[str, Form()] = ""
) -> Response:
    """End a hold now; chasing resumes at the next pass."""
    services = services_of(request)
    try:
        services.desk.lift_hold(hold_id, tenant=clerk.tenant)
    except NotFoundError:
        return not_found(request, clerk, f"hold {hold_id}")
    return redirect_back(auth.local_path(back, "/inbox/holds"), "ok", f"hold {hold_id} lifted")
