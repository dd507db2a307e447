"""The JSON API for ERPs (``/api/v1``): upserts, holds, sends, and reads, per tenant by API key.

Every upsert is the file import (``services.ledger.import_into``, through
``api_service.upsert``) of a one-record document, so the API and ``dunmail import`` share one
validation: the body is first checked by the same pydantic
wire models (``mailer.ledger.record``; FastAPI's 422 ``detail[].loc`` names the field), then by the
ledger, whose refusals come back as 422 ``{"errors": [{"loc": "invoices[0].lines[1].unit_price",
"msg": ...}]}``. Every POST honours ``Idempotency-Key`` (see ``dunmail/web/idempotency.py`` for
when the answer is kept in the work's own transaction). Everything is scoped to the key's
tenant: another tenant's message, thread or hold is a 404, as if it did not exist.

Bodies: the key is checked before the body is read (``apikeys.ApiRoute``), and the size is
bounded while it is read (``limits.BodyLimit``): the upserts (:data:`LARGE_BODY_PATHS`) take
up to ``web.max_body_bytes``, every other route ``web.max_form_bytes``. The upserts parse,
validate and import their body themselves, in a worker thread (``Call.in_thread``, one large
body at a time); FastAPI would parse and validate it on the event loop before the route runs.
Their body models are added to the OpenAPI document by :func:`document_bodies`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from dunmail.web import api_service
from dunmail.web.apikeys import ERRORS, Api, ApiRoute, Call
from dunmail.web.deps import RowId
from dunmail.web.idempotency import Answer
from mailer.clock import as_utc
from mailer.content.kinds import PAYMENT_REQUESTS, Kind
from mailer.errors import NotFoundError
from mailer.ledger.models import HoldReason
from mailer.ledger.record import CreditNoteRecord, CustomerRecord, InvoiceRecord, PaymentRecord

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1", tags=["api"], route_class=ApiRoute)

# The upserts, whose body is a whole record (an invoice with all its lines): they alone may
# send up to web.max_body_bytes. Every other route of the app takes web.max_form_bytes.
UPSERTS: dict[str, type[BaseModel]] = {
    "/customers": CustomerRecord,
    "/invoices": InvoiceRecord,
    "/payments": PaymentRecord,
    "/credit-notes": CreditNoteRecord,
}
LARGE_BODY_PATHS = frozenset(f"{router.prefix}{path}" for path in UPSERTS)


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI requestBody of a route that reads its body itself (see the module doc)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def document_bodies(openapi: dict[str, Any]) -> dict[str, Any]:
    """Add the upserts' body models (and the models they use) to the OpenAPI components."""
    _, schemas = models_json_schema(
        [(model, "validation") for model in UPSERTS.values()],
        ref_template="#/components/schemas/{model}",
    )
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in schemas.get("$defs", {}).items():
        components.setdefault(name, schema)
    return openapi


def _respond(answer: Answer) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
    return JSONResponse(answer.body, status_code=answer.status_code, headers=headers)


class UpsertResult(BaseModel):
    """What an upsert did: ``outcome`` is created, updated or unchanged."""

    outcome: str
    events: int = Field(description="emails the ledger asked for (receipts, notices)")
    id: str
    invoice: dict[str, Any] | None = None


async def _upsert(call: Call, section: str, model: type[BaseModel]) -> JSONResponse:
    """Validate the body as ``model`` and import it, in a worker thread (``Call.in_thread``)."""

    def work() -> Answer:
        body = call.record(model)
        return api_service.upsert(
            call.services,
            tenant_id=call.tenant_id,
            section=section,
            record=call.document,
            record_id=getattr(body, "id", None),
            key=call.idempotency_key,
            digest=call.digest,
        )

    return _respond(await call.in_thread(work))


@router.post(
    "/customers",
    response_model=UpsertResult,
    responses=ERRORS,
    openapi_extra=_body(CustomerRecord),
)
async def upsert_customer(call: Api) -> JSONResponse:
    """Create or update a customer by its ERP id; a listed ``contacts`` array replaces its
    contacts (omit it to leave them alone)."""
    return await _upsert(call, "customers", CustomerRecord)


