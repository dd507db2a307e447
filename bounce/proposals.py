"""SERVICE: a customer's reply read (bounce/triage.py) and the clerk's next step proposed,
stored with the reply; accepting it places the hold, sets the task or changes the contact.

Nothing changes without a clerk: the proposal waits in the thread for one click. The only
exception is the tenant's opt-in ``auto_promise_holds``, under which a promise to pay holds
its invoice by itself (the proposal shows it was placed automatically). The action taken is
noted on the thread, so the timeline says who did what and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from bounce.reply import from_and_subject, reply_text
from bounce.report import Kind
from bounce.threads import add_note, document_key
from bounce.triage import Intent, Verdict, triage_reply
from mailer.address import parse_addr_spec
from mailer.errors import MailerError, NotFoundError
from mailer.inbox_models import (
    InboundMail,
    InboundStatus,
    ProposalStatus,
    ReplyProposal,
    Thread,
)
from mailer.ledger import holds
from mailer.ledger.contacts import replace_contact_email
from mailer.ledger.models import Customer, HoldReason
from mailer.outbound.models import Message, MessageRecipient, RecipientRole

AUTO = "auto:promise_to_pay"  # who placed a hold the tenant's opt-in placed
_ACTIONABLE = (Intent.ALREADY_PAID, Intent.DISPUTE, Intent.PROMISE_TO_PAY, Intent.WRONG_CONTACT)
# What the clerk is asked to do next on the thread, by intent.
_TASKS = {Intent.ALREADY_PAID: "check_payment", Intent.DISPUTE: "resolve_dispute"}


@dataclass(frozen=True)
class ReplyPolicy:
    """A tenant's ``[tenants.<slug>.replies]``, as this module needs it."""

    auto_promise_holds: bool = False
    grace: timedelta = timedelta(days=3)
    default_wait: timedelta = timedelta(days=7)  # a promise that names no day
    time_zone: str = "UTC"


def propose_for_reply(
    session: Session, inbound: InboundMail, *, policy: ReplyPolicy, now: datetime
) -> ReplyProposal | None:
    """Read a person's reply matched to one of our emails and store what it proposes (once per
    reply: a second call returns the first proposal). None for anything but a person's reply.
    Under ``policy.auto_promise_holds`` a promise to pay is accepted at once. The caller
    commits."""
    if inbound.kind != Kind.NOT_BOUNCE.value or inbound.message_id is None:
        return None
    existing = session.exec(
        select(ReplyProposal).where(ReplyProposal.inbound_id == inbound.id)
    ).first()
    if existing is not None:
        return existing
    message = session.get(Message, inbound.message_id)
    if message is None:
        return None
    thread = session.exec(
        select(Thread).where(
            Thread.tenant_id == message.tenant_id, Thread.document == document_key(message)
        )
    ).first()
    if thread is None or thread.id is None:
        return None
    sender = _sender(inbound.raw)
    known = frozenset(_recipients(session, message) | ({sender} if sender else set()))
    written_on = _written_on(inbound, policy.time_zone)
    customer = session.get(Customer, thread.customer_id) if thread.customer_id else None
    verdict = triage_reply(
        reply_text(inbound.raw),
        written_on=written_on,
        known=known,
        month_first=month_first(customer.locale if customer else None),
    )
    proposal = ReplyProposal(
        tenant_id=message.tenant_id,
        thread_id=thread.id,
        inbound_id=inbound.id or 0,
        intent=verdict.intent.value,
        language=verdict.language,
        promised_on=verdict.promised_on,
        new_address=verdict.new_address,
        evidence=verdict.evidence[:300],
        hold_until=_hold_until(verdict, written_on, policy),
        status=ProposalStatus.PROPOSED if verdict.intent in _ACTIONABLE else ProposalStatus.NONE,
        created_at=now,
    )
    session.add(proposal)
    session.flush()
    if verdict.intent is Intent.PROMISE_TO_PAY and policy.auto_promise_holds:
        accept_proposal(session, proposal, by=AUTO, now=now)
    return proposal


def unproposed_replies(engine: Engine) -> list[int]:
    """The ids of matched persons' replies that have no proposal yet, oldest first."""
    with Session(engine) as session:
        query = (
            select(InboundMail.id)
            .where(
                InboundMail.kind == Kind.NOT_BOUNCE.value,
                InboundMail.status == InboundStatus.PROCESSED,
                col(InboundMail.id).not_in(select(ReplyProposal.inbound_id)),
            )
            .order_by(col(InboundMail.id))
        )
        return [i for i in session.exec(query).all() if i is not None]


