"""Returned mail coming in: ingest, receive, poll the IMAP mailboxes, reprocess.

One part of :class:`dunmail.app.Services`. Every message is stored first, then decoded,
matched, suppressed on evidence and reacted to (bounce/ingest.py) with the tenant's soft-bounce
policy; the sources are the CLI (files), the inbound SMTP server and the IMAP poller.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from bounce.authority import Mailboxes
from bounce.ingest import Outcome, process, reprocess, store
from bounce.proposals import ReplyPolicy, propose_for_reply, unproposed_replies
from dunmail.config import Config
from mailer.clock import Clock
from mailer.db import session_scope
from mailer.errors import ConfigError, MailerError
from mailer.inbox_models import InboundMail, InboundStatus
from mailer.outbound.identity import bounce_domain
from mailer.outbound.models import Message
from mailer.outbound.queue import Queue
from mailer.outbound.requests import EnqueueRequest
from mailer.outbound.suppression import SoftBouncePolicy
from mailer.outbound.webhooks import Webhooks
from mailer.tenants import Tenants

log = logging.getLogger(__name__)


@dataclass
class IngestSummary:
    """Counts for ``dunmail bounce ingest`` and ``reprocess``."""

    stored: int = 0
    duplicates: int = 0
    matched: int = 0
    unmatched: int = 0
    errors: int = 0
    suppressed: list[str] = field(default_factory=list)
    rerouted: list[str] = field(default_factory=list)  # bounced emails sent to another contact
    paused: int = 0  # bounces that left no contact: chasing waits for a fixed contact

    def add(self, outcome: Outcome) -> None:
        """Count one processed message."""
        if outcome.rerouted_to:
            self.rerouted.append(outcome.rerouted_to)
        self.paused += outcome.paused
        if outcome.status is InboundStatus.PROCESSED:
            self.matched += 1
        elif outcome.status is InboundStatus.UNMATCHED:
            self.unmatched += 1
        elif outcome.status is InboundStatus.ERROR:
            self.errors += 1
        self.suppressed.extend(outcome.suppressed)


class Inbound:
    """Store, then decode, match and suppress every returned message, whatever its source."""

    def __init__(
        self,
        engine: Engine,
        *,
        config: Config,
        clock: Clock,
        tenants: Tenants,
        verp_key: bytes,
        webhooks: Webhooks,
        queue: Queue,
    ) -> None:
        """``verp_key`` proves a bounce is of our mail; ``queue`` takes what dunning sends
        in reaction (another contact, bounce/recovery.py); ``webhooks`` tells the tenant."""
        self.engine = engine
        self.config = config
        self.clock = clock
        self.tenants = tenants
        self.verp_key = verp_key
        self.webhooks = webhooks
        self.queue = queue

    def process(self, session: Session, inbound: InboundMail) -> Outcome:
        """Decode, match, suppress and let dunning react (bounce/ingest.py), in the caller's
        transaction, with the tenant's soft-bounce policy; a person's reply is read and its
        action proposed in its thread (bounce/proposals.py)."""
        outcome = process(
            session,
            inbound,
            verp_key=self.verp_key,
            now=self.clock.now(),
            mailboxes=self.mailboxes(),
            policy_for=self.soft_bounce_policy,
            enqueue=self._enqueue,
            emit=self.webhooks.emit,
        )
        if outcome.status is InboundStatus.PROCESSED and inbound.tenant_id is not None:
            policy = self.reply_policy(inbound.tenant_id)
            propose_for_reply(session, inbound, policy=policy, now=self.clock.now())
        return outcome

    def reply_policy(self, tenant_id: int) -> ReplyPolicy:
        """The tenant's ``[tenants.<slug>.replies]`` as bounce/proposals.py's policy."""
        tenant = self.tenants.config(tenant_id)[1]
        return ReplyPolicy(
            auto_promise_holds=tenant.replies.auto_promise_holds,
            grace=timedelta(days=tenant.replies.promise_grace_days),
            default_wait=timedelta(days=tenant.replies.promise_default_days),
            time_zone=tenant.time_zone,
        )

    def _enqueue(self, session: Session, request: EnqueueRequest, now: datetime) -> Message:
        """bounce/'s way to queue an email, in the caller's transaction."""
        return self.queue.enqueue(session, request, now=now)

    def mailboxes(self) -> Mailboxes:
        """Which tenant each receiving address is: its AR inbox (reply_to, else its email:
        where its Reply-To points) and its bounce domain (its own, else the relay's, shared).
        Mail threads only inside the tenant that received it (bounce/authority.py)."""
        inboxes: dict[str, int] = {}
        domains: dict[str, set[int]] = {}
        for slug, tenant in self.config.tenants.items():
            tenant_id = self.tenants.ids.get(slug)
            if tenant_id is None:
                continue
            inboxes[(tenant.reply_to or tenant.email).strip().lower()] = tenant_id
            domain = bounce_domain(tenant, self.config.relay).strip().lower()
            domains.setdefault(domain, set()).add(tenant_id)
        return Mailboxes(
            inboxes=inboxes,
            bounce_domains={d: frozenset(ids) for d, ids in domains.items()},
            slugs=dict(self.tenants.ids),
        )

    def soft_bounce_policy(self, tenant_id: int) -> SoftBouncePolicy:
        """The tenant's ``[tenants.<slug>.bounces]`` as the suppression module's policy."""
        bounces = self.tenants.config(tenant_id)[1].bounces
        return SoftBouncePolicy(
            limit=bounces.soft_limit,
            window=timedelta(days=bounces.soft_window_days),
            period=timedelta(days=bounces.soft_suppress_days),
        )

    def ingest(self, messages: Iterable[tuple[str, bytes]]) -> IngestSummary:
        """Store each (source, raw) message, then decode, match and suppress (bounce/ingest.py)."""
        summary = IngestSummary()
        for source, raw in messages:
            with session_scope(self.engine) as session:
                inbound, new = store(session, raw, source=source, now=self.clock.now())
                if new:
                    summary.stored += 1
                else:
                    summary.duplicates += 1
                if not new and inbound.status is not InboundStatus.STORED:
                    continue  # already decoded; ``dunmail bounce reprocess`` decodes again
                summary.add(self.process(session, inbound))
        return summary

    def receive(
        self,
        source: str,
        raw: bytes,
        *,
        recipients: Sequence[str] | None = None,
        summary: IngestSummary | None = None,
    ) -> IngestSummary:
        """Store one message (with its SMTP envelope ``recipients``, from the inbound server)
        and commit (raises if it could not be stored: the caller must not acknowledge it),
        then decode, match and suppress. A failure after the commit is logged and leaves the
        mail stored for ``dunmail bounce reprocess``: it never raises."""
        summary = summary if summary is not None else IngestSummary()
        with Session(self.engine, expire_on_commit=False) as session:
            inbound, new = store(
                session, raw, source=source, now=self.clock.now(), recipients=recipients
            )
            if new:
                summary.stored += 1
            else:
                summary.duplicates += 1
            if not new and inbound.status is not InboundStatus.STORED:
                return summary
            try:
                outcome = self.process(session, inbound)
                session.commit()
            except Exception:  # the raw mail is committed; a later reprocess decodes it
                session.rollback()
                log.exception("bounce: processing inbound %s failed; it stays stored", inbound.id)
                summary.errors += 1
                return summary
        summary.add(outcome)
        return summary

    def imap_tenants(self) -> list[str]:
        """The tenants with a ``[tenants.<slug>.imap]`` mailbox to poll."""
        return sorted(slug for slug, t in self.config.tenants.items() if t.imap is not None)

    def poll_mailbox(self, slug: str, *, summary: IngestSummary | None = None) -> IngestSummary:
        """One IMAP poll of tenant ``slug``'s mailbox (blocking: run it in a thread)."""
        from bounce.imap import poll_mailbox

        tenant = self.config.tenants.get(slug)
        if tenant is None or tenant.imap is None:
            raise ConfigError(f"tenant {slug!r} has no [tenants.{slug}.imap] table")
        summary = summary if summary is not None else IngestSummary()

        def deliver(source: str, raw: bytes) -> None:
            self.receive(source, raw, summary=summary)

        poll_mailbox(tenant.imap, tenant=slug, deliver=deliver)
        return summary

    def poll_mailboxes(self, *, tenant: str | None = None) -> tuple[IngestSummary, dict[str, str]]:
        """Poll ``tenant``'s mailbox, or every configured one; returns the ingest summary and
        slug -> error for the mailboxes that failed (one failure never stops the others)."""
        slugs = [tenant] if tenant is not None else self.imap_tenants()
        if not slugs:
            raise ConfigError("no tenant has a [tenants.<slug>.imap] table")
        if tenant is not None and tenant not in self.imap_tenants():
            raise ConfigError(f"tenant {tenant!r} has no [tenants.{tenant}.imap] table")
        summary, failed = IngestSummary(), {}
        for slug in slugs:
            try:
                self.poll_mailbox(slug, summary=summary)
            except MailerError as exc:
                log.error("imap: polling %s failed: %s", slug, exc)
                failed[slug] = str(exc)
        return summary, failed

    def reprocess(self) -> IngestSummary:
        """Decode, match and suppress again over every stored inbound message, then read the
        persons' replies that have no proposal yet (those stored before reply triage, or
        matched only now)."""
        summary = IngestSummary()
        for outcome in reprocess(
            self.engine,
            verp_key=self.verp_key,
            now=self.clock.now(),
            mailboxes=self.mailboxes(),
            policy_for=self.soft_bounce_policy,
            enqueue=self._enqueue,
        ):
            summary.add(outcome)
        for inbound_id in unproposed_replies(self.engine):
            with session_scope(self.engine) as session:
                inbound = session.get(InboundMail, inbound_id)
                if inbound is not None and inbound.tenant_id is not None:
                    policy = self.reply_policy(inbound.tenant_id)
                    propose_for_reply(session, inbound, policy=policy, now=self.clock.now())
        return summary
