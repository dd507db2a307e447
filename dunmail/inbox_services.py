"""Services for returned mail and the AR inbox: ingest, poll, reprocess, suppress and unblock,
threads and their actions. A mixin of :class:`dunmail.app.Services`, which provides the
engine, clock, outbox and tenant lookups declared here."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from mailer.outbound.outbox import EnqueueRequest, Outbox
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from bounce.authority import Mailboxes
from bounce.inbox import list_threads, list_unmatched, show_thread
from bounce.ingest import Outcome, reprocess
from bounce.ingest import process as process_inbound
from bounce.ingest import store as store_inbound
from bounce.pause import pause_unreachable
from bounce.recovery import resend
from bounce.reporting import bounce_rows
from bounce.review import close_reviews, open_reviews
from bounce.threads import add_note, fetch_thread
from bounce.timeline import unverified_addresses
from dunmail.config import Config
from dunmail.web.models import User
from mailer.address import parse_addr_spec
from mailer.clock import Clock
from mailer.content.kinds import reminder_for
from mailer.db import session_scope
from mailer.errors import ConfigError, MailerError
from mailer.inbox_models import InboundMail, InboundStatus, ThreadStatus
from mailer.ledger.imports import (
    customer_contacts,
    replace_contact_email,
)
from mailer.ledger.models import Customer, Invoice
from mailer.outbound.identity import bounce_domain
from mailer.outbound.models import Message, Suppression
from mailer.outbound.suppression import SoftBouncePolicy, SuppressionKind, suppress, unblock
from mailer.outbound.suppression import is_active as is_suppressed
from mailer.outbound.webhooks import Webhooks
from mailer.tenant_config import TenantConfig

if TYPE_CHECKING:  # WeasyPrint is imported only when PDFs are switched on
    pass

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


class InboxServices:
    """The returned-mail and AR-inbox half of the services (``Services`` inherits it)."""

    config: Config
    clock: Clock
    engine: Engine
    outbox: Outbox
    verp_key: bytes
    webhooks: Webhooks
    tenant_ids: dict[str, int]

    def tenant_id(self, slug: str | None) -> int:
        raise NotImplementedError

    def tenant_config(self, tenant_id: int) -> tuple[str, TenantConfig]:
        raise NotImplementedError

    # -- returned mail -----------------------------------------------------------------------

    def process_inbound(self, session: Session, inbound: InboundMail) -> Outcome:
        """Decode, match, suppress and let dunning react (bounce/ingest.py), in the caller's
        transaction, with the tenant's soft-bounce policy."""
        return process_inbound(
            session,
            inbound,
            verp_key=self.verp_key,
            now=self.clock.now(),
            mailboxes=self.mailboxes(),
            policy_for=self.soft_bounce_policy,
            enqueue=self._enqueue_request,
            emit=self.webhooks.emit,
        )

    def mailboxes(self) -> Mailboxes:
        """Which tenant each receiving address is: its AR inbox (reply_to, else its email:
        where its Reply-To points) and its bounce domain (its own, else the relay's, shared).
        Mail threads only inside the tenant that received it (bounce/authority.py)."""
        inboxes: dict[str, int] = {}
        domains: dict[str, set[int]] = {}
        for slug, tenant in self.config.tenants.items():
            tenant_id = self.tenant_ids.get(slug)
            if tenant_id is None:
                continue
            inboxes[(tenant.reply_to or tenant.email).strip().lower()] = tenant_id
            domain = bounce_domain(tenant, self.config.relay).strip().lower()
            domains.setdefault(domain, set()).add(tenant_id)
        return Mailboxes(
            inboxes=inboxes,
            bounce_domains={d: frozenset(ids) for d, ids in domains.items()},
            slugs=dict(self.tenant_ids),
        )

    def soft_bounce_policy(self, tenant_id: int) -> SoftBouncePolicy:
        """The tenant's ``[tenants.<slug>.bounces]`` as the suppression module's policy."""
        bounces = self.tenant_config(tenant_id)[1].bounces
        return SoftBouncePolicy(
            limit=bounces.soft_limit,
            window=timedelta(days=bounces.soft_window_days),
            period=timedelta(days=bounces.soft_suppress_days),
        )

    def _enqueue_request(self, session: Session, request: EnqueueRequest, now: datetime) -> Message:
        return self.outbox.enqueue(session, request, now=now)

    def ingest_inbound(self, messages: Iterable[tuple[str, bytes]]) -> IngestSummary:
        """Store each (source, raw) message, then decode, match and suppress (bounce/ingest.py)."""
        summary = IngestSummary()
        for source, raw in messages:
            with session_scope(self.engine) as session:
                inbound, new = store_inbound(session, raw, source=source, now=self.clock.now())
                if new:
                    summary.stored += 1
                else:
                    summary.duplicates += 1
                if not new and inbound.status is not InboundStatus.STORED:
                    continue  # already decoded; ``dunmail bounce reprocess`` decodes again
                summary.add(self.process_inbound(session, inbound))
        return summary

    def receive_inbound(
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
            inbound, new = store_inbound(
                session, raw, source=source, now=self.clock.now(), recipients=recipients
            )
            if new:
                summary.stored += 1
            else:
                summary.duplicates += 1
            if not new and inbound.status is not InboundStatus.STORED:
                return summary
            try:
                outcome = self.process_inbound(session, inbound)
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
            self.receive_inbound(source, raw, summary=summary)

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

    def reprocess_inbound(self) -> IngestSummary:
        """Decode, match and suppress again over every stored inbound message."""
        summary = IngestSummary()
        for outcome in reprocess(
            self.engine,
            verp_key=self.verp_key,
            now=self.clock.now(),
            mailboxes=self.mailboxes(),
            policy_for=self.soft_bounce_policy,
            enqueue=self._enqueue_request,
        ):
            summary.add(outcome)
        return summary

    def suppressions(self, *, tenant: str | None, everything: bool = False) -> list[dict[str, Any]]:
        """The tenant's blocked addresses (``everything``: lifted and expired ones too), oldest
        first."""
        tenant_id = self.tenant_id(tenant)
        now = self.clock.now()
        with Session(self.engine) as session:
            rows = session.exec(
                select(Suppression)
                .where(Suppression.tenant_id == tenant_id)
                .order_by(col(Suppression.created_at), col(Suppression.id))
            ).all()
        return [
            {
                "address": r.address,
                "kind": r.kind,
                "reason": r.reason,
                "created_at": r.created_at.isoformat(),
                "created_by": r.created_by,
                "expires_at": r.expires_at.isoformat() if r.expires_at else None,
                "active": is_suppressed(r, now),
                "lifted_at": r.lifted_at.isoformat() if r.lifted_at else None,
                "lifted_by": r.lifted_by,
                "lift_reason": r.lift_reason,
            }
            for r in rows
            if everything or is_suppressed(r, now)
        ]

    def suppress(self, address: str, *, tenant: str | None, reason: str, by: str) -> bool:
        """Block an address by hand (until unblocked); False if it was blocked already. A
        customer left with no reachable contact is paused as a bounce would pause it
        (bounce/recovery.py), so its chasing waits visibly for a fixed contact."""
        tenant_id = self.tenant_id(tenant)
        now = self.clock.now()
        with session_scope(self.engine) as session:
            blocked = parse_addr_spec(address)
            new = suppress(
                session,
                tenant_id=tenant_id,
                address=blocked,
                kind=SuppressionKind.MANUAL,
                reason=reason,
                now=now,
                by=by,
            )
            if new:
                pause_unreachable(
                    session,
                    tenant_id=tenant_id,
                    addresses=[blocked],
                    why=f"blocked by {by} ({reason})",
                    now=now,
                )
            return new

    def unblock(self, address: str, *, tenant: str | None, by: str, why: str) -> None:
        """Let mail go to a blocked address again, recording who, when and why."""
        tenant_id = self.tenant_id(tenant)
        with session_scope(self.engine) as session:
            unblock(
                session, tenant_id=tenant_id, address=address, by=by, why=why, now=self.clock.now()
            )

    def bounce_report(self, *, tenant: str | None, since: datetime) -> list[dict[str, Any]]:
        """The tenant's bounces and complaints since ``since`` (bounce/reporting.py)."""
        tenant_id = self.tenant_id(tenant)
        with Session(self.engine) as session:
            return bounce_rows(session, tenant_id=tenant_id, since=since, now=self.clock.now())

    # -- AR inbox (bounce/threads.py) --------------------------------------------------------

    def inbox(
        self,
        *,
        tenant: str | None,
        status: ThreadStatus | None,
        only: str | None = None,
        limit: int | None = None,
        before: str | None = None,
    ) -> list[dict[str, Any]]:
        """The tenant's threads (all, or those in ``status``; ``only`` one of
        ``THREAD_FILTERS``), newest activity first, a page of ``limit`` after ``before`` (a
        row's ``cursor``). A bad filter or cursor is a MailerError."""
        tenant_id = self.tenant_id(tenant)
        with Session(self.engine) as session:
            try:
                return list_threads(
                    session,
                    tenant_id=tenant_id,
                    status=status,
                    only=only,
                    limit=limit,
                    before=before,
                )
            except ValueError as exc:
                raise MailerError(str(exc)) from None

    def inbox_thread(self, thread_id: int, *, tenant: str | None) -> dict[str, Any]:
        """One of the tenant's threads with its timeline; NotFoundError for any other."""
        tenant_id = self.tenant_id(tenant)
        with Session(self.engine) as session:
            return show_thread(session, fetch_thread(session, thread_id, tenant_id=tenant_id))

    async def inbox_resend(
        self, thread_id: int, *, tenant: str | None, by: str
    ) -> tuple[Message, list[str]]:
        """Send a thread's bounced email again to the customer's contacts as they are now,
        lift the pause the bounce caused, and deliver it at once (bounce/recovery.py)."""
        tenant_id = self.tenant_id(tenant)
        with session_scope(self.engine) as session:
            thread = fetch_thread(session, thread_id, tenant_id=tenant_id)
            message, addresses = resend(
                session, thread, by=by, enqueue=self._enqueue_request, now=self.clock.now()
            )
            session.flush()
            message_id = message.id or 0
        await self.outbox.deliver_due(only=[message_id])
        with Session(self.engine) as session:
            refreshed = session.get(Message, message_id)
        if refreshed is None:  # the row was committed above; only a wiped database loses it
            raise MailerError(f"resent message {message_id} is gone")
        return refreshed, addresses

    def inbox_unmatched(self, *, tenant: str | None = None) -> list[dict[str, Any]]:
        """Inbound mail that matched no email of ours: all of it, or (``tenant``) only what
        arrived at that tenant's addresses."""
        tenant_id = None if tenant is None else self.tenant_id(tenant)
        with Session(self.engine) as session:
            return list_unmatched(session, tenant_id=tenant_id)

    def inbox_suppress_unverified(
        self, thread_id: int, address: str, *, tenant: str | None, by: str
    ) -> bool:
        """The clerk's one click on an unverified bounce or an open bounce review: block
        ``address`` (one the thread's unverified bounces or open reviews name) as a manual
        suppression recorded with ``by``, close its reviews as suppressed, pause a customer
        left without a contact, and note it on the thread. False if it was blocked already;
        MailerError for an address no unverified entry or open review of this thread names."""
        tenant_id = self.tenant_id(tenant)
        now = self.clock.now()
        wanted = address.strip().lower()
        with session_scope(self.engine) as session:
            thread = fetch_thread(session, thread_id, tenant_id=tenant_id)
            reviewed = close_reviews(session, thread, wanted, outcome="suppressed")
            if not reviewed and wanted not in unverified_addresses(session, thread):
                raise MailerError(
                    f"thread {thread_id} has no unverified bounce or open review about "
                    f"{address.strip()[:320]!r}"
                )
            what = "bounce review" if reviewed else "unverified bounce"
            why = f"{what} on thread {thread_id} confirmed by {by}"
            new = suppress(
                session,
                tenant_id=tenant_id,
                address=wanted,
                kind=SuppressionKind.MANUAL,
                reason=why,
                now=now,
                by=by,
            )
            if new:
                pause_unreachable(
                    session, tenant_id=tenant_id, addresses=[wanted], why=why, now=now
                )
            text = f"{wanted} suppressed from {'a' if reviewed else 'an'} {what}"
            add_note(session, thread, text=text + ("" if new else " (already)"), author=by, now=now)
            return new

    def inbox_dismiss_review(
        self, thread_id: int, address: str, *, tenant: str | None, by: str
    ) -> int:
        """The clerk judges a hard verdict on weak evidence wrong: close the thread's open
        reviews about ``address`` as dismissed (the bounce stays counted as soft) and note it
        with ``by``. Returns how many were closed; MailerError when none was open."""
        tenant_id = self.tenant_id(tenant)
        now = self.clock.now()
        wanted = address.strip().lower()
        with session_scope(self.engine) as session:
            thread = fetch_thread(session, thread_id, tenant_id=tenant_id)
            closed = close_reviews(session, thread, wanted, outcome="dismissed")
            if not closed:
                raise MailerError(
                    f"thread {thread_id} has no open review about {address.strip()[:320]!r}"
                )
            text = f"bounce review of {wanted} dismissed: the address stays in use"
            add_note(session, thread, text=text, author=by, now=now)
            return closed

    def inbox_context(self, thread_id: int, *, tenant: str | None) -> dict[str, Any]:
        """What a thread's page offers actions on: its customer, its invoice (with the reminder
        kind a send now would be), and the customer's contacts, each with whether it is
        blocked. NotFoundError for another tenant's thread."""
        tenant_id = self.tenant_id(tenant)
        now = self.clock.now()
        with Session(self.engine) as session:
            thread = fetch_thread(session, thread_id, tenant_id=tenant_id)
            customer = session.get(Customer, thread.customer_id) if thread.customer_id else None
            kind, _, ref = thread.document.partition(":")
            invoice = (
                session.get(Invoice, int(ref)) if kind == "invoice" and ref.isdigit() else None
            )
            contacts = customer_contacts(session, customer) if customer is not None else []
            blocked = {
                r.address
                for r in session.exec(
                    select(Suppression).where(
                        Suppression.tenant_id == tenant_id,
                        col(Suppression.address).in_([c.email.lower() for c in contacts]),
                    )
                )
                if is_suppressed(r, now)
            }
        return {
            "customer": customer.external_id if customer else None,
            "invoice": None
            if invoice is None
            else {
                "number": invoice.number,
                "due_at": invoice.due_at.isoformat(),
                "status": invoice.status.value,
                "reminder_kind": reminder_for(overdue=invoice.due_at < now),
            },
            "contacts": [
                {
                    "email": c.email,
                    "name": c.name,
                    "roles": list(c.roles),
                    "blocked": c.email.lower() in blocked,
                    "erp_email": c.erp_email,  # set while the ERP still lists the old address
                }
                for c in contacts
            ],
        }

    def inbox_fix_contact(
        self, thread_id: int, *, tenant: str | None, old: str, new: str, by: str
    ) -> str:
        """Correct the address of one of the thread's customer's contacts (then ``inbox_resend``
        sends the bounced email there); noted on the thread. Returns the stored address."""
        tenant_id = self.tenant_id(tenant)
        now = self.clock.now()
        with session_scope(self.engine) as session:
            thread = fetch_thread(session, thread_id, tenant_id=tenant_id)
            if thread.customer_id is None:
                raise MailerError(f"thread {thread_id} belongs to no customer")
            row = replace_contact_email(
                session,
                tenant_id=tenant_id,
                customer_id=thread.customer_id,
                old=old,
                new=new,
                now=now,
                by=by,
            )
            add_note(
                session, thread, text=f"contact corrected: {old} -> {row.email}", author=by, now=now
            )
            return row.email

    def inbox_note(
        self, thread_id: int, text: str, *, tenant: str | None, author: str
    ) -> dict[str, Any]:
        """Leave a note on a thread; returns the thread."""
        tenant_id = self.tenant_id(tenant)
        with session_scope(self.engine) as session:
            thread = fetch_thread(session, thread_id, tenant_id=tenant_id)
            add_note(session, thread, text=text, author=author, now=self.clock.now())
            return show_thread(session, thread)

    def inbox_update(
        self,
        thread_id: int,
        *,
        tenant: str | None,
        status: ThreadStatus | None = None,
        assignee: str | None = None,
    ) -> dict[str, Any]:
        """Resolve (or reopen) a thread, or assign it (to a user of the tenant, or to nobody
        with ""); returns the thread."""
        tenant_id = self.tenant_id(tenant)
        with session_scope(self.engine) as session:
            thread = fetch_thread(session, thread_id, tenant_id=tenant_id)
            if status is ThreadStatus.RESOLVED and open_reviews(session, thread):
                # A hard verdict on weak evidence waits for a person: it must not be filed away.
                raise MailerError(
                    f"thread {thread_id} has an open bounce review: suppress the address or "
                    "dismiss the review first"
                )
            if status is not None:
                thread.status = status
            if assignee is not None:
                thread.assignee = _assignable(session, tenant_id, assignee, thread_id=thread_id)
            thread.updated_at = self.clock.now()
            session.add(thread)
            session.flush()
            return show_thread(session, thread)


def _assignable(session: Session, tenant_id: int, name: str, *, thread_id: int) -> str | None:
    """The stored email of the tenant's enabled user named ``name`` (None for "": nobody).

    Refused (MailerError) for anyone else, another tenant's user included: the assignee is
    who the thread's page and ``dunmail inbox`` say handles it, so it must be someone who can
    sign in to this tenant's inbox, not free text naming a person elsewhere.
    """
    wanted = name.strip()
    if not wanted:
        return None
    users = session.exec(
        select(User)
        .where(User.tenant_id == tenant_id, col(User.disabled_at).is_(None))
        .order_by(col(User.email))
    ).all()
    try:
        address = parse_addr_spec(wanted).lower()
    except MailerError:
        address = None
    for user in users:
        if user.email == address:
            return user.email
    known = ", ".join(u.email for u in users[:10]) + (", ..." if len(users) > 10 else "")
    raise MailerError(
        f"thread {thread_id}: cannot assign it to {wanted[:80]!r}: not a user of this tenant "
        f"({'its users: ' + known if known else 'it has no users yet: dunmail user add'})"
    )
