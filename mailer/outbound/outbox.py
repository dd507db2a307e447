"""SERVICE: the durable outbox. Enqueue once; claim with a lease; render, sign, send; record.

The database is the truth. A message is claimed (``claimed_until`` lease) in one committed
transaction before anything is sent, and its result is written in the transaction that releases
the claim. A worker killed at any point leaves either an unexpired lease (the row is retried
once the lease runs out) or a committed result; the only duplicate possible is a kill between
the server's 250 and that commit, and the retry then carries the same Message-ID.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from mailer.address import parse_addr_spec
from mailer.clock import Clock
from mailer.config import DeliveryConfig
from mailer.db import session_scope
from mailer.errors import (
    DeliveryError,
    MailerError,
    PDFPending,
    PermanentDeliveryError,
    TemplateError,
    TransientDeliveryError,
)
from mailer.outbound.assemble import Assembler, Sender, Signer
from mailer.outbound.delivery import Decision, decide
from mailer.outbound.envelopes import send_each
from mailer.outbound.identity import SenderIdentity
from mailer.outbound.models import (
    OPEN_MESSAGE_STATES,
    DeliveryAttempt,
    Message,
    MessageRecipient,
    MessageStatus,
    RecipientStatus,
)
from mailer.outbound.ratelimit import Throttle, enhanced_status, should_back_off
from mailer.outbound.transport import SendResult, Transport
from mailer.outbound.webhooks import Webhooks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendingProfile:
    """Everything needed to send as one tenant: identity, transport and DKIM keys."""

    tenant_id: int
    slug: str
    transport: Transport
    signer: Signer
    identity: SenderIdentity
    rate_per_minute: int
    max_message_bytes: int | None = None  # the endpoint's (SMTPEndpoint.max_message_bytes)

    @cached_property
    def sender(self) -> Sender:
        return Sender(self.identity.message_id_domain, self.signer, self.max_message_bytes)


@dataclass(frozen=True)
class EnqueueRequest:
    """An email to put in the outbox; ``document`` plus ``version`` pin what is sent."""

    tenant_id: int
    kind: str
    recipients: Sequence[str]
    context: Mapping[str, Any]
    document: str  # e.g. "invoice:42"; part of the idempotency key
    version: int | None = None
    customer_id: int | None = None
    invoice_id: int | None = None
    not_before: datetime | None = None
    manual: bool = False
    occasion: str | None = None  # which step of a cadence ("step 2"); part of the key


def idempotency_key(request: EnqueueRequest) -> str:
    """tenant + kind + document + version + recipients (+ occasion): the same email is one
    message. A reminder's occasion is in it, so step 2 and step 3 are two emails."""
    recipients = ",".join(sorted({a.strip().lower() for a in request.recipients}))
    raw = f"{request.tenant_id}|{request.kind}|{request.document}|{request.version}|{recipients}"
    if request.occasion is not None:
        raw += f"|{request.occasion}"
    return hashlib.sha256(raw.encode()).hexdigest()


# Right before sending: message id -> reason for those that must not go (scheduler/preflight.py).
PreflightCheck = Callable[
    [Session, Sequence[Message], Mapping[int, list[MessageRecipient]], datetime],
    Mapping[int, str],
]
# Right before sending: message id -> when the customer's send window next opens, for the
# messages that may go only inside it and are outside it now (scheduler/preflight.py).
WindowCheck = Callable[[Session, Sequence[Message], datetime], Mapping[int, datetime]]


@dataclass(frozen=True)
class Claimed:
    """A snapshot of a claimed message, detached from any session."""

    id: int
    uid: str
    tenant_id: int
    kind: str
    context: dict[str, Any]
    created_at: datetime
    attempts: int
    recipients: tuple[str, ...]
    previously_accepted: int
    invoice_id: int | None = None
    document_version: int | None = None
    pdf_sha256: str | None = None  # recorded by an earlier attempt: a retry sends those bytes


@dataclass
class _Attempt:
    claimed: Claimed
    started_at: datetime
    finished_at: datetime
    endpoint: str
    result: SendResult | None = None
    error: BaseException | None = None
    throttled_until: datetime | None = None
    pdf_sha256: str | None = None
    pdf_note: str | None = None  # why the kind's PDF is not attached (Assembled.pdf_note)


