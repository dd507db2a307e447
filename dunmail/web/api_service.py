"""The JSON API's work (``/api/v1``, routes in ``api.py`` and ``api_reads.py``): upserts with
their Idempotency-Key answer in the import's own transaction, actions run once per key, and the
message reads. Routes hand over what the request said and send back the :class:`Answer` or
dict they get; see ``idempotency.py`` for the two ways an answer is kept.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from dunmail.app import Services
from dunmail.web import idempotency
from dunmail.web.deps import MAX_ROW_ID
from dunmail.web.idempotency import Answer, IdempotencyError
from mailer.db import session_scope
from mailer.errors import MailerError, NotFoundError
from mailer.ledger import pages
from mailer.ledger.imports import ImportReport
from mailer.ledger.models import Customer, Invoice
from mailer.ledger.pages import invoice_json
from mailer.ledger.queries import find_invoice
from mailer.outbound.models import DeliveryAttempt, Message, MessageRecipient, MessageStatus

# -- upserts: one-record import documents --------------------------------------------------------


def upsert(
    services: Services,
    *,
    tenant_id: int,
    section: str,
    record: Any,
    record_id: str | None,
    key: str | None,
    digest: str,
) -> Answer:
    """Import ``{section: [record]}`` and keep the answer under ``key`` in the same transaction
    (a refused key is answered with its 409 or 422)."""
    try:
        with session_scope(services.engine) as session:
            if key is not None:
                found = idempotency.replay(session, tenant_id=tenant_id, key=key, digest=digest)
                if found is not None:
                    return found
            report = services.ledger.import_into(session, {section: [record]}, tenant_id=tenant_id)
            answer = _import_answer(session, report, tenant_id, section, record_id)
            if key is not None:
                idempotency.store_answer(
                    session,
                    tenant_id=tenant_id,
                    key=key,
                    digest=digest,
                    answer=answer,
                    now=services.clock.now(),
                )
    except IdempotencyError as exc:
        return _refused(exc)
    except IntegrityError:
        # A twin request with the same key committed first; our import rolled back with this.
        if key is None:
            raise
        try:
            answer = idempotency.stored(
                services.engine, tenant_id=tenant_id, key=key, digest=digest
            )
        except IdempotencyError as exc:
            return _refused(exc)
    return answer


def _refused(exc: IdempotencyError) -> Answer:
    return Answer(exc.status_code, {"detail": exc.detail})


def _import_answer(
    session: Session, report: ImportReport, tenant_id: int, section: str, record_id: str | None
) -> Answer:
    if report.errors:
        errors = [{"loc": e.where, "msg": e.reason} for e in report.errors]
        return Answer(422, {"detail": "the record was refused", "errors": errors})
    counts = report.counts()[section]
    outcome = next(
        (name for name in ("created", "updated", "unchanged") if getattr(counts, name)),
        "unchanged",
    )
    described: dict[str, Any] = {"id": record_id}
    if section == "invoices":  # the invoice as it now stands: version, status, balance
        invoice = session.exec(
            select(Invoice).where(Invoice.tenant_id == tenant_id, Invoice.external_id == record_id)
        ).one()
        described["invoice"] = invoice_json(invoice)
    return Answer(200, {"outcome": outcome, "events": report.events, **described})


def invoice(services: Services, *, tenant_id: int, number: str) -> dict[str, Any]:
    """One of the tenant's invoices (NotFoundError otherwise)."""
    with Session(services.engine) as session:
        return invoice_json(find_invoice(session, tenant_id=tenant_id, number=number))


class CursorError(MailerError):
    """A ``cursor`` this API did not give (or gave for another list)."""


