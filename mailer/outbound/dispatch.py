"""SERVICE: delivery. Claim due messages with a lease; assemble, sign, send; record.

The database is the truth. A message is claimed (``claimed_until`` lease) in one committed
transaction before anything is sent, and its result is written in the transaction that releases
the claim (mailer/outbound/record.py). A worker killed at any point leaves either an unexpired
lease (the row is retried once the lease runs out) or a committed result; the only duplicate
possible is a kill between the server's 250 and that commit, and the retry then carries the same
Message-ID. What is due was written by the queue (mailer/outbound/queue.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

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
from mailer.outbound.assemble import Assembler
from mailer.outbound.envelopes import send_each
from mailer.outbound.models import OPEN_MESSAGE_STATES, Message, MessageRecipient, MessageStatus
from mailer.outbound.ratelimit import enhanced_status, should_back_off
from mailer.outbound.record import Attempt, Recorder, Recording, event_data
from mailer.outbound.requests import (
    Claimed,
    PassReport,
    PreflightCheck,
    SendingProfile,
    WindowCheck,
    claimed_of,
)
from mailer.outbound.throttle import SharedThrottle
from mailer.outbound.transport import SendResult
from mailer.outbound.webhooks import Webhooks

log = logging.getLogger(__name__)


class Dispatcher:
    """Deliver the messages that are due: claim, attempt, record."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock,
        profiles: Mapping[int, SendingProfile],
        assembler: Assembler,
        policy: DeliveryConfig,
        preflight: PreflightCheck | None = None,
        window: WindowCheck | None = None,
        webhooks: Webhooks | None = None,
        worker_id: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``assembler`` builds each message (templates, PDFs, signing); the dispatcher decides
        when, records what happened, and never sends one twice.

        ``preflight`` may veto a claimed message in the claiming transaction (it is then
        ``skipped`` with a reason). ``window`` holds back a windowed email (a reminder, a
        statement) due outside the customer's send window: queued before a downtime, retried
        after 18:00, ... It waits, unclaimed and unattempted, for the window's opening.
        ``webhooks`` queues the message.sent / failed / skipped webhooks with each result
        (mailer/outbound/webhooks.py). All three are given here, once: nothing is wired later.
        """
        self._engine = engine
        self._preflight = preflight
        self._window = window
        self._webhooks = webhooks
        self.skipped = 0  # by pre-flight, over this dispatcher's life
        self._clock = clock
        self._profiles = profiles
        self._assembler = assembler
        self._policy = policy
        self.worker_id = worker_id or f"w-{secrets.token_hex(4)}"
        self._recording = Recording(
            engine,
            policy=policy,
            worker_id=self.worker_id,
            rng=rng or random.Random(),
            webhooks=webhooks,
        )
        rates = {f"tenant:{p.tenant_id}": p.rate_per_minute for p in profiles.values()}
        # In the database, so every worker on every machine shares one limit and one back-off.
        self._throttle = SharedThrottle(
            engine, lambda key: rates.get(key, policy.domain_rate_per_minute)
        )

    def profile(self, tenant_id: int) -> SendingProfile:
        """How tenant ``tenant_id``'s mail is sent (for a preview that must match)."""
        try:
            return self._profiles[tenant_id]
        except KeyError:
            raise MailerError(f"tenant {tenant_id} has no sending profile configured") from None

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
                claimed = [claimed_of(m, by_message.get(m.id or 0, [])) for m in kept]
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
        if self._preflight is None:
            return {}
        skips = self._preflight(session, messages, recipients, now)
        for message in messages:
            reason = skips.get(message.id or 0)
            if reason is None:
                continue
            message.status = MessageStatus.SKIPPED
            message.skip_reason = reason[:200]
            message.finished_at = now
            message.claimed_until = None
            log.info("message %s (%s) skipped: %s", message.uid, message.kind, reason)
            if self._webhooks is not None:
                data = event_data(message.uid, message.kind, message.context, "skipped")
                self._webhooks.emit(
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
        if self._window is None or not messages:
            return messages
        waits = self._window(session, messages, now)
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

    # -- deliver -----------------------------------------------------------------------------

    async def deliver_due(self, *, only: Sequence[int] = ()) -> PassReport:
        """One pass: deliver every message due now, then return (``dunmail deliver``)."""
        report = PassReport()
        in_flight: set[int] = set()  # claimed by this pass and not yet recorded
        recorder = Recorder(self._recording.record, report, done=in_flight.difference_update)
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
                waits = await self._throttled(batch, now)
                await asyncio.gather(
                    *(recorder.put(self._attempt(c, w)) for c, w in zip(batch, waits, strict=True))
                )
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

    async def _throttled(self, batch: Sequence[Claimed], now: datetime) -> list[timedelta]:
        """How long each claimed message must wait for the tenant's and its recipient domains'
        limits (zero: its takes are made), asked of the shared throttle once for the batch.

        The server is only paused (after a 421 or 4.7.x from it), never metered: the rate
        limits are the tenant's and each recipient domain's. Metering the endpoint too gave
        it a bucket of domain_rate_per_minute, which capped everything sent through one
        relay, over all its tenants and domains, at a single domain's rate."""
        requests: list[tuple[Sequence[str], Sequence[str]]] = []
        for claimed in batch:
            profile = self._profiles.get(claimed.tenant_id)
            if profile is None:
                requests.append(((), ()))  # no profile: the attempt fails before any take
                continue
            keys = [f"tenant:{profile.tenant_id}"]
            keys += sorted({f"domain:{a.rpartition('@')[2]}" for a in claimed.recipients})
            requests.append((keys, (f"endpoint:{profile.transport.key}",)))
        try:
            return await asyncio.to_thread(self._throttle.delay_many, requests, now)
        except sa.exc.SQLAlchemyError as exc:  # not sent, so not an attempt: just later
            log.warning("the throttle could not be asked for %d messages: %s", len(batch), exc)
            return [timedelta(seconds=self._policy.poll_seconds)] * len(batch)

    async def _attempt(self, claimed: Claimed, wait: timedelta) -> Attempt:
        started = self._clock.now()
        profile = self._profiles.get(claimed.tenant_id)
        attempt = Attempt(claimed, started, started, endpoint="-")
        if profile is None:
            attempt.error = TransientDeliveryError(0, "tenant has no sending profile configured")
            return attempt
        attempt.endpoint = profile.transport.key
        endpoint = f"endpoint:{profile.transport.key}"
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
            await self._note_backoff(attempt.result)
        except PDFPending as exc:
            # Its PDF renders off the pass (mailer/content/pdfstore.py): not an attempt, just later,
            # so a slow document never holds up this pass and every other tenant's mail.
            attempt.throttled_until = started + timedelta(seconds=exc.retry_after)
        except DeliveryError as exc:
            attempt.error = exc
            if should_back_off(exc.code, enhanced_status(exc.message)):
                await self._back_off(endpoint, exc.message)
        except TemplateError as exc:
            log.error("message %s: template error: %s", claimed.uid, exc)
            attempt.error = _permanent_from(exc)
        except Exception as exc:  # job boundary: one bad message never stops the pass
            log.exception("message %s: unexpected error while delivering", claimed.uid)
            attempt.error = exc
        attempt.finished_at = self._clock.now()
        return attempt

    async def _note_backoff(self, result: SendResult) -> None:
        for r in result.recipients:
            if r.temporary and should_back_off(r.code, enhanced_status(r.message)):
                await self._back_off(f"domain:{r.address.rpartition('@')[2]}", r.message)

    async def _back_off(self, key: str, reason: str) -> None:
        """Pause ``key`` for every worker, from the reply on; never raises, as the mail it
        follows may have been sent."""
        now = self._clock.now()
        until = now + self._policy.domain_backoff
        try:
            await asyncio.to_thread(self._throttle.back_off, key, until, now, reason=reason)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("could not pause %s until %s: %s", key, until.isoformat(), exc)


def _too_big(exc: DeliveryError) -> bool:
    """A refusal of the message for its size, at MAIL FROM SIZE= or at the end of DATA: 552
    (RFC 5321 "exceeded storage allocation", RFC 1870 s6.3) or 5.3.4 / 5.2.3 (RFC 3463)."""
    return exc.code == 552 or enhanced_status(exc.message) in ("5.3.4", "5.2.3")


def _permanent_from(exc: MailerError) -> DeliveryError:
    return PermanentDeliveryError(0, f"{type(exc).__name__}: {exc}")