@dataclass
class PassReport:
    """What one delivery pass did, by final state of each attempt."""

    attempted: int = 0
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    throttled: int = 0
    skipped: int = 0  # refused by pre-flight: paid, on hold, suppressed, ...
    by_status: dict[str, int] = field(default_factory=dict)

    def count(self, decision: Decision | None) -> None:
        if decision is None:
            self.throttled += 1
            return
        self.attempted += 1
        if decision.status is MessageStatus.SENT:
            self.sent += 1
        elif decision.status is MessageStatus.DEFERRED:
            self.deferred += 1
        else:
            self.failed += 1


class Outbox:
    """Enqueue messages and deliver those that are due."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock,
        profiles: Mapping[int, SendingProfile],
        assembler: Assembler,
        policy: DeliveryConfig,
        worker_id: str | None = None,
        rng: random.Random | None = None,
        preflight: PreflightCheck | None = None,
    ) -> None:
        """``assembler`` builds each message (templates, PDFs, signing); the outbox decides
        when, records what happened, and never sends one twice. ``preflight`` may veto a
        claimed message in the claiming transaction (it is then ``skipped`` with a reason)."""
        self._engine = engine
        self.preflight = preflight  # the composition root may set it once services exist
        # Holds back a windowed email (a reminder, a statement) that is due outside the
        # customer's send window: queued before a downtime, retried after 18:00, ... It waits,
        # unclaimed and unattempted, for the window's opening.
        self.window: WindowCheck | None = None
        # message.sent / failed / skipped webhooks, queued with the result
        # (mailer/outbound/webhooks.py)
        self.webhooks: Webhooks | None = None
        self.skipped = 0  # by pre-flight, over this outbox's life
        self._clock = clock
        self._profiles = profiles
        self._assembler = assembler
        self._policy = policy
        self.worker_id = worker_id or f"w-{secrets.token_hex(4)}"
        self._rng = rng or random.Random()
        rates = {f"tenant:{p.tenant_id}": p.rate_per_minute for p in profiles.values()}
        self._throttle = Throttle(lambda key: rates.get(key, policy.domain_rate_per_minute))

    def profile(self, tenant_id: int) -> SendingProfile:
        """How tenant ``tenant_id``'s mail is sent (for a preview that must match)."""
        try:
            return self._profiles[tenant_id]
        except KeyError:
            raise MailerError(f"tenant {tenant_id} has no sending profile configured") from None

    # -- enqueue -----------------------------------------------------------------------------

    def enqueue(self, session: Session, request: EnqueueRequest, *, now: datetime) -> Message:
        """Add ``request`` unless the same email is already there; return the one message.

        Runs inside the caller's transaction so an email is enqueued together with the state
        change that caused it (or not at all).
        """
        key = idempotency_key(request)
        existing = self._find(session, request.tenant_id, key)
        if existing is not None:
            return existing
        addresses = sorted({parse_addr_spec(a) for a in request.recipients})
        if not addresses:
            raise MailerError(f"{request.kind} for {request.document}: no recipients")
        message = Message(
            uid=secrets.token_hex(10),
            tenant_id=request.tenant_id,
            customer_id=request.customer_id,
            invoice_id=request.invoice_id,
            kind=request.kind,
            document_version=request.version,
            idempotency_key=key,
            context=dict(request.context),
            created_at=now,
            next_attempt_at=max(now, request.not_before or now),
            manual=request.manual,
            occasion=request.occasion,
            language=self._assembler.renderer.language_of(request.context),
        )
        try:
            with session.begin_nested():
                session.add(message)
                session.flush()
                session.add_all(
                    MessageRecipient(message_id=message.id or 0, address=a) for a in addresses
                )
                session.flush()
        except IntegrityError:
            # Another process enqueued the same email between our look-up and insert.
            found = self._find(session, request.tenant_id, key)
            if found is None:
                raise
            return found
        return message

    def enqueue_many(
        self, session: Session, requests: Sequence[EnqueueRequest], *, now: datetime
    ) -> None:
        """:meth:`enqueue` for a batch, in three statements instead of several per email (the
        scheduler queues thousands at a time).

        An email already in the outbox is left alone, as :meth:`enqueue` does: the insert
        skips a row whose (tenant, idempotency key) exists (``ON CONFLICT DO NOTHING``), even
        one another process inserted a moment ago, and its recipients with it.
        """
        rows: list[dict[str, Any]] = []
        recipient_rows: list[dict[str, str]] = []
        seen: set[str] = set()
        for r in requests:
            key = idempotency_key(r)
            if key in seen:
                continue
            seen.add(key)
            if not r.recipients:
                raise MailerError(f"{r.kind} for {r.document}: no recipients")
            uid = secrets.token_hex(10)
            rows.append(
                {
                    "uid": uid,
                    "tenant_id": r.tenant_id,
                    "customer_id": r.customer_id,
                    "invoice_id": r.invoice_id,
                    "kind": r.kind,
                    "document_version": r.version,
                    "idempotency_key": key,
                    "status": MessageStatus.QUEUED,
                    "context": dict(r.context),
                    "created_at": now,
                    "next_attempt_at": max(now, r.not_before or now),
                    "attempts": 0,
                    "manual": r.manual,
                    "occasion": r.occasion,
                    "language": self._assembler.renderer.language_of(r.context),
                }
            )
            recipient_rows.extend(
                {"uid": uid, "address": a}
                for a in sorted({parse_addr_spec(a) for a in r.recipients})
            )
        if not rows:
            return
        message_table = Message.__table__  # type: ignore[attr-defined]
        recipient_table = MessageRecipient.__table__  # type: ignore[attr-defined]
        insert = (pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert)(
            message_table
        ).on_conflict_do_nothing(index_elements=["tenant_id", "idempotency_key"])
        # Plain executemany, no RETURNING: the driver prepares each statement once, where a
        # multi-row VALUES with RETURNING is re-parsed for every page (3x slower on
        # PostgreSQL). Each recipient row finds its message by the message's uid; the rows of
        # a message that was already there find nothing and insert nothing.
        recipients_by_uid = sa.insert(recipient_table).from_select(
            ["message_id", "address", "status"],
            sa.select(
                message_table.c.id,
                sa.bindparam("address", type_=sa.String()),
                sa.literal(RecipientStatus.PENDING.value),
            ).where(message_table.c.uid == sa.bindparam("uid")),
        )
        # Core on the session's connection: the ORM would treat a list of rows as its own
        # bulk insert and refuse an INSERT ... SELECT.
        connection = session.connection()
        connection.execute(insert, rows)
        connection.execute(recipients_by_uid, recipient_rows)

    def find(self, session: Session, request: EnqueueRequest) -> Message | None:
        """The message ``request`` would be, if it is already in the outbox."""
        return self._find(session, request.tenant_id, idempotency_key(request))

    @staticmethod
    def _find(session: Session, tenant_id: int, key: str) -> Message | None:
        query = select(Message).where(
            Message.tenant_id == tenant_id, Message.idempotency_key == key
        )
        return session.exec(query).first()

    # -- claim -------------------------------------------------------------------------------

    def claim_due(self, now: datetime, *, limit: int, only: Sequence[int] = ()) -> list[Claimed]:
        """Lease up to ``limit`` due messages to this worker and commit the lease.

        PostgreSQL: ``FOR UPDATE SKIP LOCKED`` lets many workers claim disjoint rows at once.
        SQLite: the engine begins every transaction with BEGIN IMMEDIATE, which serialises
        claimers, so the same select-then-update is just as exclusive.
        """
        lease = now + timedelta(seconds=self._policy.lease_seconds)
        while True:
            with session_scope(self._engine) as session:
                due = (
                    sa.select(col(Message.id))
                    .where(
                        col(Message.status).in_(OPEN_MESSAGE_STATES),
                        col(Message.next_attempt_at) <= now,
                        sa.or_(
                            col(Message.claimed_until).is_(None), col(Message.claimed_until) < now
                        ),
                    )
                    # Oldest first, then by id: rows queued in one transaction share their
                    # time, and a dead worker's claimed rows (the lowest ids) come back first.
                    .order_by(col(Message.next_attempt_at), col(Message.id))
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
                if only:
                    due = due.where(col(Message.id).in_(list(only)))
                ids = list(session.execute(due).scalars())
                if not ids:
                    return []
                messages = list(session.exec(select(Message).where(col(Message.id).in_(ids))))
                rows = session.exec(
                    select(MessageRecipient).where(col(MessageRecipient.message_id).in_(ids))
                ).all()
                by_message: dict[int, list[MessageRecipient]] = {}
                for row in rows:
                    by_message.setdefault(row.message_id, []).append(row)
                skips = self._skip(session, messages, by_message, now)
                kept = [m for m in messages if (m.id or 0) not in skips]
                kept = self._hold_for_window(session, kept, now)
                if kept:
                    session.execute(
                        sa.update(Message)
                        .where(col(Message.id).in_([m.id for m in kept]))
                        .values(claimed_until=lease, claimed_by=self.worker_id)
                    )
                claimed = [self._snapshot(m, by_message.get(m.id or 0, [])) for m in kept]
            if claimed:
                return claimed
            # Every row of this batch was skipped; the next batch may hold sendable ones.

    def _skip(
        self,
        session: Session,
        messages: list[Message],
        recipients: Mapping[int, list[MessageRecipient]],
        now: datetime,
    ) -> Mapping[int, str]:
        """Ask pre-flight about ``messages`` and mark the vetoed ones ``skipped`` for good."""
        if self.preflight is None:
            return {}
        skips = self.preflight(session, messages, recipients, now)
        for message in messages:
            reason = skips.get(message.id or 0)
            if reason is None:
                continue
            message.status = MessageStatus.SKIPPED
            message.skip_reason = reason[:200]
            message.finished_at = now
            message.claimed_until = None
            log.info("message %s (%s) skipped: %s", message.uid, message.kind, reason)
            if self.webhooks is not None:
                data = _event_data(message.uid, message.kind, message.context, "skipped")
                self.webhooks.emit(
                    session,
                    tenant_id=message.tenant_id,
                    event="message.skipped",
                    data={**data, "skip_reason": message.skip_reason},
                    now=now,
                )
        self.skipped += len(skips)
        session.flush()
        return skips

    def _hold_for_window(
        self, session: Session, messages: list[Message], now: datetime
    ) -> list[Message]:
        """The messages that may go now; the others are put back until their window opens.

        Only their due time moves: status, attempts and recipients stay as they are, so a
        held message is neither lost nor sent twice, and counts no attempt while it waits.
        """
        if self.window is None or not messages:
            return messages
        waits = self.window(session, messages, now)
        held = set()
        for message in messages:
            opens = waits.get(message.id or 0)
            if opens is not None and opens > now:
                held.add(message.id)
                message.next_attempt_at = opens
                log.info(
                    "message %s (%s) waits for the send window: %s",
                    message.uid,
                    message.kind,
                    opens.isoformat(),
                )
        if not held:
            return messages
        session.flush()
        return [m for m in messages if m.id not in held]

    @staticmethod
    def _snapshot(message: Message, recipients: list[MessageRecipient]) -> Claimed:
        owed = [
            r for r in recipients if r.status in (RecipientStatus.PENDING, RecipientStatus.DEFERRED)
        ]
        return Claimed(
            id=message.id or 0,
            uid=message.uid,
            tenant_id=message.tenant_id,
            kind=message.kind,
            context=message.context,
            created_at=message.created_at,
            attempts=message.attempts,
            recipients=tuple(r.address for r in owed),
            previously_accepted=sum(r.status is RecipientStatus.ACCEPTED for r in recipients),
            invoice_id=message.invoice_id,
            document_version=message.document_version,
            pdf_sha256=message.pdf_sha256,
        )

    # -- deliver -----------------------------------------------------------------------------

    async def deliver_due(self, *, only: Sequence[int] = ()) -> PassReport:
        """One pass: deliver every message due now, then return (``dunmail deliver``)."""
        report = PassReport()
        in_flight: set[int] = set()  # claimed by this pass and not yet recorded
        recorder = _Recorder(self._record, report, done=in_flight.difference_update)
        heartbeat = asyncio.create_task(self._keep_leases(in_flight))
        self._assembler.forget_overrides()  # a template saved since the last pass applies now
        skipped_before = self.skipped
        try:
            while True:
                now = self._clock.now()
                batch = await asyncio.to_thread(
                    self.claim_due, now, limit=self._policy.batch_size, only=only
                )
                if not batch:
                    break
                in_flight.update(c.id for c in batch)
                await asyncio.gather(*(recorder.put(self._attempt(c)) for c in batch))
        finally:
            await recorder.close()
            heartbeat.cancel()
            report.skipped = self.skipped - skipped_before
        return report

    async def _keep_leases(self, in_flight: set[int]) -> None:
        """Renew the lease of every message this pass holds and has not recorded yet, every
        third of the lease: a batch slower than ``lease_seconds`` (a server answering slowly)
        must not let another worker, or this one's next claim, send the same message again.
        Only a worker that stops renewing (a crash, a frozen process) loses its claims."""
        period = max(self._policy.lease_seconds / 3, 0.5)
        while True:
            await asyncio.sleep(period)
            held = sorted(in_flight)
            if held:
                await asyncio.to_thread(self._renew, held)

    def _renew(self, ids: Sequence[int]) -> None:
        until = self._clock.now() + timedelta(seconds=self._policy.lease_seconds)
        with session_scope(self._engine) as session:
            session.execute(
                sa.update(Message)
                .where(col(Message.id).in_(list(ids)), col(Message.claimed_by) == self.worker_id)
                .values(claimed_until=until)
            )

    async def _attempt(self, claimed: Claimed) -> _Attempt:
        started = self._clock.now()
        profile = self._profiles.get(claimed.tenant_id)
        attempt = _Attempt(claimed, started, started, endpoint="-")
        if profile is None:
            attempt.error = TransientDeliveryError(0, "tenant has no sending profile configured")
            return attempt
        attempt.endpoint = profile.transport.key
        # The server is only paused (after a 421 or 4.7.x from it), never metered: the rate
        # limits are the tenant's and each recipient domain's. Metering the endpoint too gave
        # it a bucket of domain_rate_per_minute, which capped everything sent through one
        # relay, over all its tenants and domains, at a single domain's rate.
        keys = [f"tenant:{profile.tenant_id}"]
        keys += sorted({f"domain:{a.rpartition('@')[2]}" for a in claimed.recipients})
        endpoint = f"endpoint:{profile.transport.key}"
        wait = self._throttle.paused_for(endpoint, started) or self._throttle.delay(keys, started)
        if wait > timedelta(0):
            attempt.throttled_until = started + wait
            return attempt
        try:
            envelope = profile.identity.envelope(claimed.uid)
            built = await self._assembler.assemble(claimed, profile.sender, envelope, now=started)
            attempt.pdf_sha256 = built.pdf_sha256
            attempt.pdf_note = built.pdf_note
            # One transaction per recipient, each with its own VERP return path: a bounce
            # then proves whom it is about (mailer/outbound/envelopes.py, mailer/outbound/verp.py).
            envelopes = [
                (r, profile.identity.return_path(claimed.uid, r)) for r in claimed.recipients
            ]
            try:
                attempt.result = await send_each(profile.transport, built.data, envelopes=envelopes)
            except PermanentDeliveryError as exc:
                attached = built.pdf_filename is not None and not built.pdf_linked
                if not attached or not _too_big(exc):
                    raise
                # The server's limit is below our budget (an advertised SIZE, or Postfix's
                # 10,240,000 under our 10 MiB): nobody took this message, so the same email,
                # same Message-ID, goes now with the PDF linked. Once: a refusal of that
                # version too is the attempt's result.
                log.info(
                    "message %s: %s refused it with its PDF (%s); sending the download link",
                    claimed.uid,
                    profile.transport.key,
                    exc,
                )
                built = await self._assembler.assemble(
                    claimed, profile.sender, envelope, now=started, link_pdf=True
                )
                attempt.result = await send_each(profile.transport, built.data, envelopes=envelopes)
            self._note_backoff(attempt.result, started)
        except PDFPending as exc:
            # Its PDF renders off the pass (mailer/content/pdfstore.py): not an attempt, just later,
            # so a slow document never holds up this pass and every other tenant's mail.
            attempt.throttled_until = started + timedelta(seconds=exc.retry_after)
        except DeliveryError as exc:
            attempt.error = exc
            if should_back_off(exc.code, enhanced_status(exc.message)):
                until = started + self._policy.domain_backoff
                self._throttle.back_off(f"endpoint:{profile.transport.key}", until)
        except TemplateError as exc:
            log.error("message %s: template error: %s", claimed.uid, exc)
            attempt.error = _permanent_from(exc)
        except Exception as exc:  # job boundary: one bad message never stops the pass
            log.exception("message %s: unexpected error while delivering", claimed.uid)
            attempt.error = exc
        attempt.finished_at = self._clock.now()
        return attempt

    def _note_backoff(self, result: SendResult, now: datetime) -> None:
        for r in result.recipients:
            if r.temporary and should_back_off(r.code, enhanced_status(r.message)):
                domain = r.address.rpartition("@")[2]
                self._throttle.back_off(f"domain:{domain}", now + self._policy.domain_backoff)

    # -- record ------------------------------------------------------------------------------

    def _record(self, attempts: Sequence[_Attempt], report: PassReport) -> None:
        """Write results and release the claims of a batch, all in one transaction.

        Rows are read with two IN queries and written with three executemany statements:
        going through the ORM unit of work here once cost a fifth of the engine's time.
        """
        ids = [a.claimed.id for a in attempts]
        message_rows: list[dict[str, Any]] = []
        recipient_rows: list[dict[str, Any]] = []
        attempt_rows: list[dict[str, Any]] = []
        with session_scope(self._engine) as session:
            current = {
                row.id: row
                for row in session.execute(
                    sa.select(
                        col(Message.id),
                        col(Message.attempts),
                        col(Message.claimed_by),
                        col(Message.status),
                        col(Message.next_attempt_at),
                        col(Message.pdf_sha256),
                    ).where(col(Message.id).in_(ids))
                )
            }
            recipient_ids = {
                (row.message_id, row.address): row.id
                for row in session.execute(
                    sa.select(
                        col(MessageRecipient.id),
                        col(MessageRecipient.message_id),
                        col(MessageRecipient.address),
                    ).where(col(MessageRecipient.message_id).in_(ids))
                )
            }
            for attempt in attempts:
                row = current.get(attempt.claimed.id)
                if row is None:
                    continue
                if row.claimed_by != self.worker_id:
                    log.warning(
                        "message %s: lease lost before its result was recorded", attempt.claimed.uid
                    )
                decision = self._decide(attempt, attempts=row.attempts)
                report.count(decision)
                message_rows.append(_message_row(row, attempt, decision))
                if decision is None:
                    continue
                attempt_rows.append(_attempt_row(attempt, decision, number=row.attempts + 1))
                if self.webhooks is not None and decision.status in (
                    MessageStatus.SENT,
                    MessageStatus.FAILED,
                ):
                    claimed = attempt.claimed
                    data = _event_data(
                        claimed.uid, claimed.kind, claimed.context, decision.status.value
                    )
                    data["recipients"] = [
                        {"address": u.address, "status": u.status.value, "code": u.code}
                        for u in decision.recipients
                    ]
                    self.webhooks.emit(
                        session,
                        tenant_id=claimed.tenant_id,
                        event=f"message.{decision.status.value}",
                        data=data,
                        now=attempt.finished_at,
                    )
                for update in decision.recipients:
                    rid = recipient_ids.get((attempt.claimed.id, update.address))
                    if rid is not None:
                        recipient_rows.append(
                            {
                                "id": rid,
                                "status": update.status,
                                "code": update.code,
                                "response": update.response[:1000],
                                "updated_at": attempt.finished_at,
                            }
                        )
            if message_rows:
                session.execute(sa.update(Message), message_rows)
            if recipient_rows:
                session.execute(sa.update(MessageRecipient), recipient_rows)
            if attempt_rows:
                session.execute(sa.insert(DeliveryAttempt), attempt_rows)

    def _decide(self, attempt: _Attempt, *, attempts: int) -> Decision | None:
        """The decision for one attempt; None when it was throttled and never tried."""
        if attempt.throttled_until is not None:
            return None
        claimed = attempt.claimed
        decision = decide(
            recipients=claimed.recipients,
            previously_accepted=claimed.previously_accepted,
            attempts=attempts + 1,
            created_at=claimed.created_at,
            now=attempt.finished_at,
            result=attempt.result,
            error=attempt.error,
            policy=self._policy,
            rng=self._rng,
        )
        log.info(
            "message %s attempt %d: %s (%s)",
            claimed.uid,
            attempts + 1,
            decision.outcome.value,
            decision.code,
        )
        return decision


def _message_row(current: Any, attempt: _Attempt, decision: Decision | None) -> dict[str, Any]:
    """The message's new columns; every row has the same keys so they batch as executemany."""
    row: dict[str, Any] = {
        "id": current.id,
        "claimed_until": None,
        "claimed_by": None,
        "status": current.status,
        "attempts": current.attempts,
        "next_attempt_at": current.next_attempt_at,
        "finished_at": None,
        "last_error": None,
        "pdf_sha256": attempt.pdf_sha256 or current.pdf_sha256,
    }
    if decision is None:  # throttled: not an attempt, just later
        row["next_attempt_at"] = attempt.throttled_until
        row.pop("finished_at")
        row.pop("last_error")
        return row
    row["status"] = decision.status
    row["attempts"] = current.attempts + 1
    if decision.next_attempt_at is not None:
        row["next_attempt_at"] = decision.next_attempt_at
    if decision.finished:
        row["finished_at"] = attempt.finished_at
    if decision.code is None or decision.code >= 400 or attempt.error is not None:
        row["last_error"] = (f"{decision.code or ''} {decision.response}").strip()[:1000]
    elif attempt.pdf_note is not None:
        row["last_error"] = attempt.pdf_note[:1000]  # sent, but without its PDF: say why
    return row


def _attempt_row(attempt: _Attempt, decision: Decision, *, number: int) -> dict[str, Any]:
    return {
        "message_id": attempt.claimed.id,
        "number": number,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
        "endpoint": attempt.endpoint,
        "outcome": decision.outcome,
        "code": decision.code,
        "response": decision.response[:1000] or None,
        "recipients": [
            {"address": u.address, "status": u.status.value, "code": u.code, "response": u.response}
            for u in decision.recipients
        ],
    }


def _event_data(uid: str, kind: str, context: Mapping[str, Any], status: str) -> dict[str, Any]:
    """A message webhook's ``data``: which email, about which document, and how it ended."""
    invoice = context.get("invoice")
    customer = context.get("customer")
    return {
        "message": uid,
        "kind": kind,
        "status": status,
        "invoice": invoice.get("number") if isinstance(invoice, Mapping) else None,
        "customer": customer.get("id") if isinstance(customer, Mapping) else None,
    }


def _too_big(exc: DeliveryError) -> bool:
    """A refusal of the message for its size, at MAIL FROM SIZE= or at the end of DATA: 552
    (RFC 5321 "exceeded storage allocation", RFC 1870 s6.3) or 5.3.4 / 5.2.3 (RFC 3463)."""
    return exc.code == 552 or enhanced_status(exc.message) in ("5.3.4", "5.2.3")


def _permanent_from(exc: MailerError) -> DeliveryError:
    return PermanentDeliveryError(0, f"{type(exc).__name__}: {exc}")


class _Recorder:
    """Commits attempt results as they finish, batching whatever has piled up meanwhile.

    Recording each result soon after its 250 keeps the crash window (sent but not recorded)
    to a few milliseconds, while batching keeps commits off the hot path under load.
    """

    def __init__(
        self,
        record: Callable[[Sequence[_Attempt], PassReport], None],
        report: PassReport,
        *,
        done: Callable[[Iterable[int]], None] = lambda ids: None,
    ) -> None:
        self._record = record
        self._report = report
        self._done = done  # told the ids of each committed batch
        self._queue: asyncio.Queue[_Attempt | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def put(self, attempt: Awaitable[_Attempt]) -> None:
        self._queue.put_nowait(await attempt)

    async def _run(self) -> None:
        done = False
        while not done:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            done = batch[-1] is None
            items = [a for a in batch if a is not None]
            if items:
                await asyncio.to_thread(self._record, items, self._report)
                self._done(a.claimed.id for a in items)

    async def close(self) -> None:
        self._queue.put_nowait(None)
        await self._task
