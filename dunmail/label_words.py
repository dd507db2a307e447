"""PURE: the English words of every code a clerk reads, one table per concept (dunmail/labels.py
translates them). Each ``N_("...")`` is a message id of the ``clerk`` gettext domain.

Keys are the stored codes: the Kind enum's values, the reasons bounce/classify.py and
bounce/decode.py emit (Sisimai's names), and the states of the outbox, threads and suppressions.
tests/test_labels.py iterates the enums and the classifier's tables, so a new kind, reason or
state without words here fails there.
"""

from __future__ import annotations

from bounce.report import Kind as EventKind
from mailer.content.kinds import Kind
from mailer.inbox_models import ThreadStatus
from mailer.ledger.models import HoldReason, InvoiceStatus
from mailer.outbound.models import AttemptOutcome, MessageStatus, RecipientStatus
from mailer.outbound.suppression import SuppressionKind


def N_(message: str) -> str:  # noqa: N802 - gettext's marker for "translate this later"
    """Mark ``message`` for extraction into clerk.pot; it is translated when shown."""
    return message


KINDS: dict[str, str] = {
    Kind.NEW_INVOICE: N_("New invoice"),
    Kind.INVOICE_REMINDER: N_("Reminder before the due date"),
    Kind.LATE_PAYMENT_REMINDER: N_("Overdue reminder"),
    Kind.OVERDUE_SUMMARY: N_("Summary of overdue invoices"),
    Kind.THANK_YOU: N_("Thank you for paying"),
    Kind.PAYMENT_PLAN: N_("Payment plan"),
    Kind.CREDIT_NOTE: N_("Credit note"),
    Kind.PAYMENT_RECEIPT: N_("Payment receipt"),
    Kind.REFUND: N_("Refund"),
    Kind.AUTOPAY_FAILED: N_("Automatic payment failed"),
    Kind.STATEMENT: N_("Account statement"),
    Kind.ESTIMATE: N_("Estimate"),
    Kind.SUBSCRIPTION_CONFIRMATION: N_("Subscription confirmed"),
    Kind.SUBSCRIPTION_BILLED_SOON: N_("Subscription renews soon"),
    Kind.SUBSCRIPTION_CANCELLED: N_("Subscription cancelled"),
    Kind.CONTACT_CONFIRMATION: N_("Confirm a new contact address"),
    Kind.CONTACTS_CHANGED: N_("Notice: contacts changed"),
    Kind.QUERY_ANSWER: N_("Answer to a query"),
}

# Sisimai's reasons (bounce/status_codes.py, reply_codes.py, phrases.py, classify.py) and the
# two bounce/decode.py gives to complaints and auto-replies.
REASONS: dict[str, str] = {
    "userunknown": N_("address does not exist"),
    "hostunknown": N_("the domain does not exist"),
    "hasmoved": N_("the person has moved to another address"),
    "mailboxfull": N_("mailbox full"),
    "suspend": N_("mailbox suspended or disabled"),
    "notaccept": N_("the domain accepts no mail"),
    "filtered": N_("refused by the recipient's filter"),
    "blocked": N_("our sending server is blocked"),
    "rejected": N_("our sender address was refused"),
    "spamdetected": N_("taken for spam"),
    "virusdetected": N_("taken for a virus"),
    "contenterror": N_("the content was refused"),
    "policyviolation": N_("against the receiver's policy"),
    "securityerror": N_("a security check failed"),
    "authfailure": N_("sender authentication failed (SPF, DKIM, DMARC)"),
    "badreputation": N_("our sending server's reputation is too low"),
    "requireptr": N_("our sending server has no reverse DNS"),
    "norelaying": N_("the server refuses to relay"),
    "mesgtoobig": N_("the email is too large"),
    "exceedlimit": N_("over the recipient's size limit"),
    "speeding": N_("sending too fast: rate limited"),
    "toomanyconn": N_("too many connections"),
    "systemfull": N_("the receiving server is out of space"),
    "systemerror": N_("the receiving server failed"),
    "mailererror": N_("the recipient's mail program failed"),
    "networkerror": N_("network or DNS problem"),
    "failedstarttls": N_("secure connection (TLS) failed"),
    "notcompliantrfc": N_("the email broke a mail standard"),
    "syntaxerror": N_("the server did not understand the command"),
    "expired": N_("gave up after retrying"),
    "onhold": N_("unclear: the answer names no known reason"),
    "undefined": N_("no reason given"),
    "delivered": N_("delivered"),
    "feedback": N_("marked as spam by the recipient"),
    "vacation": N_("automatic reply (away)"),
}

