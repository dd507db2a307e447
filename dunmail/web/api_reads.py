"""The JSON API's reads (``/api/v1``): the tenant's customers, invoices, payments and credit
notes, messages with per-recipient results and attempts, AR inbox threads, suppressions.
Scoped to the API key's tenant like every route: another tenant's record is a 404.

Lists are keyset pages: ``limit`` (at most :data:`MAX_LIMIT`) rows and a ``next_cursor``,
opaque, to pass back as ``cursor`` for the next page (``null`` on the last page); a cursor
this API did not give for that list is a 422."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder

from dunmail.web import api_service
from dunmail.web.api_service import CursorError
from dunmail.web.apikeys import ERRORS, Api
from dunmail.web.deps import MAX_ROW_ID, RowId
from mailer.errors import MailerError, NotFoundError
from mailer.inbox_models import ThreadStatus
from mailer.ledger.models import InvoiceStatus
from mailer.outbound.models import MessageStatus

router = APIRouter(prefix="/api/v1", tags=["api"])

MAX_LIMIT = 500
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"rows per page, at most {MAX_LIMIT}")]
Cursor = Annotated[
    str | None,
    Query(
        max_length=200,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="the previous page's next_cursor (omit for the first page)",
    ),
]
Key = Annotated[str, PathParam(min_length=1, max_length=100)]


def _bad_cursor(exc: CursorError) -> HTTPException:
    """A 422 shaped as FastAPI's own: ``detail[].loc`` names the parameter."""
    detail = [{"type": "value_error", "loc": ["query", "cursor"], "msg": str(exc)}]
    return HTTPException(422, detail=detail)


def _page(call: Api, kind: str, cursor: str | None, limit: int, **filters: Any) -> dict[str, Any]:
    try:
        return api_service.ledger_page(
            call.services, kind, tenant_id=call.tenant_id, cursor=cursor, limit=limit, **filters
        )
    except CursorError as exc:
        raise _bad_cursor(exc) from None


def _record(call: Api, kind: str, key: str) -> dict[str, Any]:
    try:
        return api_service.ledger_record(call.services, kind, tenant_id=call.tenant_id, key=key)
    except NotFoundError as exc:
        raise HTTPException(404, detail=str(exc)) from None


# -- the ledger ----------------------------------------------------------------------------------


@router.get("/customers", responses=ERRORS)
def list_customers(call: Api, limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
    """The tenant's customers, oldest first, a page at a time."""
    return _page(call, "customers", cursor, limit)


@router.get("/customers/{customer_id}", responses=ERRORS)
def get_customer(customer_id: Key, call: Api) -> dict[str, Any]:
    """One customer by its ERP id, with its contacts."""
    return _record(call, "customers", customer_id)


@router.get("/invoices", responses=ERRORS)
def list_invoices(
    call: Api,
    limit: Limit = 50,
    cursor: Cursor = None,
    status: InvoiceStatus | None = None,
    customer: Annotated[str | None, Query(max_length=100, description="ERP id")] = None,
) -> dict[str, Any]:
    """The tenant's invoices, oldest first, of one status or customer if asked."""
    return _page(call, "invoices", cursor, limit, status=status, customer=customer)


@router.get("/payments", responses=ERRORS)
def list_payments(call: Api, limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
    """The tenant's payments, oldest first."""
    return _page(call, "payments", cursor, limit)


@router.get("/payments/{payment_id}", responses=ERRORS)
def get_payment(payment_id: Key, call: Api) -> dict[str, Any]:
    """One payment by its ERP id, with its allocations to invoices."""
    return _record(call, "payments", payment_id)


@router.get("/credit-notes", responses=ERRORS)
def list_credit_notes(call: Api, limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
    """The tenant's credit notes, oldest first."""
    return _page(call, "credit-notes", cursor, limit)


@router.get("/credit-notes/{number}", responses=ERRORS)
def get_credit_note(number: Key, call: Api) -> dict[str, Any]:
    """One credit note by its number, with its lines and allocations."""
    return _record(call, "credit-notes", number)


# -- mail ----------------------------------------------------------------------------------------


@router.get("/messages", responses=ERRORS)
def list_messages(
    call: Api,
    limit: Limit = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ROW_ID)] = 0,
    status: MessageStatus | None = None,  # validated: an unknown state is a 422, not a 500
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The tenant's emails, newest first, with status and per-recipient results; pass
    ``next_cursor`` back as ``cursor`` for the next page (``offset`` still works)."""
    try:
        return api_service.messages(
            call.services,
            tenant_id=call.tenant_id,
            status=status,
            limit=limit,
            offset=offset,
            cursor=cursor,
        )
    except CursorError as exc:
        raise _bad_cursor(exc) from None


@router.get("/messages/{uid}", responses=ERRORS)
def get_message(uid: str, call: Api) -> dict[str, Any]:
    """One email with its recipients and delivery attempts."""
    try:
        return api_service.message(call.services, tenant_id=call.tenant_id, uid=uid, attempts=True)
    except NotFoundError as exc:
        raise HTTPException(404, detail=str(exc)) from None


@router.get("/threads", responses=ERRORS)
def list_threads(
    call: Api,
    status: ThreadStatus | None = None,
    only: Literal["bounced", "replied", "fix_contact", "review"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[str | None, Query(max_length=100)] = None,
) -> list[dict[str, Any]]:
    """The tenant's AR inbox threads (bounces, replies), newest activity first, ``limit`` at
    a time: pass the last row's ``cursor`` as ``before`` for the next page."""
    try:
        rows = call.services.inbox.threads(
            tenant=call.slug, status=status, only=only, limit=limit, before=before
        )
    except MailerError as exc:
        raise HTTPException(400, detail=str(exc)) from None
    result: list[dict[str, Any]] = jsonable_encoder(rows)
    return result


@router.get("/threads/{thread_id}", responses=ERRORS)
def get_thread(thread_id: RowId, call: Api) -> dict[str, Any]:
    """One thread with its timeline: emails, attempts, bounces, replies, clicks, notes."""
    try:
        thread = call.services.inbox.thread(thread_id, tenant=call.slug)
    except NotFoundError as exc:
        raise HTTPException(404, detail=str(exc)) from None
    result: dict[str, Any] = jsonable_encoder(thread)
    return result


@router.get("/suppressions", responses=ERRORS)
def list_suppressions(
    call: Api, everything: bool = Query(False, alias="all")
) -> list[dict[str, Any]]:
    """The tenant's blocked addresses (``?all=true``: lifted and expired ones too)."""
    return call.services.suppressions.blocked(tenant=call.slug, everything=everything)
