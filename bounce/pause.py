"""SERVICE: the one pause when returned mail leaves a customer nobody can be sent to.

Every return that blocks an address (a hard bounce, repeated soft bounces, a complaint, a
person's ``dunmail suppressions add``) ends in the same check, :func:`pause_unreachable`: each
customer of the tenant who has that address and no other reachable contact is paused the same
way, so no kind of return can leave a customer that nobody can be sent to without a hold. The
pause is a ``contact_bounced`` hold (a louder reminder to the same dead mailbox helps nobody)
and a ``fix_contact`` task on the thread, until a person corrects the contact and runs
``dunmail inbox resend`` (bounce/recovery.py), which lifts the holds :func:`bounce_holds` finds.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bounce.threads import add_note, reopen_thread
from mailer.inbox_models import Thread
from mailer.ledger import holds
from mailer.ledger.models import Contact, Hold, HoldReason
from mailer.ledger.queries import contacts_by_customer
from mailer.outbound.models import Message
from mailer.outbound.suppression import normal

FIX_CONTACT = "fix_contact"
# The hold's author, so a resend lifts exactly the holds bounces placed.
BOUNCE_AUTHOR = "bounce"


def pause_unreachable(
    session: Session,
    *,
    tenant_id: int,
    addresses: Iterable[str],
    why: str,
    now: datetime,
    skip: int | None = None,
) -> list[int]:
    """Pause every customer of the tenant with a contact at one of ``addresses`` (just blocked)
    that no contact can be reached at any more: a ``contact_bounced`` hold and a
    ``fix_contact`` task on the thread of its latest email. Returns the customers paused now.
    One address is often the contact of several customers (a bookkeeper's shared mailbox), and
    the suppression blocks it for all of them. The caller commits."""
    wanted = sorted({normal(a) for a in addresses})
    if not wanted:
        return []
    customers = session.exec(
        select(Contact.customer_id)
        .where(
            Contact.tenant_id == tenant_id,
            sa.func.lower(col(Contact.email)).in_(wanted),
        )
        .distinct()
    ).all()
    paused = []
    for customer_id in sorted(set(customers) - {skip}):
        latest = session.exec(
            select(Message)
            .where(Message.tenant_id == tenant_id, Message.customer_id == customer_id)
            .order_by(col(Message.created_at).desc(), col(Message.id).desc())
        ).first()
        thread = reopen_thread(session, latest, now=now) if latest is not None else None
        blocked = ", ".join(wanted)
        if pause_if_unreachable(
            session,
            tenant_id=tenant_id,
            customer_id=customer_id,
            thread=thread,
            why=f"{blocked} {why}",
            now=now,
        ):
            paused.append(customer_id)
    return paused


def unreachable(session: Session, customer_id: int, now: datetime) -> bool:
    """Whether the customer has contacts for AR email and every one of them (and every
    stand-in by role) is blocked: nobody can be sent to until a person fixes the contact. A
    customer whose contacts all opted out of AR email is not unreachable: it asked for none."""
    if contacts_by_customer(session, [customer_id], now=now)[customer_id]:
        return False
    return bool(contacts_by_customer(session, [customer_id])[customer_id])


def pause_if_unreachable(
    session: Session,
    *,
    tenant_id: int,
    customer_id: int,
    thread: Thread | None,
    why: str,
    now: datetime,
) -> bool:
    """Pause the customer if :func:`unreachable`; returns whether it did."""
    if not unreachable(session, customer_id, now):
        return False
    pause(
        session,
        tenant_id=tenant_id,
        customer_id=customer_id,
        thread=thread,
        why=f"{why} and no contact of the customer can be reached",
        now=now,
    )
    return True


def pause(
    session: Session,
    *,
    tenant_id: int,
    customer_id: int,
    thread: Thread | None,
    why: str,
    now: datetime,
) -> None:
    """The one pause: a ``contact_bounced`` hold (once) and a ``fix_contact`` task (once)."""
    if not bounce_holds(session, tenant_id=tenant_id, customer_id=customer_id):
        holds.place(
            session,
            tenant_id=tenant_id,
            customer_id=customer_id,
            reason=HoldReason.CONTACT_BOUNCED,
            note=f"{why}: correct the contact, then dunmail inbox resend"[:500],
            by=BOUNCE_AUTHOR,
            now=now,
        )
    if thread is not None and thread.task != FIX_CONTACT:
        thread.task = FIX_CONTACT
        add_note(
            session,
            thread,
            text=f"{why}: chasing is paused until the contact is fixed and the email resent",
            author=BOUNCE_AUTHOR,
            now=now,
        )


def bounce_holds(session: Session, *, tenant_id: int, customer_id: int) -> list[Hold]:
    """The customer's ``contact_bounced`` holds not lifted yet: what a pause placed and a
    resend lifts."""
    return list(
        session.exec(
            select(Hold).where(
                Hold.tenant_id == tenant_id,
                Hold.customer_id == customer_id,
                Hold.reason == HoldReason.CONTACT_BOUNCED,
                col(Hold.lifted_at).is_(None),
            )
        ).all()
    )