def accept_proposal(session: Session, proposal: ReplyProposal, *, by: str, now: datetime) -> str:
    """Do what ``proposal`` proposes, as ``by``; returns what was done, in the clerk's words.
    MailerError when it was decided already or cannot be done (a wrong contact that names
    no new address, a thread about no customer). The caller commits."""
    if proposal.status is not ProposalStatus.PROPOSED:
        raise MailerError(f"proposal {proposal.id} is {proposal.status.value}, not open")
    thread = session.get(Thread, proposal.thread_id)
    if thread is None or thread.customer_id is None:
        raise MailerError(f"thread {proposal.thread_id} belongs to no customer")
    intent = Intent(proposal.intent)
    if intent is Intent.WRONG_CONTACT:
        done = _change_contact(session, proposal, thread, by=by, now=now)
    else:
        done = _hold(session, proposal, thread, intent, by=by, now=now)
    proposal.status = ProposalStatus.AUTO if by == AUTO else ProposalStatus.ACCEPTED
    proposal.decided_by, proposal.decided_at = by[:200], now
    session.add(proposal)
    add_note(session, thread, text=done, author=by, now=now)
    return done


def _hold(
    session: Session,
    proposal: ReplyProposal,
    thread: Thread,
    intent: Intent,
    *,
    by: str,
    now: datetime,
) -> str:
    """The hold (and task) an already-paid, dispute or promise reply calls for."""
    kind, _, ref = thread.document.partition(":")
    invoice_id = int(ref) if kind == "invoice" and ref.isdigit() else None
    if intent is Intent.PROMISE_TO_PAY:
        reason, ends_at = HoldReason.PROMISE_TO_PAY, proposal.hold_until
        said = f"promised {proposal.promised_on.isoformat()}" if proposal.promised_on else "no day"
        why = f"customer promised to pay ({said}): held until {_day(ends_at)}"
    elif intent is Intent.DISPUTE:
        reason, ends_at, why = HoldReason.DISPUTE, None, "customer disputes the invoice"
    else:
        reason, ends_at, why = HoldReason.MANUAL, None, "customer says it is paid: check payment"
    if ends_at is not None and ends_at <= now:
        raise MailerError(f"the promised day has passed ({_day(ends_at)}): place a hold by hand")
    hold = holds.place(
        session,
        tenant_id=thread.tenant_id,
        customer_id=thread.customer_id or 0,
        invoice_id=invoice_id,
        reason=reason,
        note=f"{why}; reply: {proposal.evidence}"[:1000],
        by=by[:200],
        now=now,
        ends_at=ends_at,
    )
    session.flush()
    proposal.hold_id = hold.id
    task = _TASKS.get(intent)
    if task is not None:
        thread.task, thread.updated_at = task, now
        session.add(thread)
    return f"hold {hold.id} placed ({reason.value}): {why}" + (f"; task {task}" if task else "")


def _change_contact(
    session: Session, proposal: ReplyProposal, thread: Thread, *, by: str, now: datetime
) -> str:
    """Replace the contact the reply came from (else the email's only recipient) with the
    address the customer gave."""
    if not proposal.new_address:
        raise MailerError("the reply names no new address: correct the contact by hand")
    inbound = session.get(InboundMail, proposal.inbound_id)
    message = session.get(Message, inbound.message_id) if inbound and inbound.message_id else None
    if inbound is None or message is None:
        raise NotFoundError(f"the reply of proposal {proposal.id} is gone")
    recipients = _recipients(session, message)
    sender = _sender(inbound.raw)
    if sender in recipients:
        old = sender
    elif len(recipients) == 1:
        (old,) = recipients
    else:
        raise MailerError(
            f"the email went to {len(recipients)} contacts and the reply came from none of "
            "them: correct the contact by hand"
        )
    row = replace_contact_email(
        session,
        tenant_id=thread.tenant_id,
        customer_id=thread.customer_id or 0,
        old=old,
        new=proposal.new_address,
        now=now,
        by=by,
    )
    return f"contact corrected from the reply: {old} -> {row.email}"


