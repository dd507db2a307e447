"""SERVICE: what dunning does when mail comes back, and the AR clerk's resend after a fix.

A bounced email did not reach the customer, so the step it carried is not "sent". If another
contact of the customer can take it (by role: billing, AP, accountant, primary, and not
suppressed), the same email goes to that contact. If nobody can, escalation pauses
(bounce/pause.py): a ``contact_bounced`` hold stops further reminders and the thread carries a
``fix_contact`` task until a person corrects the contact and runs ``dunmail inbox resend``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bounce.pause import (
    BOUNCE_AUTHOR,
    FIX_CONTACT,
    bounce_holds,
    pause,
    pause_if_unreachable,
    pause_unreachable,
)
from bounce.report import Kind
from bounce.threads import add_note, document_key, thread_messages
from mailer.errors import MailerError
from mailer.inbox_models import DeliveryEvent, Thread
from mailer.ledger import holds
from mailer.ledger.holds import touch_customer_invoices
from mailer.ledger.models import Contact
from mailer.ledger.queries import contacts_by_customer, rank_contacts
from mailer.outbound.models import Message, MessageRecipient, RecipientRole, RecipientStatus
from mailer.outbound.requests import EnqueueRequest
from mailer.outbound.suppression import active as active_suppressions
from mailer.outbound.suppression import normal

Enqueue = Callable[[Session, EnqueueRequest, datetime], Message]


@dataclass(frozen=True)
class Reaction:
    """What a bounce led to: the email re-sent to another contact, or escalation paused."""

    rerouted_to: str | None = None
    paused: bool = False


def react_to_return(
    session: Session,
    message: Message,
    thread: Thread,
    *,
    kind: Kind,
    suppressed: Iterable[str],
    enqueue: Enqueue,
    now: datetime,
) -> Reaction:
    """The one reaction to returned mail about ``message`` (a bounce or a complaint), after its
    events and suppressions were recorded. A bounce first tries the next contact
    (:func:`react_to_bounce`); then, whatever the kind, every customer the return left without
    a reachable contact is paused: ``message``'s customer on ``thread``, and any other customer
    of the tenant that listed a newly ``suppressed`` address. The caller commits."""
    reaction = Reaction()
    if kind is Kind.BOUNCE:
        reaction = react_to_bounce(session, message, thread, enqueue=enqueue, now=now)
    elif kind is not Kind.COMPLAINT:
        return reaction
    what = "bounced" if kind is Kind.BOUNCE else "drew a complaint"
    paused = reaction.paused
    if message.customer_id is not None and not paused:
        paused = pause_if_unreachable(
            session,
            tenant_id=message.tenant_id,
            customer_id=message.customer_id,
            thread=thread,
            why=f"{message.kind} {what}",
            now=now,
        )
    pause_unreachable(
        session,
        tenant_id=message.tenant_id,
        addresses=suppressed,
        why=f"{what} (on another customer's email)",
        now=now,
        skip=message.customer_id,
    )
    return Reaction(rerouted_to=reaction.rerouted_to, paused=paused)


def react_to_bounce(
    session: Session, message: Message, thread: Thread, *, enqueue: Enqueue, now: datetime
) -> Reaction:
    """After the bounces of ``message`` were recorded: if none of its recipients can still have
    received it, hand it to the next contact or pause escalation. The caller commits."""
    if message.customer_id is None or _reached_someone(session, message, now):
        return Reaction()
    if not _dead_address(session, message, now):
        # A soft final failure (the queue expired, the mailbox stayed full): the contact is
        # right, the customer's server was not; the next step tries again, to the same people.
        add_note(
            session,
            thread,
            text=f"{message.kind} could not be delivered (a temporary failure that lasted); "
            "the next step will try again",
            author=BOUNCE_AUTHOR,
            now=now,
        )
        return Reaction()
    tried = _tried(session, message)
    candidates = _all_contacts(session, message.customer_id, now)
    fallback = next((c for c in candidates if normal(c.email) not in tried), None)
    if fallback is not None:
        enqueue(session, copy_request(message, [fallback.email], occasion=message.occasion), now)
        add_note(
            session,
            thread,
            text=f"{message.kind} bounced for every recipient; sent to {fallback.email} instead",
            author=BOUNCE_AUTHOR,
            now=now,
        )
        return Reaction(rerouted_to=fallback.email)
    pause(
        session,
        tenant_id=message.tenant_id,
        customer_id=message.customer_id,
        thread=thread,
        why=f"{message.kind} bounced and no other contact can take it",
        now=now,
    )
    return Reaction(paused=True)


def resend(
    session: Session, thread: Thread, *, by: str, enqueue: Enqueue, now: datetime
) -> tuple[Message, list[str]]:
    """Send the thread's latest bounced email again, to the customer's contacts as they are
    now (after a person corrected them), and let escalation go on. The caller commits."""
    if thread.customer_id is None:
        raise MailerError(f"thread {thread.id} belongs to no customer")
    original = _last_bounced(session, thread)
    if original is None:
        raise MailerError(f"thread {thread.id} has no bounced email to resend")
    contacts = contacts_by_customer(session, [thread.customer_id], now=now)[thread.customer_id]
    if not contacts:
        raise MailerError(
            f"thread {thread.id}: the customer has no contact that is not suppressed; "
            "correct the contact (import it again) or unblock the address first"
        )
    addresses = [c.email for c in contacts]
    number = 1 + _resends(session, thread)
    occasion = f"{original.occasion or original.kind} resend {number}"
    request = copy_request(original, addresses, occasion=occasion, manual=True)
    message = enqueue(session, request, now)
    for hold in bounce_holds(session, tenant_id=thread.tenant_id, customer_id=thread.customer_id):
        holds.lift(session, hold, now)
    touch_customer_invoices(session, thread.customer_id, now)
    thread.task = None
    add_note(
        session,
        thread,
        text=f"resent {original.kind} to {', '.join(addresses)}",
        author=by,
        now=now,
    )
    return message, addresses


def _reached_someone(session: Session, message: Message, now: datetime) -> bool:
    """Whether a customer recipient of ``message`` may have got it: not refused, not returned,
    and not suppressed since. The AR team's copies (mailer/outbound/copies.py) do not count."""
    recipients = session.exec(
        select(MessageRecipient).where(
            MessageRecipient.message_id == message.id, MessageRecipient.role == RecipientRole.TO
        )
    ).all()
    blocked = {
        a
        for _, a in active_suppressions(
            session, [message.tenant_id], [r.address for r in recipients], now
        )
    }
    return any(
        r.status not in (RecipientStatus.REJECTED, RecipientStatus.BOUNCED)
        and normal(r.address) not in blocked
        for r in recipients
    )


