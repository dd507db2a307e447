"""SERVICE: bounce reviews, the task beside a hard verdict that rested on weak evidence.

bounce/evidence.py decides when a hard bounce's evidence is too weak to suppress on: the event
is recorded with an open review, counted as soft, and waits for a person to suppress the
address or dismiss the task. Open reviews are what puts such a thread in front of someone.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from bounce.threads import thread_messages
from mailer.inbox_models import DeliveryEvent, Thread
from mailer.outbound.models import Message

# A review is open from the moment the event is recorded (bounce/delivery_events.py) until a
# person closes it as one of REVIEW_CLOSED.
REVIEW_OPEN = "open"
REVIEW_CLOSED = ("suppressed", "dismissed")


def open_reviews(
    session: Session, thread: Thread, *, messages: list[Message] | None = None
) -> list[DeliveryEvent]:
    """The thread's bounce reviews still open, oldest first: while any is, it needs a person."""
    ids = [m.id for m in (thread_messages(session, thread) if messages is None else messages)]
    return list(
        session.exec(
            select(DeliveryEvent)
            .where(col(DeliveryEvent.message_id).in_(ids), DeliveryEvent.review == REVIEW_OPEN)
            .order_by(col(DeliveryEvent.created_at), col(DeliveryEvent.id))
        ).all()
    )


def close_reviews(session: Session, thread: Thread, address: str, *, outcome: str) -> int:
    """Close the thread's open reviews about ``address`` as ``outcome`` (suppressed or
    dismissed); returns how many were open. The caller notes who did it and commits."""
    if outcome not in REVIEW_CLOSED:
        raise ValueError(f"a review closes as one of {', '.join(REVIEW_CLOSED)}")
    wanted = address.strip().lower()
    closed = 0
    for event in open_reviews(session, thread):
        if event.address == wanted:
            event.review = outcome
            session.add(event)
            closed += 1
    session.flush()
    return closed