def thread_proposals(session: Session, thread: Thread) -> list[dict[str, Any]]:
    """The proposals of a thread's replies, oldest first, as the thread's page shows them."""
    rows = session.exec(
        select(ReplyProposal)
        .where(ReplyProposal.thread_id == thread.id)
        .order_by(col(ReplyProposal.created_at), col(ReplyProposal.id))
    ).all()
    return [
        {
            "id": p.id,
            "inbound_id": p.inbound_id,
            "intent": p.intent,
            "language": p.language,
            "promised_on": p.promised_on.isoformat() if p.promised_on else None,
            "new_address": p.new_address,
            "evidence": p.evidence,
            "hold_until": p.hold_until.isoformat() if p.hold_until else None,
            "status": p.status.value,
            "hold_id": p.hold_id,
            "decided_by": p.decided_by,
            "action": describe(p),
        }
        for p in rows
    ]


def describe(proposal: ReplyProposal) -> str:
    """The proposed action in the clerk's words."""
    intent = Intent(proposal.intent)
    if intent is Intent.ALREADY_PAID:
        return "hold the invoice and check the payment"
    if intent is Intent.DISPUTE:
        return "hold the invoice (dispute) and resolve the dispute"
    if intent is Intent.PROMISE_TO_PAY:
        return f"hold the invoice until {_day(proposal.hold_until)} (promise to pay + grace)"
    if intent is Intent.WRONG_CONTACT:
        if proposal.new_address:
            return f"change the contact to {proposal.new_address}"
        return "the reply says the contact is wrong but names no new one: fix it by hand"
    return "nothing to do in one click"


def latest_open(session: Session, thread: Thread) -> ReplyProposal:
    """The thread's newest proposal still waiting for a clerk; MailerError when none is."""
    found = session.exec(
        select(ReplyProposal)
        .where(
            ReplyProposal.thread_id == thread.id,
            ReplyProposal.status == ProposalStatus.PROPOSED,
        )
        .order_by(col(ReplyProposal.created_at).desc(), col(ReplyProposal.id).desc())
    ).first()
    if found is None:
        raise MailerError(f"thread {thread.id} has no proposal waiting for a clerk")
    return found


def month_first(locale: str | None) -> bool:
    """Whether a customer in ``locale`` writes "02/03" for 3 February: its CLDR short date
    (Babel) starts with the month. Only a locale with a territory says so (CLDR's bare "en"
    is American; a customer filed as "en" may be anywhere), else day first."""
    if not locale or not re.search(r"[_-][A-Za-z]{2}$", locale.strip()):
        return False
    try:
        pattern = Locale.parse(locale.strip().replace("-", "_")).date_formats["short"].pattern
    except (ValueError, UnknownLocaleError):
        return False
    return str(pattern).lstrip().startswith("M")


def _hold_until(verdict: Verdict, written_on: date, policy: ReplyPolicy) -> datetime | None:
    """A promise's hold end: the promised day (else ``default_wait`` after the reply) plus
    the grace, at midnight in the tenant's time zone."""
    if verdict.intent is not Intent.PROMISE_TO_PAY:
        return None
    day = verdict.promised_on or written_on + policy.default_wait
    local = datetime.combine(day + policy.grace, time(0), tzinfo=ZoneInfo(policy.time_zone))
    return local.astimezone(ZoneInfo("UTC"))


def _written_on(inbound: InboundMail, time_zone: str) -> date:
    """The day the customer wrote: the reply's Date in its own offset, else its arrival."""
    value = BytesHeaderParser().parsebytes(inbound.raw).get("Date")
    try:
        return parsedate_to_datetime(str(value)).date()
    except (TypeError, ValueError, IndexError):
        return inbound.received_at.astimezone(ZoneInfo(time_zone)).date()


def _sender(raw: bytes) -> str | None:
    sender, _ = from_and_subject(raw)
    address = sender.rpartition("<")[2].rstrip(">").strip() if "<" in sender else sender
    try:
        return parse_addr_spec(address).lower()
    except MailerError:
        return None


def _recipients(session: Session, message: Message) -> set[str]:
    """The customer's addresses the email went to (not the tenant's own Cc/Bcc copies)."""
    return {
        r.address.lower()
        for r in session.exec(
            select(MessageRecipient).where(
                MessageRecipient.message_id == message.id,
                MessageRecipient.role == RecipientRole.TO,
            )
        )
    }


def _day(at: datetime | None) -> str:
    return at.date().isoformat() if at else "-"