def _dead_address(session: Session, message: Message, now: datetime) -> bool:
    """Whether a customer recipient of ``message`` hard-bounced or is blocked: the contact is
    wrong. A copy's bounce is about the AR team's address, never the customer's contact."""
    rows = session.exec(
        select(MessageRecipient.address, MessageRecipient.role).where(
            MessageRecipient.message_id == message.id
        )
    ).all()
    addresses = [a for a, role in rows if role is RecipientRole.TO]
    copies = [a.lower() for a, role in rows if role is not RecipientRole.TO]
    hard = session.exec(
        select(DeliveryEvent.id).where(
            DeliveryEvent.message_id == message.id,
            DeliveryEvent.kind == "bounce",
            col(DeliveryEvent.hard).is_(True),
            sa.func.lower(DeliveryEvent.address).not_in(copies),
        )
    ).first()
    if hard is not None:
        return True
    return bool(active_suppressions(session, [message.tenant_id], addresses, now))


def _tried(session: Session, message: Message) -> set[str]:
    """Every address this same email (kind, document, version, occasion) already went to."""
    siblings = select(Message.id).where(
        Message.tenant_id == message.tenant_id,
        Message.kind == message.kind,
        _same(col(Message.customer_id), message.customer_id),
        _same(col(Message.invoice_id), message.invoice_id),
        _same(col(Message.document_version), message.document_version),
        _same(col(Message.occasion), message.occasion),
    )
    rows = session.exec(
        select(MessageRecipient.address).where(col(MessageRecipient.message_id).in_(siblings))
    ).all()
    return {normal(a) for a in rows} | {
        normal(a)
        for a in session.exec(
            select(MessageRecipient.address).where(MessageRecipient.message_id == message.id)
        )
    }


def _same(column: Any, value: object) -> Any:
    """``column = value``, where NULL equals NULL (a customer-level email has no invoice)."""
    return column.is_(None) if value is None else column == value


def _all_contacts(session: Session, customer_id: int, now: datetime) -> list[Contact]:
    """Every contact of the customer by role rank, whatever its send_invoices switch, that is
    not suppressed: the fallback reaches the accountant even if only AP gets invoices."""
    everyone = rank_contacts(
        session.exec(select(Contact).where(Contact.customer_id == customer_id)).all()
    )
    blocked = {
        a
        for _, a in active_suppressions(
            session, {c.tenant_id for c in everyone}, [c.email for c in everyone], now
        )
    }
    return [c for c in everyone if normal(c.email) not in blocked]


def _last_bounced(session: Session, thread: Thread) -> Message | None:
    """The newest message on the thread's document with a bounce or complaint recorded
    against it; on a thread paused because a contact shared with another customer was blocked
    (nothing came back about its own emails), its newest message."""
    messages = thread_messages(session, thread)
    for message in reversed(messages):
        hit = session.exec(
            select(DeliveryEvent.id).where(
                DeliveryEvent.message_id == message.id,
                col(DeliveryEvent.kind).in_((Kind.BOUNCE.value, Kind.COMPLAINT.value)),
            )
        ).first()
        if hit is not None:
            return message
    if thread.task == FIX_CONTACT and messages:
        return messages[-1]
    return None


def _resends(session: Session, thread: Thread) -> int:
    return sum(1 for m in thread_messages(session, thread) if " resend " in (m.occasion or ""))


def copy_request(
    message: Message, recipients: list[str], *, occasion: str | None, manual: bool = False
) -> EnqueueRequest:
    """The same email (its frozen context, document and version) to other recipients: the
    recipients are part of the idempotency key, so each copy is queued once."""
    return EnqueueRequest(
        tenant_id=message.tenant_id,
        kind=message.kind,
        recipients=recipients,
        context=dict(message.context),
        document=document_key(message),
        version=message.document_version,
        customer_id=message.customer_id,
        invoice_id=message.invoice_id,
        manual=manual or message.manual,
        occasion=occasion,
    )