MESSAGE_STATES: dict[str, str] = {
    MessageStatus.QUEUED: N_("waiting to be sent"),
    MessageStatus.DEFERRED: N_("will try again"),
    MessageStatus.SENT: N_("sent"),
    MessageStatus.FAILED: N_("could not be sent"),
    MessageStatus.SKIPPED: N_("not sent (skipped)"),
    MessageStatus.CANCELLED: N_("cancelled"),
}

RECIPIENT_STATES: dict[str, str] = {
    RecipientStatus.PENDING: N_("not tried yet"),
    RecipientStatus.ACCEPTED: N_("accepted"),
    RecipientStatus.DEFERRED: N_("temporarily refused: will try again"),
    RecipientStatus.REJECTED: N_("refused"),
    RecipientStatus.BOUNCED: N_("bounced"),
}

ATTEMPT_OUTCOMES: dict[str, str] = {
    AttemptOutcome.ACCEPTED: N_("accepted"),
    AttemptOutcome.PARTIAL: N_("accepted for some recipients"),
    AttemptOutcome.DEFERRED: N_("temporarily refused: will try again"),
    AttemptOutcome.REJECTED: N_("refused"),
    AttemptOutcome.EXPIRED: N_("gave up after retrying"),
    AttemptOutcome.THROTTLED: N_("held back: sending too fast"),
}

# SMTP reply codes by their first digit (RFC 5321 section 4.2.1).
REPLY_CLASSES: dict[str, str] = {
    "2": N_("accepted by the receiving server"),
    "3": N_("the receiving server wants more"),
    "4": N_("temporarily refused by the receiving server"),
    "5": N_("refused by the receiving server"),
}

INVOICE_STATES: dict[str, str] = {
    InvoiceStatus.DRAFT: N_("draft: not issued"),
    InvoiceStatus.OPEN: N_("unpaid"),
    InvoiceStatus.PAID: N_("paid"),
    InvoiceStatus.VOID: N_("cancelled (void)"),
}

THREAD_STATUSES: dict[str, str] = {
    ThreadStatus.OPEN: N_("open"),
    ThreadStatus.RESOLVED: N_("resolved"),
}

SUPPRESSION_KINDS: dict[str, str] = {
    SuppressionKind.HARD: N_("address does not work"),
    SuppressionKind.COMPLAINT: N_("the recipient complained (spam)"),
    SuppressionKind.SOFT: N_("repeated temporary failures"),
    SuppressionKind.MANUAL: N_("blocked by a person"),
}

# bounce/timeline.py's entry types.
EVENTS: dict[str, str] = {
    "queued": N_("email queued"),
    "sent": N_("email sent"),
    "attempt": N_("sending attempt"),
    EventKind.BOUNCE: N_("bounced"),
    EventKind.DELAYED: N_("delayed"),
    EventKind.COMPLAINT: N_("complaint"),
    EventKind.DELIVERED: N_("delivered"),
    EventKind.AUTO_REPLY: N_("automatic reply"),
    "reply": N_("reply"),
    "click": N_("link opened"),
    "note": N_("note"),
    "unverified": N_("unverified bounce"),
    "review": N_("bounce to review"),
    "reviewed": N_("bounce reviewed"),
}

# How a person closed a bounce review (bounce/review.py), as the timeline's summary ends.
REVIEW_OUTCOMES: dict[str, str] = {
    "dismissed": N_("dismissed: the address stays in use"),
    "suppressed": N_("confirmed: the address is blocked"),
}

HOLD_REASONS: dict[str, str] = {
    HoldReason.DISPUTE: N_("disputed"),
    HoldReason.PROMISE_TO_PAY: N_("promised to pay"),
    HoldReason.PAYMENT_PLAN: N_("on a payment plan"),
    HoldReason.MANUAL: N_("paused by hand"),
    HoldReason.CONTACT_BOUNCED: N_("every contact bounced"),
}
