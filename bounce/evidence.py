"""PURE: whether one recipient's return suppresses the address now, opens a review, or neither.

A wrong hard verdict silently stops invoices to a customer's working billing address, so the
classifier's ``hard`` alone never suppresses. An address is blocked at once only on evidence
that cannot be read two ways: a complaint (RFC 5965), or a permanent status (RFC 3463 class 5)
whose subject says the mailbox or the domain does not exist, *and* a diagnostic whose own
wording (the phrase layer alone, ``classify.phrase_reason``) names the same failure, with no
4xx reply code against it. Any other hard verdict (no status, a 4.x.x status, a status about
something else, rate-limit or policy wording, an empty diagnostic) counts as a soft bounce for
the soft-bounce policy and opens a review task for a person to decide.

Subjects (RFC 3463 s3.2 and vendors) and the wording each needs:

- X.1.1 bad destination mailbox: the wording must say the user does not exist (userunknown).
- X.1.10: Microsoft's "recipient not found" (userunknown) or RFC 7505's null MX (notaccept:
  the domain itself declares it takes no mail).
- X.1.2 bad destination system: the wording must say the domain does not exist (hostunknown).
- X.1.6 mailbox moved, no forwarding address: the address was valid once and takes no mail now
  (RFC 3463); it suppresses when the wording says so too (hasmoved or userunknown).
- X.4.4 unable to route: Postfix's answer for a domain that does not exist (NXDOMAIN); it
  suppresses only with wording that says the host or domain does not exist (hostunknown).
- X.1.3 bad address syntax goes to review: the address passed our own syntax check, so the
  complaint is more often a remote parser's quirk than a dead mailbox, and the clerk's fix is
  to correct the contact. X.1.4 (ambiguous), X.1.5 (valid), X.2.x (mailbox disabled, full),
  5.0.0 and every other subject likewise go to review when the verdict was hard.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from bounce.classify import phrase_reason
from bounce.report import Kind, Recipient

# RFC 3463 subject.detail -> (what it says, the phrase-layer reasons that agree with it).
UNAMBIGUOUS: dict[str, tuple[str, frozenset[str]]] = {
    "1.1": ("bad destination mailbox (RFC 3463)", frozenset({"userunknown"})),
    "1.2": ("bad destination system (RFC 3463)", frozenset({"hostunknown"})),
    "1.6": (
        "mailbox moved, no forwarding address (RFC 3463)",
        frozenset({"hasmoved", "userunknown"}),
    ),
    "1.10": (
        "recipient not found (Microsoft) / null MX (RFC 7505)",
        frozenset({"userunknown", "notaccept"}),
    ),
    # Postfix answers a domain with no DNS record (NXDOMAIN) 5.4.4, not 5.1.2: with wording
    # that says the host or domain does not exist it means the same (a DNS failure it expects
    # to pass is 4.4.3, and "no MX" alone, notaccept, does not agree).
    "4.4": ("unable to route (RFC 3463); Postfix's NXDOMAIN", frozenset({"hostunknown"})),
}
# What the other subjects a hard verdict often rests on say, for the clerk's reading.
_SUBJECTS: dict[str, str] = {
    "0.0": "no detail (RFC 3463 other or undefined)",
    "1.0": "other address status (RFC 3463)",
    "1.3": "bad destination mailbox address syntax (RFC 3463)",
    "1.4": "destination mailbox address ambiguous (RFC 3463)",
    "1.5": "destination address valid (RFC 3463)",
    "2.0": "other mailbox status (RFC 3463)",
    "2.1": "mailbox disabled (RFC 3463)",
    "2.2": "mailbox full (RFC 3463)",
    "7.1": "delivery not authorized, message refused (RFC 3463)",
}
_MAX_DIAGNOSTIC = 500  # what the inbox shows of the remote server's words


class Action(StrEnum):
    """What a return does to its address."""

    SUPPRESS = "suppress"  # block now, until a person unblocks it
    REVIEW = "review"  # a hard verdict on weak evidence: counted as soft, a person decides
    NONE = "none"  # a soft bounce (counted by the soft-bounce policy), a delay, a reply


@dataclass(frozen=True)
class Evidence:
    """What the decision rested on. Every text field but ``why`` is remote text: escape it."""

    status: str | None
    reply_code: int | None
    subject: str  # what the status's subject says, "" without a status
    diagnostic: str  # the remote server's own words, cut to what the inbox shows
    wording: str | None  # the phrase layer's reading of the diagnostic alone
    reason: str  # the classifier's reason (all layers)
    why: str  # one sentence: why this action

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for a DeliveryEvent's ``evidence``."""
        return asdict(self)

    def describe(self) -> str:
        """One line for a timeline entry or the CLI."""
        status = self.status or "none"
        subject = f" ({self.subject})" if self.subject else ""
        reply = f", reply {self.reply_code}" if self.reply_code else ""
        wording = self.wording or "nothing recognised"
        return (
            f"{self.why}. Status {status}{subject}{reply}; the diagnostic reads as {wording}; "
            f"the classifier said {self.reason}. Diagnostic: {self.diagnostic or '(empty)'}"
        )


