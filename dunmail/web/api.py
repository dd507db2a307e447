"""The JSON API for ERPs (``/api/v1``): upserts, holds, sends, and reads, per tenant by API key.

Every upsert is the file import (``Services.import_into``) of a one-record document, so the API
and ``dunmail import`` share one validation: the body is first checked by the same pydantic
wire models (``mailer.record``; FastAPI's 422 ``detail[].loc`` names the field), then by the
ledger, whose refusals come back as 422 ``{"errors": [{"loc": "invoices[0].lines[1].unit_price",
"msg": ...}]}``. Every POST honours ``Idempotency-Key`` (see ``dunmail/web/idempotency.py`` for
when the answer is kept in the work's own transaction). Everything is scoped to the key's
tenant: another tenant's message, thread or hold is a 404, as if it did not exist.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from dunmail.app import INVOICE_KINDS, Services
from dunmail.web import idempotency
from dunmail.web.apikeys import authenticate
from dunmail.web.deps import services_of
from dunmail.web.idempotency import Answer, IdempotencyError
from mailer.clock import as_utc
from mailer.db import session_scope
from mailer.errors import MailerError, NotFoundError
from mailer.ledger import ImportReport, find_invoice
from mailer.models import (
    Customer,
    DeliveryAttempt,
    HoldReason,
    Invoice,
    Message,
    MessageRecipient,
    ThreadStatus,
)
from mailer.record import CreditNoteRecord, CustomerRecord, InvoiceRecord, PaymentRecord

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["api"])
bearer = HTTPBearer(auto_error=False, description="an API key: `dunmail apikey create NAME`")

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, unknown or revoked API key"},
    404: {"description": "no such record for this tenant"},
    409: {"description": "the same Idempotency-Key is still being worked on"},
    422: {
        "description": "invalid request (``detail`` or ``errors`` name the field), or an "
        "Idempotency-Key reused with a different request"
    },
}


@dataclass(frozen=True)
class Call:
    """An authenticated API call: the tenant, the key's prefix, and its Idempotency-Key."""

    services: Services
    tenant_id: int
    slug: str
    key_prefix: str
    idempotency_key: str | None
    digest: str
    body: bytes

    @property
    def by(self) -> str:
        """Who did it, as holds and notes record it."""
        return f"api:{self.key_prefix}"


async def api_call(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=200,
            description="POST only: the same key and request get the stored answer again",
        ),
    ] = None,
) -> Call:
    """Authenticate ``Authorization: Bearer dm_...`` (401 otherwise; the key is never logged)."""
    services = services_of(request)
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing API key: send Authorization: Bearer <key>")
    row = authenticate(services.engine, credentials.credentials, now=services.clock.now())
    if row is None:
        raise _unauthorized("invalid or revoked API key")
    body = await request.body()
    return Call(
        services=services,
        tenant_id=row.tenant_id,
        slug=services.tenant_slug(row.tenant_id),
        key_prefix=row.prefix,
        idempotency_key=idempotency_key,
        digest=idempotency.request_hash(request.method, request.url.path, body),
        body=body,
    )


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


Api = Annotated[Call, Depends(api_call)]


def _respond(answer: Answer) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return JSONResponse(answer.body, status_code=answer.status_code, headers=headers)


