"""SERVICE: what a proved report records about each recipient it names.

Called by bounce/ingest.py only for the recipients a VERP token proves (bounce/authority.py):
the recipient's delivery event (once per inbound message and address), its webhook, the
recipient row's final state, and the suppression the evidence calls for (bounce/evidence.py
decides; mailer/outbound/suppression.py blocks). A hard verdict alone never blocks: weak
evidence opens a review (bounce/review.py) and counts as soft.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, select

from bounce import Kind, Recipient, Report
from bounce.evidence import Decision, decide_suppression
from bounce.review import REVIEW_OPEN
from mailer.inbox_models import DeliveryEvent, InboundMail
from mailer.outbound.models import Message, MessageRecipient, RecipientStatus
from mailer.outbound.suppression import (
    SoftBouncePolicy,
    SuppressionKind,
    soft_bounces_reached,
    suppress,
)

WEBHOOK_EVENTS = {Kind.BOUNCE: "message.bounced", Kind.COMPLAINT: "message.complained"}


@dataclass(frozen=True)
class Recorded:
    """What recording one recipient did."""

    event: bool  # a delivery event is new (not recorded by an earlier run)
    review: bool  # ... and it opened a review
    suppressed: bool  # the address is newly blocked


def record_recipient(
    session: Session,
    inbound: InboundMail,
    message: Message,
    row: MessageRecipient,
    recipient: Recipient,
    *,
    kind: Kind,
    policy: SoftBouncePolicy,
    thread_id: int | None,
    emit: Callable[..., object] | None,
    now: datetime,
) -> Recorded:
    """Record what ``inbound`` (of ``kind``) says about ``recipient`` of ``message`` (its
    ``row``): the event, its webhook (given ``emit``), a bounce's final state, the suppression.

    Idempotent: a second run over the same report adds no event and emits nothing.
    """
    # Suppress now, review or neither: the classifier's hard verdict alone never blocks.
    decision = decide_suppression(kind, recipient)
    added = _record_event(session, inbound, message, kind, recipient, decision, now)
    if added and emit is not None and kind in WEBHOOK_EVENTS:
        emit(
            session,
            tenant_id=message.tenant_id,
            event=WEBHOOK_EVENTS[kind],
            data=_event_data(message, thread_id, recipient, decision),
            now=now,
        )
    if kind is Kind.BOUNCE:
        _mark_bounced(row, recipient, now)
        session.add(row)
    session.flush()
    suppressed = _suppress_for(session, message.tenant_id, kind, recipient, decision, policy, now)
    return Recorded(
        event=bool(added), review=bool(added and decision.review), suppressed=suppressed
    )


def recipients_of(report: Report, sent_to: dict[str, str]) -> list[Recipient]:
    """The report's recipients; an ARF complaint (RFC 5965) often redacts its recipient, so a
    complaint about a single-recipient email is taken to be about that recipient."""
    if report.recipients or report.kind is not Kind.COMPLAINT or len(sent_to) != 1:
        return list(report.recipients)
    (address,) = sent_to.values()
    return [
        Recipient(
            address=address,
            status=None,
            reply_code=None,
            reason="feedback",
            hard=False,
            action=None,
            diagnostic=report.feedback_type or "",
        )
    ]


def _event_data(
    message: Message, thread_id: int | None, recipient: Recipient, decision: Decision
) -> dict[str, object]:
    """A bounce or complaint webhook's ``data``: the email, the address and the reason;
    ``hard`` only when the evidence suppressed the address, ``review`` when a person decides."""
    return {
        "message": message.uid,
        "kind": message.kind,
        "thread": thread_id,
        "address": recipient.address.lower(),
        "status": recipient.status,
        "reason": recipient.reason,
        "hard": decision.hard,
        "review": decision.review,
        "diagnostic": recipient.diagnostic[:300],
    }


def _suppress_for(
    session: Session,
    tenant_id: int,
    kind: Kind,
    recipient: Recipient,
    decision: Decision,
    policy: SoftBouncePolicy,
    now: datetime,
) -> bool:
    """Block the address if the report calls for it; returns whether it is newly blocked.

    Hard bounces on unambiguous evidence (bounce/evidence.py) and complaints block until
    unblocked. A soft bounce (a full mailbox, a server refusing for now, or a hard verdict on
    weak evidence, which also waits for a person's review) blocks only once it repeats
    ``policy.limit`` times within the window, and then for ``policy.period``; a delay notice
    is not a failure and blocks nothing.
    """
    status = f" {recipient.status}" if recipient.status else ""
    until = None
    if kind is Kind.COMPLAINT:
        block, reason = SuppressionKind.COMPLAINT, "complaint"
    elif kind is not Kind.BOUNCE:
        return False
    elif decision.hard:
        block, reason = SuppressionKind.HARD, f"hard bounce{status}: {recipient.reason}"
    else:
        count = soft_bounces_reached(
            session, tenant_id=tenant_id, address=recipient.address, policy=policy, now=now
        )
        if count is None:
            return False
        block, until = SuppressionKind.SOFT, now + policy.period
        reason = f"{count} soft bounces in {policy.window.days} days{status}: {recipient.reason}"
        if decision.review:
            reason += " (a hard verdict on weak evidence, under review)"
    return suppress(
        session,
        tenant_id=tenant_id,
        address=recipient.address,
        kind=block,
        reason=reason,
        now=now,
        until=until,
    )


def _mark_bounced(row: MessageRecipient, recipient: Recipient, now: datetime) -> None:
    """The server accepted it, then the mail came back: for the outbox, a final failure."""
    status = f" {recipient.status}" if recipient.status else ""
    row.status = RecipientStatus.BOUNCED
    row.response = f"bounced{status}: {recipient.reason}: {recipient.diagnostic}"[:1000]
    row.updated_at = now


def _record_event(
    session: Session,
    inbound: InboundMail,
    message: Message,
    kind: Kind,
    recipient: Recipient,
    decision: Decision,
    now: datetime,
) -> int:
    existing = session.exec(
        select(DeliveryEvent).where(
            DeliveryEvent.inbound_id == inbound.id,
            DeliveryEvent.address == recipient.address.lower(),
        )
    ).first()
    if existing is not None:
        return 0
    session.add(
        DeliveryEvent(
            inbound_id=inbound.id or 0,
            message_id=message.id or 0,
            address=recipient.address.lower()[:320],
            kind=kind.value,
            status=(recipient.status or None) and recipient.status[:20],
            reply_code=recipient.reply_code,
            reason=recipient.reason[:63],
            hard=decision.hard,
            diagnostic=recipient.diagnostic[:1000],
            created_at=now,
            review=REVIEW_OPEN if decision.review else None,
            evidence=decision.evidence.as_dict(),
        )
    )
    return 1
