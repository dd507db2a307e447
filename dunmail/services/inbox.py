"""The AR inbox: threads of returned mail and replies, and what a clerk does on one (resend,
fix a contact, suppress on weak evidence or dismiss the review, note, resolve, assign).

One part of :class:`dunmail.app.Services`; the threads themselves are bounce/threads.py's and
the recovery after a bounce bounce/recovery.py's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from bounce.inbox import list_threads, list_unmatched, show_thread
from bounce.pause import pause_unreachable
from bounce.proposals import accept_proposal, latest_open, thread_proposals
from bounce.recovery import copy_request, resend
from bounce.review import close_reviews, open_reviews
from bounce.threads import add_note, fetch_thread, thread_messages
from bounce.timeline import unverified_addresses
from dunmail.labels import labels_for
from dunmail.web.models import User
from mailer.address import parse_addr_spec
from mailer.clock import Clock
from mailer.content.kinds import reminder_for
from mailer.db import session_scope
from mailer.errors import MailerError, NotFoundError
from mailer.inbox_models import ReplyProposal, Thread, ThreadStatus
from mailer.ledger.contacts import replace_contact_email
from mailer.ledger.models import Customer, Invoice
from mailer.ledger.queries import contacts_by_customer, customer_contacts
from mailer.outbound.dispatch import Dispatcher
from mailer.outbound.models import Message, Suppression
from mailer.outbound.queue import Queue
from mailer.outbound.requests import EnqueueRequest
from mailer.outbound.suppression import SuppressionKind, suppress
from mailer.outbound.suppression import is_active as is_suppressed
from mailer.tenants import Tenants


class Inbox:
    """A tenant's threads, by its slug, and the clerk's actions on them."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock,
        tenants: Tenants,
        queue: Queue,
        dispatcher: Dispatcher,
    ) -> None:
        """A resend is put in the ``queue``, then the ``dispatcher`` delivers it at once."""
        self.engine = engine
        self.clock = clock
        self.tenants = tenants
        self.queue = queue
        self.dispatcher = dispatcher

    def threads(
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
        tenant_id = self.tenants.id(tenant)
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

    def thread(self, thread_id: int, *, tenant: str | None) -> dict[str, Any]:
        """One of the tenant's threads with its timeline and what its replies propose;
        NotFoundError for any other."""
        tenant_id = self.tenants.id(tenant)
        with Session(self.engine) as session:
            found = fetch_thread(session, thread_id, tenant_id=tenant_id)
            return {**show_thread(session, found), "proposals": thread_proposals(session, found)}

    def accept(
        self, thread_id: int, *, tenant: str | None, by: str, proposal: int | None = None
    ) -> str:
        """The clerk's one click on what a reply proposes (the thread's newest open proposal,
        or ``proposal``): the hold, task or contact change is made and noted as ``by``.
        Returns what was done; MailerError when nothing is waiting or it cannot be done."""
        tenant_id = self.tenants.id(tenant)
        with session_scope(self.engine) as session:
            thread = fetch_thread(session, thread_id, tenant_id=tenant_id)
            chosen = latest_open(session, thread) if proposal is None else None
            if chosen is None:
                chosen = session.get(ReplyProposal, proposal)
                if chosen is None or chosen.thread_id != thread.id:
                    raise NotFoundError(f"thread {thread_id} has no proposal {proposal}")
            return accept_proposal(session, chosen, by=by, now=self.clock.now())

    def _enqueue(self, session: Session, request: EnqueueRequest, now: datetime) -> Message:
        """bounce/'s way to queue an email, in the caller's transaction."""
        return self.queue.enqueue(session, request, now=now)

    async def resend(
        self, thread_id: int, *, tenant: str | None, by: str
    ) -> tuple[Message, list[str]]:
        """Send a thread's bounced email again to the customer's contacts as they are now,
        lift the pause the bounce caused, and deliver it at once (bounce/recovery.py)."""
        tenant_id = self.tenants.id(tenant)
        with session_scope(self.engine) as session:
            thread = fetch_thread(session, thread_id, tenant_id=tenant_id)
            message, addresses = resend(
                session, thread, by=by, enqueue=self._enqueue, now=self.clock.now()
            )
            session.flush()
            message_id = message.id or 0
        return await self._delivered(message_id), addresses

    async def resend_email(
        self, thread_id: int, message_id: int, *, tenant: str | None, by: str
    ) -> tuple[Message, list[str]]:
        """Send email ``message_id`` of the thread again, as it was (its frozen content), to
        the customer's contacts as they are now that are not blocked; noted on the thread with
        ``by``, and delivered at once. NotFoundError for an email of another thread or tenant;
        MailerError when no contact can get it. Unlike the inbox's resend after a bounce
        (bounce/recovery.py) it lifts no pause: it is one more email, not the fix of a contact.
        """
        tenant_id = self.tenants.id(tenant)
        now = self.clock.now()
        with session_scope(self.engine) as session:
            thread = session.get(Thread, thread_id)
            if thread is None or thread.tenant_id != tenant_id:
                raise NotFoundError(f"no thread {thread_id}")
            original = next(
                (m for m in thread_messages(session, thread) if m.id == message_id), None
            )
            if original is None:
                raise NotFoundError(f"no email {message_id} in thread {thread_id}")
            if original.customer_id is None:
                raise MailerError(f"email {message_id} is to no customer: nobody to resend it to")
            contacts = contacts_by_customer(session, [original.customer_id], now=now)
            addresses = [c.email for c in contacts.get(original.customer_id, [])]
            if not addresses:
                raise MailerError(
                    "the customer has no contact that is not blocked: correct or unblock one first"
                )
            count = 1 + sum(
                1 for m in thread_messages(session, thread) if m.manual and m.kind == original.kind
            )
            occasion = f"{original.occasion or original.kind} resend {count} by hand"[:63]
            request = copy_request(original, addresses, occasion=occasion, manual=True)
            message = self.queue.enqueue(session, request, now=now)
            add_note(
                session,
                thread,
                text=f"resent email {message_id} ({labels_for(None).kind(original.kind)}) "
                f"to {', '.join(addresses)}",
                author=by,
                now=now,
            )
            session.flush()
            new_id = message.id or 0
        return await self._delivered(new_id), addresses

    async def _delivered(self, message_id: int) -> Message:
        """Deliver the just-queued ``message_id`` at once and read it back, as it ended."""
        await self.dispatcher.deliver_due(only=[message_id])
        with Session(self.engine) as session:
            message = session.get(Message, message_id)
            if message is None:  # committed by the caller; only a wiped database loses it
                raise MailerError(f"resent message {message_id} is gone")
            session.expunge(message)
        return message

    def unmatched(self, *, tenant: str | None = None) -> list[dict[str, Any]]:
        """Inbound mail that matched no email of ours: all of it, or (``tenant``) only what
        arrived at that tenant's addresses."""
        tenant_id = None if tenant is None else self.tenants.id(tenant)
        with Session(self.engine) as session:
            return list_unmatched(session, tenant_id=tenant_id)

    def suppress_unverified(
        self, thread_id: int, address: str, *, tenant: str | None, by: str
    ) -> bool:
        """The clerk's one click on an unverified bounce or an open bounce review: block
        ``address`` (one the thread's unverified bounces or open reviews name) as a manual
        suppression recorded with ``by``, close its reviews as suppressed, pause a customer
        left without a contact, and note it on the thread. False if it was blocked already;
        MailerError for an address no unverified entry or open review of this thread names."""
        tenant_id = self.tenants.id(tenant)
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

    def dismiss_review(self, thread_id: int, address: str, *, tenant: str | None, by: str) -> int:
        """The clerk judges a hard verdict on weak evidence wrong: close the thread's open
        reviews about ``address`` as dismissed (the bounce stays counted as soft) and note it
        with ``by``. Returns how many were closed; MailerError when none was open."""
        tenant_id = self.tenants.id(tenant)
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

    def context(self, thread_id: int, *, tenant: str | None) -> dict[str, Any]:
        """What a thread's page offers actions on: its customer, its invoice (with the reminder
        kind a send now would be), and the customer's contacts, each with whether it is
        blocked. NotFoundError for another tenant's thread."""
        tenant_id = self.tenants.id(tenant)
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

    def fix_contact(
        self, thread_id: int, *, tenant: str | None, old: str, new: str, by: str
    ) -> str:
        """Correct the address of one of the thread's customer's contacts (then :meth:`resend`
        sends the bounced email there); noted on the thread. Returns the stored address."""
        tenant_id = self.tenants.id(tenant)
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

    def note(self, thread_id: int, text: str, *, tenant: str | None, author: str) -> dict[str, Any]:
        """Leave a note on a thread; returns the thread."""
        tenant_id = self.tenants.id(tenant)
        with session_scope(self.engine) as session:
            thread = fetch_thread(session, thread_id, tenant_id=tenant_id)
            add_note(session, thread, text=text, author=author, now=self.clock.now())
            return show_thread(session, thread)

    def update(
        self,
        thread_id: int,
        *,
        tenant: str | None,
        status: ThreadStatus | None = None,
        assignee: str | None = None,
    ) -> dict[str, Any]:
        """Resolve (or reopen) a thread, or assign it (to a user of the tenant, or to nobody
        with ""); returns the thread."""
        tenant_id = self.tenants.id(tenant)
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