def _refused(exc: IdempotencyError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


# -- upserts: one-record import documents --------------------------------------------------------


def _import(
    call: Call, section: str, describe: Callable[[Session, ImportReport], dict[str, Any]]
) -> JSONResponse:
    """Import the body as ``{section: [body]}`` and store the answer in the same transaction."""
    services = call.services
    document = {section: [json.loads(call.body)]}
    try:
        with session_scope(services.engine) as session:
            if call.idempotency_key is not None:
                found = idempotency.replay(
                    session, tenant_id=call.tenant_id, key=call.idempotency_key, digest=call.digest
                )
                if found is not None:
                    return _respond(found)
            report = services.import_into(session, document, tenant_id=call.tenant_id)
            answer = _import_answer(session, report, section, describe)
            if call.idempotency_key is not None:
                idempotency.store_answer(
                    session,
                    tenant_id=call.tenant_id,
                    key=call.idempotency_key,
                    digest=call.digest,
                    answer=answer,
                    now=services.clock.now(),
                )
    except IdempotencyError as exc:
        return _refused(exc)
    except IntegrityError:
        # A twin request with the same key committed first; our import rolled back with this.
        if call.idempotency_key is None:
            raise
        try:
            answer = idempotency.stored(
                services.engine,
                tenant_id=call.tenant_id,
                key=call.idempotency_key,
                digest=call.digest,
            )
        except IdempotencyError as exc:
            return _refused(exc)
    return _respond(answer)


def _import_answer(
    session: Session,
    report: ImportReport,
    section: str,
    describe: Callable[[Session, ImportReport], dict[str, Any]],
) -> Answer:
    if report.errors:
        errors = [{"loc": e.where, "msg": e.reason} for e in report.errors]
        return Answer(422, {"detail": "the record was refused", "errors": errors})
    counts = report.counts()[section]
    outcome = next(
        (name for name in ("created", "updated", "unchanged") if getattr(counts, name)),
        "unchanged",
    )
    return Answer(200, {"outcome": outcome, "events": report.events, **describe(session, report)})


def _record(body: BaseModel) -> Callable[[Session, ImportReport], dict[str, Any]]:
    def describe(session: Session, report: ImportReport) -> dict[str, Any]:
        return {"id": getattr(body, "id", None)}

    return describe


class UpsertResult(BaseModel):
    """What an upsert did: ``outcome`` is created, updated or unchanged."""

    outcome: str
    events: int = Field(description="emails the ledger asked for (receipts, notices)")
    id: str
    invoice: dict[str, Any] | None = None


@router.post("/customers", response_model=UpsertResult, responses=ERRORS)
def upsert_customer(body: CustomerRecord, call: Api) -> JSONResponse:
    """Create or update a customer by its ERP id; a listed ``contacts`` array replaces its
    contacts (omit it to leave them alone)."""
    return _import(call, "customers", _record(body))


@router.post("/invoices", response_model=UpsertResult, responses=ERRORS)
def upsert_invoice(body: InvoiceRecord, call: Api) -> JSONResponse:
    """Create or update an invoice with its lines. A change of number, customer, currency,
    dates or lines raises its ``version``; a status change alone does not."""

    def describe(session: Session, report: ImportReport) -> dict[str, Any]:
        invoice = session.exec(
            select(Invoice).where(
                Invoice.tenant_id == call.tenant_id, Invoice.external_id == body.id
            )
        ).one()
        return {"id": body.id, "invoice": _invoice(invoice)}

    return _import(call, "invoices", describe)


@router.post("/payments", response_model=UpsertResult, responses=ERRORS)
def upsert_payment(body: PaymentRecord, call: Api) -> JSONResponse:
    """Record a payment and its allocations to invoices (a new one queues a receipt)."""
    return _import(call, "payments", _record(body))


@router.post("/credit-notes", response_model=UpsertResult, responses=ERRORS)
def upsert_credit_note(body: CreditNoteRecord, call: Api) -> JSONResponse:
    """Create or update a credit note (any change raises its version)."""
    return _import(call, "credit_notes", _record(body))


@router.get("/invoices/{number}", responses=ERRORS)
def get_invoice(number: str, call: Api) -> dict[str, Any]:
    """One of the tenant's invoices: version, status, totals and balance in minor units."""
    with Session(call.services.engine) as session:
        try:
            invoice = find_invoice(session, tenant_id=call.tenant_id, number=number)
        except NotFoundError as exc:
            raise HTTPException(404, detail=str(exc)) from None
        return _invoice(invoice)


def _invoice(invoice: Invoice) -> dict[str, Any]:
    return {
        "id": invoice.external_id,
        "number": invoice.number,
        "version": invoice.version,
        "status": invoice.status.value,
        "currency": invoice.currency,
        "total_minor": invoice.total_minor,
        "balance_minor": invoice.balance_minor,
        "issued_at": invoice.issued_at.isoformat(),
        "due_at": invoice.due_at.isoformat(),
        "sent_at": invoice.sent_at.isoformat() if invoice.sent_at else None,
    }


# -- actions: reserve the key, do the work, keep the answer --------------------------------------


async def _action(call: Call, work: Callable[[], Awaitable[Answer]]) -> JSONResponse:
    """Run ``work`` once per Idempotency-Key; MailerErrors become 404 or 422 answers."""
    services = call.services
    key = call.idempotency_key
    if key is not None:
        try:
            found = idempotency.reserve(
                services.engine,
                tenant_id=call.tenant_id,
                key=key,
                digest=call.digest,
                now=services.clock.now(),
            )
        except IdempotencyError as exc:
            return _refused(exc)
        if found is not None:
            return _respond(found)
    try:
        try:
            answer = await work()
        except NotFoundError as exc:
            answer = Answer(404, {"detail": str(exc)})
        except MailerError as exc:
            answer = Answer(422, {"detail": str(exc)})
    except BaseException:
        if key is not None:
            idempotency.release(services.engine, tenant_id=call.tenant_id, key=key)
        raise
    if key is not None:
        idempotency.complete(services.engine, tenant_id=call.tenant_id, key=key, answer=answer)
    return _respond(answer)


def _sync(fn: Callable[[], Any]) -> Callable[[], Awaitable[Answer]]:
    """Run a blocking service call in a thread (the database is synchronous)."""
    import asyncio

    async def run() -> Answer:
        return Answer(200, jsonable_encoder(await asyncio.to_thread(fn)))

    return run


@router.post("/invoices/{number}/mark-sent", responses=ERRORS)
async def mark_sent(number: str, call: Api) -> JSONResponse:
    """The invoice went out another way: no automatic new-invoice email; queued ones are
    cancelled (their count is returned)."""

    def work() -> dict[str, Any]:
        cancelled = call.services.mark_sent(number, tenant=call.slug)
        return {"invoice": number, "cancelled": cancelled}

    return await _action(call, _sync(work))


class SendRequest(BaseModel):
    """Which invoice email to send now."""

    model_config = ConfigDict(extra="forbid")
    kind: str = Field(default="new_invoice", description=f"one of {', '.join(INVOICE_KINDS)}")


@router.post("/invoices/{number}/send", responses=ERRORS)
async def send_invoice(number: str, body: SendRequest, call: Api) -> JSONResponse:
    """A manual send, delivered now (idempotent like ``dunmail send``: the same email is one
    message); answers with the message and its per-recipient results."""

    async def work() -> Answer:
        message = await call.services.send_invoice(number, kind=body.kind, tenant=call.slug)
        return Answer(200, _message_json(call, message.uid, attempts=True))

    return await _action(call, work)


class HoldRequest(BaseModel):
    """A pause of chasing: name one ``invoice`` (number) or one ``customer`` (ERP id)."""

    model_config = ConfigDict(extra="forbid")
    invoice: str | None = None
    customer: str | None = None
    reason: HoldReason = HoldReason.MANUAL
    until: datetime | None = Field(default=None, description="ISO 8601; UTC if no offset")
    note: str | None = Field(default=None, max_length=1000)


@router.post("/holds", responses=ERRORS)
async def place_hold(body: HoldRequest, call: Api) -> JSONResponse:
    """Pause reminders for an invoice or a customer, until ``until`` or until lifted."""

    def work() -> dict[str, Any]:
        hold = call.services.place_hold(
            tenant=call.slug,
            customer=body.customer,
            invoice=body.invoice,
            reason=body.reason,
            until=as_utc(body.until) if body.until else None,
            note=body.note,
            by=call.by,
        )
        return _hold(call, hold.id or 0)

    return await _action(call, _sync(work))


@router.post("/holds/{hold_id}/lift", responses=ERRORS)
async def lift_hold(hold_id: int, call: Api) -> JSONResponse:
    """End a hold now; chasing resumes at the next pass."""

    def work() -> dict[str, Any]:
        call.services.lift_hold(hold_id, tenant=call.slug)
        return _hold(call, hold_id)

    return await _action(call, _sync(work))


@router.delete("/holds/{hold_id}", responses=ERRORS)
async def delete_hold(hold_id: int, call: Api) -> JSONResponse:
    """The same as ``POST /holds/{id}/lift``."""
    return await lift_hold(hold_id, call)


@router.get("/holds", responses=ERRORS)
def list_holds(call: Api, everything: bool = Query(False, alias="all")) -> list[dict[str, Any]]:
    """The tenant's active holds (``?all=true``: lifted and ended ones too), newest first."""
    return call.services.holds(tenant=call.slug, active_only=not everything)


def _hold(call: Call, hold_id: int) -> dict[str, Any]:
    for row in call.services.holds(tenant=call.slug, active_only=False):
        if row["id"] == hold_id:
            return row
    raise NotFoundError(f"no hold {hold_id}")


# -- reads ---------------------------------------------------------------------------------------


@router.get("/messages", responses=ERRORS)
def list_messages(
    call: Api,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    status: str | None = None,
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
        return _message_json(call, uid, attempts=True)
    except NotFoundError as exc:
        raise HTTPException(404, detail=str(exc)) from None


def _message_json(call: Call, uid: str, *, attempts: bool) -> dict[str, Any]:
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
def list_threads(call: Api, status: ThreadStatus | None = None) -> list[dict[str, Any]]:
    """The tenant's AR inbox threads (bounces, replies), newest activity first."""
    result: list[dict[str, Any]] = jsonable_encoder(
        call.services.inbox(tenant=call.slug, status=status)
    )
    return result


@router.get("/threads/{thread_id}", responses=ERRORS)
def get_thread(thread_id: int, call: Api) -> dict[str, Any]:
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