@router.post(
    "/invoices", response_model=UpsertResult, responses=ERRORS, openapi_extra=_body(InvoiceRecord)
)
async def upsert_invoice(call: Api) -> JSONResponse:
    """Create or update an invoice with its lines. A change of number, customer, currency,
    dates or lines raises its ``version``; a status change alone does not."""

    return await _upsert(call, "invoices", InvoiceRecord)


@router.post(
    "/payments", response_model=UpsertResult, responses=ERRORS, openapi_extra=_body(PaymentRecord)
)
async def upsert_payment(call: Api) -> JSONResponse:
    """Record a payment and its allocations to invoices (a new one queues a receipt)."""
    return await _upsert(call, "payments", PaymentRecord)


@router.post(
    "/credit-notes",
    response_model=UpsertResult,
    responses=ERRORS,
    openapi_extra=_body(CreditNoteRecord),
)
async def upsert_credit_note(call: Api) -> JSONResponse:
    """Create or update a credit note (any change raises its version)."""
    return await _upsert(call, "credit_notes", CreditNoteRecord)


@router.get("/invoices/{number}", responses=ERRORS)
def get_invoice(number: str, call: Api) -> dict[str, Any]:
    """One of the tenant's invoices: version, status, totals and balance in minor units."""
    try:
        return api_service.invoice(call.services, tenant_id=call.tenant_id, number=number)
    except NotFoundError as exc:
        raise HTTPException(404, detail=str(exc)) from None


# -- actions: reserve the key, do the work, keep the answer --------------------------------------


async def _action(call: Call, work: Callable[[], Awaitable[Answer]]) -> JSONResponse:
    """Run ``work`` once per Idempotency-Key; MailerErrors become 404 or 422 answers."""
    answer = await api_service.once(
        call.services,
        tenant_id=call.tenant_id,
        key=call.idempotency_key,
        digest=call.digest,
        work=work,
    )
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
        cancelled = call.services.ledger.mark_sent(number, tenant=call.slug)
        return {"invoice": number, "cancelled": cancelled}

    return await _action(call, _sync(work))


class SendRequest(BaseModel):
    """Which invoice email to send now."""

    model_config = ConfigDict(extra="forbid")
    kind: str = Field(
        default=Kind.NEW_INVOICE.value, description=f"one of {', '.join(PAYMENT_REQUESTS)}"
    )


@router.post("/invoices/{number}/send", responses=ERRORS)
async def send_invoice(number: str, body: SendRequest, call: Api) -> JSONResponse:
    """A manual send, delivered now (idempotent like ``dunmail send``: the same email is one
    message); answers with the message and its per-recipient results."""

    async def work() -> Answer:
        message = await call.services.sending.send_invoice(number, kind=body.kind, tenant=call.slug)
        return Answer(
            200,
            api_service.message(
                call.services, tenant_id=call.tenant_id, uid=message.uid, attempts=True
            ),
        )

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
        hold = call.services.desk.place_hold(
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
async def lift_hold(hold_id: RowId, call: Api) -> JSONResponse:
    """End a hold now; chasing resumes at the next pass."""

    def work() -> dict[str, Any]:
        call.services.desk.lift_hold(hold_id, tenant=call.slug)
        return _hold(call, hold_id)

    return await _action(call, _sync(work))


@router.delete("/holds/{hold_id}", responses=ERRORS)
async def delete_hold(hold_id: RowId, call: Api) -> JSONResponse:
    """The same as ``POST /holds/{id}/lift``."""
    return await lift_hold(hold_id, call)


@router.get("/holds", responses=ERRORS)
def list_holds(call: Api, everything: bool = Query(False, alias="all")) -> list[dict[str, Any]]:
    """The tenant's active holds (``?all=true``: lifted and ended ones too), newest first."""
    return call.services.desk.holds(tenant=call.slug, active_only=not everything)


def _hold(call: Call, hold_id: int) -> dict[str, Any]:
    for row in call.services.desk.holds(tenant=call.slug, active_only=False):
        if row["id"] == hold_id:
            return row
    raise NotFoundError(f"no hold {hold_id}")
