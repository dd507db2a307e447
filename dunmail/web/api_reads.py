"""The JSON API's reads (``/api/v1``): the tenant's messages with per-recipient results and
attempts, AR inbox threads, suppressions. Scoped to the API key's tenant like every route."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.encoders import jsonable_encoder
from sqlmodel import Session, col, func, select

from dunmail.web.apikeys import ERRORS, Api, Call
from dunmail.web.deps import MAX_ROW_ID, RowId
from mailer.errors import MailerError, NotFoundError
from mailer.inbox_models import ThreadStatus
from mailer.ledger.models import Customer
from mailer.outbound.models import DeliveryAttempt, Message, MessageRecipient, MessageStatus

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
    with Session(call.services.engine) as session:
        query = select(Message).where(Message.tenant_id == call.tenant_id)
        if status is not None:
            query = query.where(col(Message.status) == status)
        total = session.exec(select(func.count()).select_from(query.subquery())).one()
        messages = session.exec(
            query.order_by(col(Message.id).desc()).limit(limit).offset(offset)
        ).all()
        recipients = _recipients(session, [m.id or 0 for m in messages])
        items = [_message(session, m, recipients.get(m.id or 0, [])) for m in messages]
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/messages/{uid}", responses=ERRORS)
def get_message(uid: str, call: Api) -> dict[str, Any]:
    """One email with its recipients and delivery attempts."""
    try:
        return message_json(call, uid, attempts=True)
    except NotFoundError as exc:
        raise HTTPException(404, detail=str(exc)) from None


def message_json(call: Call, uid: str, *, attempts: bool) -> dict[str, Any]:
    with Session(call.services.engine) as session:
        message = session.exec(
            select(Message).where(Message.uid == uid, Message.tenant_id == call.tenant_id)
        ).first()
        if message is None:
            raise NotFoundError(f"no message {uid}")
        row = _message(
            session, message, _recipients(session, [message.id or 0]).get(message.id or 0, [])
        )
        if attempts:
            row["attempt_log"] = [
                {
                    "number": a.number,
                    "started_at": a.started_at.isoformat(),
                    "finished_at": a.finished_at.isoformat(),
                    "outcome": a.outcome.value,
                    "code": a.code,
                    "response": a.response,
                    "recipients": a.recipients,
                }
                for a in session.exec(
                    select(DeliveryAttempt)
                    .where(DeliveryAttempt.message_id == message.id)
                    .order_by(col(DeliveryAttempt.number))
                ).all()
            ]
        return row


def _recipients(session: Session, ids: list[int]) -> dict[int, list[MessageRecipient]]:
    found: dict[int, list[MessageRecipient]] = {}
    rows = session.exec(
        select(MessageRecipient)
        .where(col(MessageRecipient.message_id).in_(ids))
        .order_by(col(MessageRecipient.address))
    ).all()
    for r in rows:
        found.setdefault(r.message_id, []).append(r)
    return found


def _message(session: Session, m: Message, recipients: list[MessageRecipient]) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    customer = session.get(Customer, m.customer_id) if m.customer_id else None
    invoice = m.context.get("invoice", {}) if isinstance(m.context, dict) else {}
    return {
        "uid": m.uid,
        "kind": m.kind,
        "status": m.status.value,
        "customer": customer.external_id if customer else None,
        "invoice": invoice.get("number") if isinstance(invoice, dict) else None,
        "document_version": m.document_version,
        "manual": m.manual,
        "occasion": m.occasion,
        "attempts": m.attempts,
        "created_at": iso(m.created_at),
        "next_attempt_at": iso(m.next_attempt_at),
        "finished_at": iso(m.finished_at),
        "last_error": m.last_error,
        "skip_reason": m.skip_reason,
        "recipients": [
            {"address": r.address, "status": r.status.value, "code": r.code, "response": r.response}
            for r in recipients
        ],
    }


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
        rows = call.services.inbox(
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
        thread = call.services.inbox_thread(thread_id, tenant=call.slug)
    except NotFoundError as exc:
        raise HTTPException(404, detail=str(exc)) from None
    result: dict[str, Any] = jsonable_encoder(thread)
    return result


@router.get("/suppressions", responses=ERRORS)
def list_suppressions(
    call: Api, everything: bool = Query(False, alias="all")
) -> list[dict[str, Any]]:
    """The tenant's blocked addresses (``?all=true``: lifted and expired ones too)."""
    return call.services.suppressions(tenant=call.slug, everything=everything)
