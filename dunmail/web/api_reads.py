"""The JSON API's reads (``/api/v1``): the tenant's messages with per-recipient results and
attempts, AR inbox threads, suppressions. Scoped to the API key's tenant like every route."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.encoders import jsonable_encoder

from dunmail.web import api_service
from dunmail.web.apikeys import ERRORS, Api
from dunmail.web.deps import MAX_ROW_ID, RowId
from mailer.errors import MailerError, NotFoundError
from mailer.inbox_models import ThreadStatus
from mailer.outbound.models import MessageStatus

router = APIRouter(prefix="/api/v1", tags=["api"])


# -- reads ---------------------------------------------------------------------------------------


@router.get("/messages", responses=ERRORS)
def list_messages(
    call: Api,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ROW_ID)] = 0,
    status: MessageStatus | None = None,  # validated: an unknown state is a 422, not a 500
) -> dict[str, Any]:
    """The tenant's emails, newest first, with status and per-recipient results."""
    return api_service.messages(
        call.services, tenant_id=call.tenant_id, status=status, limit=limit, offset=offset
    )


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
