"""Pre-flight: right before a message goes to the transport, is it still right to send?

Between queueing and sending, a payment can arrive, a dispute can be logged, the invoice can be
edited, an address can bounce. The outbox calls :meth:`Preflight.check` in the transaction that
claims the messages, so the decision and the claim are one write: a skipped message is never
sent, and its reason is on the row for ``dunmail outbox``. It also holds back, until the
customer's send window opens, a windowed email that would otherwise go outside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from mailer.content.kinds import PAYMENT_REQUESTS, REMINDERS, Kind, waits_for_window
from mailer.errors import MailerError
from mailer.ledger.models import Customer, Invoice, InvoiceStatus
from mailer.outbound.models import Message, MessageRecipient, RecipientRole, RecipientStatus
from mailer.outbound.suppression import active as active_suppressions
from mailer.outbound.suppression import normal
from scheduler.cadence import Action, ActiveHold, chase_blocker
from scheduler.invoice_state import active_holds, customers_by_id, facts_of
from scheduler.rules import RulesBook
from scheduler.triggers import Triggers


class Preflight:
    """Re-reads invoice, customer, holds and suppressions for claimed messages."""

    def __init__(self, *, rules: RulesBook, triggers: Triggers) -> None:
        """``rules`` says what a customer's cadence and send window are now; ``triggers``
        queues a changed invoice's email again for its new version."""
        self._rules = rules
        self._triggers = triggers

    def check(
        self,
        session: Session,
        messages: Sequence[Message],
        recipients: Mapping[int, list[MessageRecipient]],
        now: datetime,
    ) -> dict[int, str]:
        """Message id -> skip reason for those that must not go; suppressed recipients of the
        others are marked rejected here, so only the rest are sent to."""
        skips: dict[int, str] = {}
        suppressed = _suppressed(session, messages, recipients, now)
        invoices = _invoices(session, messages)
        customers = customers_by_id(session, {i.customer_id for i in invoices.values()})
        holds = active_holds(session, invoices.values(), now)
        for message in messages:
            mid = message.id or 0
            owed = [
                r
                for r in recipients.get(mid, [])
                if r.status in (RecipientStatus.PENDING, RecipientStatus.DEFERRED)
            ]
            blocked = {
                r.address: suppressed[(message.tenant_id, normal(r.address))]
                for r in owed
                if (message.tenant_id, normal(r.address)) in suppressed
            }
            # The AR team's copies (mailer/outbound/copies.py) neither send a message whose
            # customers are all blocked nor keep one from going: a blocked copy is skipped.
            owed_to = [r.address for r in owed if r.role is RecipientRole.TO]
            if owed_to and all(a in blocked for a in owed_to):
                skips[mid] = "recipient suppressed: " + "; ".join(
                    f"{a} ({blocked[a]})" for a in sorted(owed_to)
                )
                continue
            for r in owed:
                if r.address in blocked:
                    r.status = RecipientStatus.REJECTED
                    r.response = f"suppressed: {blocked[r.address]}"[:1000]
                    r.updated_at = now
            if message.kind == Kind.OVERDUE_SUMMARY:
                reason = self._summary_reason(session, message, now)
                if reason is not None:
                    skips[mid] = reason
                continue
            invoice = invoices.get(message.invoice_id or 0)
            if invoice is None or message.kind not in PAYMENT_REQUESTS:
                continue
            reason = self._invoice_reason(session, message, invoice, customers, holds, now)
            if reason is not None:
                skips[mid] = reason
        return skips

    def window(
        self, session: Session, messages: Sequence[Message], now: datetime
    ) -> dict[int, datetime]:
        """Message id -> when its customer's send window next opens, for the windowed emails
        (``KindSpec.windowed``: reminders, statements, billed-soon) that are outside it now.

        The passes queue these only inside the window, but the window can close before the
        message is delivered: the engine stopped in between, a 4xx retry fell at 19:00, the
        rate limit held it. Checked here, at the claim, it holds at the moment of sending,
        whatever happened between. A message a person sent by hand is not held back.
        """
        windowed = [
            m
            for m in messages
            if waits_for_window(m.kind) and not m.manual and m.customer_id is not None
        ]
        if not windowed:
            return {}
        customers = customers_by_id(session, {m.customer_id or 0 for m in windowed})
        waits: dict[int, datetime] = {}
        for message in windowed:
            customer = customers.get(message.customer_id or 0)
            if customer is None:
                continue
            opens = self._rules.rules_for(message.tenant_id, customer).calendar.next_open(now)
            if opens > now:
                waits[message.id or 0] = opens
        return waits

    def _invoice_reason(
        self,
        session: Session,
        message: Message,
        invoice: Invoice,
        customers: Mapping[int, Customer],
        holds: Mapping[int, ActiveHold],
        now: datetime,
    ) -> str | None:
        if invoice.status in (InvoiceStatus.PAID, InvoiceStatus.VOID, InvoiceStatus.DRAFT):
            return f"invoice {invoice.number} is {invoice.status.value}"
        if message.document_version is not None and invoice.version > message.document_version:
            return self._replace(session, message, invoice, customers, now)
        if message.manual or message.kind not in REMINDERS:
            return None  # a person asked for it; holds and switches are for the machine
        customer = customers[invoice.customer_id]
        hold = holds.get(invoice.id or 0)
        facts = facts_of(invoice, customer, hold)
        return chase_blocker(facts, self._rules.rules_for(invoice.tenant_id, customer), now)

    def _summary_reason(self, session: Session, message: Message, now: datetime) -> str | None:
        """A customer-level reminder: is anything on it still open, and may we chase?"""
        numbers = [i["number"] for i in message.context.get("overdue", {}).get("items", [])]
        still_open = session.exec(
            select(Invoice).where(
                col(Invoice.tenant_id) == message.tenant_id,
                col(Invoice.number).in_(numbers),
                col(Invoice.status) == InvoiceStatus.OPEN,
                col(Invoice.balance_minor) > 0,
            )
        ).all()
        if not still_open:
            return f"every invoice on it is settled ({', '.join(numbers)})"
        customer = session.get(Customer, message.customer_id)
        if message.manual or customer is None:
            return None
        holds = active_holds(session, still_open, now)
        for invoice in still_open:
            facts = facts_of(invoice, customer, holds.get(invoice.id or 0))
            reason = chase_blocker(facts, self._rules.rules_for(invoice.tenant_id, customer), now)
            if reason is None:
                return None  # at least one invoice on it may still be chased
        return reason

    def _replace(
        self,
        session: Session,
        message: Message,
        invoice: Invoice,
        customers: Mapping[int, Customer],
        now: datetime,
    ) -> str:
        """The invoice changed after this email was queued: queue the same occasion again for
        the new version (unless a person queued it: they decide whether to send it again)."""
        why = (
            f"invoice {invoice.number} changed (v{message.document_version} -> v{invoice.version})"
        )
        if message.manual or message.occasion is None:
            return f"{why}: send it again to send the current version"
        try:
            with session.begin_nested():
                self._triggers.enqueue_scheduled(
                    session,
                    invoice,
                    customers[invoice.customer_id],
                    Action(message.kind, message.occasion),
                    now,
                )
        except MailerError as exc:
            return f"{why}; the new version could not be queued: {exc}"
        return f"{why}: replaced by the new version's email"


def _suppressed(
    session: Session,
    messages: Sequence[Message],
    recipients: Mapping[int, list[MessageRecipient]],
    now: datetime,
) -> dict[tuple[int, str], str]:
    rows = active_suppressions(
        session,
        {m.tenant_id for m in messages},
        {r.address for rows in recipients.values() for r in rows},
        now,
    )
    return {key: row.reason for key, row in rows.items()}


def _invoices(session: Session, messages: Sequence[Message]) -> dict[int, Invoice]:
    ids = [m.invoice_id for m in messages if m.invoice_id is not None]
    if not ids:
        return {}
    # Pre-flight reads an invoice's state, never its lines: decoding every line list of a
    # batch was most of a claim's cost.
    lines: Any = Invoice.lines  # an instrumented attribute at run time
    query = select(Invoice).where(col(Invoice.id).in_(ids)).options(defer(lines))
    return {i.id or 0: i for i in session.exec(query).all()}