@dataclass(frozen=True)
class Decision:
    """The action for one recipient, whether the return counts as hard, and its evidence."""

    action: Action
    hard: bool  # a hard bounce for the record: only when it suppresses at once
    evidence: Evidence

    @property
    def review(self) -> bool:
        """Whether a person must confirm or dismiss the hard verdict."""
        return self.action is Action.REVIEW


def decide_suppression(kind: Kind, recipient: Recipient) -> Decision:
    """Suppress now, open a review, or neither, for ``recipient`` of a report of ``kind``."""
    status = recipient.status or None
    detail = status.split(".", 1)[1] if status and "." in status else ""
    known = UNAMBIGUOUS.get(detail)
    subject = known[0] if known else _SUBJECTS.get(detail, "")
    wording = phrase_reason(recipient.diagnostic) if recipient.diagnostic else None

    def decided(action: Action, why: str) -> Decision:
        evidence = Evidence(
            status=status,
            reply_code=recipient.reply_code,
            subject=subject,
            diagnostic=" ".join(recipient.diagnostic.split())[:_MAX_DIAGNOSTIC],
            wording=wording,
            reason=recipient.reason,
            why=why,
        )
        return Decision(action, action is Action.SUPPRESS and kind is Kind.BOUNCE, evidence)

    if kind is Kind.COMPLAINT:
        return decided(Action.SUPPRESS, "a complaint: the person asked for no more mail")
    if kind is not Kind.BOUNCE:
        return decided(Action.NONE, f"a {kind.value.replace('_', ' ')} is not a failure")
    if not recipient.hard:
        return decided(Action.NONE, "a soft bounce: counted by the soft-bounce policy")
    weak = _weakness(status, detail, recipient.reply_code, wording, known)
    if weak:
        return decided(Action.REVIEW, f"hard verdict on weak evidence ({weak}): counted as soft")
    return decided(Action.SUPPRESS, "the status and the diagnostic agree the address is dead")


def _weakness(
    status: str | None,
    detail: str,
    reply_code: int | None,
    wording: str | None,
    known: tuple[str, frozenset[str]] | None,
) -> str:
    """Why the evidence for a hard verdict is not unambiguous, or "" when it is."""
    if status is None:
        return "no enhanced status code"
    if not status.startswith("5."):
        return f"status {status} is not permanent"
    if reply_code is not None and not 500 <= reply_code < 600:
        return f"reply code {reply_code} is not permanent"  # 4xx or odd against a 5.x.x status
    if known is None:
        return f"status {status} does not say the mailbox or domain does not exist"
    if wording is None:
        return "the diagnostic says nothing recognisable"
    if wording not in known[1]:
        return f"the diagnostic reads as {wording}, not as the status's {detail} subject"
    return ""