def encode_cursor(kind: str, last: int | None) -> str | None:
    """The opaque cursor of the page after row ``last`` of list ``kind`` (None: no next page).

    Opaque so that clients pass it back rather than build it; not secret: every query names
    the key's tenant, so a made-up cursor reads nothing another tenant owns."""
    if last is None:
        return None
    return base64.urlsafe_b64encode(f"{kind}:{last}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str | None) -> int | None:
    """The row id a ``cursor`` of list ``kind`` stands for (CursorError if it is not one)."""
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        name, _, number = text.partition(":")
        last = int(number)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise CursorError("cursor: not a cursor this API gave") from None
    if name != kind or not 0 <= last <= MAX_ROW_ID:
        raise CursorError(f"cursor: not a cursor of {kind}") from None
    return last


PageQuery = Callable[..., pages.Page]
LISTS: dict[str, PageQuery] = {
    "customers": pages.customers_page,
    "invoices": pages.invoices_page,
    "payments": pages.payments_page,
    "credit-notes": pages.credit_notes_page,
}


def ledger_page(
    services: Services,
    kind: str,
    *,
    tenant_id: int,
    cursor: str | None,
    limit: int,
    **filters: Any,
) -> dict[str, Any]:
    """One page of the tenant's ``kind`` (a key of :data:`LISTS`) with the next page's cursor."""
    after = decode_cursor(kind, cursor)
    with Session(services.engine) as session:
        page = LISTS[kind](session, tenant_id=tenant_id, after=after, limit=limit, **filters)
    return {"items": page.items, "next_cursor": encode_cursor(kind, page.last), "limit": limit}


def ledger_record(services: Services, kind: str, *, tenant_id: int, key: str) -> dict[str, Any]:
    """One of the tenant's customers (by ERP id), payments (by ERP id) or credit notes (by
    number); NotFoundError otherwise."""
    with Session(services.engine) as session:
        if kind == "customers":
            return pages.customer(session, tenant_id=tenant_id, external_id=key)
        if kind == "payments":
            return pages.payment(session, tenant_id=tenant_id, external_id=key)
        return pages.credit_note(session, tenant_id=tenant_id, number=key)


# -- actions: reserve the key, do the work, keep the answer --------------------------------------


async def once(
    services: Services,
    *,
    tenant_id: int,
    key: str | None,
    digest: str,
    work: Callable[[], Awaitable[Answer]],
) -> Answer:
    """Run ``work`` once per ``key`` (every time without one); MailerErrors become 404 or 422
    answers, a refused key its 409 or 422."""
    if key is not None:
        try:
            found = idempotency.reserve(
                services.engine,
                tenant_id=tenant_id,
                key=key,
                digest=digest,
                now=services.clock.now(),
            )
        except IdempotencyError as exc:
            return _refused(exc)
        if found is not None:
            return found
    try:
        try:
            answer = await work()
        except NotFoundError as exc:
            answer = Answer(404, {"detail": str(exc)})
        except MailerError as exc:
            answer = Answer(422, {"detail": str(exc)})
    except BaseException:
        if key is not None:
            idempotency.release(services.engine, tenant_id=tenant_id, key=key)
        raise
    if key is not None:
        idempotency.complete(services.engine, tenant_id=tenant_id, key=key, answer=answer)
    return answer


# -- reads -----------------------------------------------------------------------------------------


def messages(
    services: Services,
    *,
    tenant_id: int,
    status: MessageStatus | None,
    limit: int,
    offset: int,
    cursor: str | None = None,
) -> dict[str, Any]:
    """The tenant's emails, newest first, a page at a time, with the total and the next page's
    ``cursor`` (keyset: the page after it starts below its last row, whatever arrived since)."""
    before = decode_cursor("messages", cursor)
    with Session(services.engine) as session:
        query = select(Message).where(Message.tenant_id == tenant_id)
        if status is not None:
            query = query.where(col(Message.status) == status)
        total = session.exec(select(func.count()).select_from(query.subquery())).one()
        if before is not None:
            query = query.where(col(Message.id) < before)
        messages = list(
            session.exec(
                query.order_by(col(Message.id).desc()).limit(limit + 1).offset(offset)
            ).all()
        )
        more = len(messages) > limit
        messages = messages[:limit]
        recipients = _recipients(session, [m.id or 0 for m in messages])
        items = [_message(session, m, recipients.get(m.id or 0, [])) for m in messages]
    last = messages[-1].id if more and messages else None
    return {
        "items": items,
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_cursor": encode_cursor("messages", last),
    }


def message(services: Services, *, tenant_id: int, uid: str, attempts: bool) -> dict[str, Any]:
    """One email of the tenant with its recipients (and attempts); NotFoundError otherwise."""
    with Session(services.engine) as session:
        message = session.exec(
            select(Message).where(Message.uid == uid, Message.tenant_id == tenant_id)
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
