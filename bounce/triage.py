"""PURE: what a customer's reply to a dunning email asks of the clerk.

One verdict per reply: ``already_paid``, ``dispute``, ``promise_to_pay`` (with the promised
day when one is named), ``wrong_contact`` (with the new address when one is given),
``out_of_office`` (a person saying so; autoresponders are the bounce decoder's), or ``other``.
English, Spanish, French and Romanian, read together: customers do not always answer in the
language they were written to.

Abstaining is cheaper than a wrong action (a hold that should not be, a contact replaced by
mistake), so: a statement preceded in its clause by a negation or a supposition ("we have NOT
paid", "no hemos pagado", "if we paid") does not count, a question does not count, and only
the reply's own text is read (bounce/reply_body.py), never the quoted reminder below it.
A reply that states two of paid, promised and disputed ("we paid INV-1038; INV-1042 will
be paid on Friday") abstains: which invoice each clause is about is beyond a phrase reader,
and the clerk reads it. Otherwise the most cautious action wins: a wrong contact over
payment talk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from functools import cache

from bounce import triage_phrases as phrases
from bounce.promise_date import LANGUAGES, find_promised_date, fold
from bounce.reply_body import latest_text


class Intent(StrEnum):
    """What a reply asks for; the value is stored with the reply's proposal."""

    ALREADY_PAID = "already_paid"
    DISPUTE = "dispute"
    PROMISE_TO_PAY = "promise_to_pay"
    WRONG_CONTACT = "wrong_contact"
    OUT_OF_OFFICE = "out_of_office"
    OTHER = "other"


# Most cautious first: the order in which intents beat each other when a reply states several.
PRECEDENCE = (
    Intent.DISPUTE,
    Intent.WRONG_CONTACT,
    Intent.ALREADY_PAID,
    Intent.PROMISE_TO_PAY,
    Intent.OUT_OF_OFFICE,
)
# Statements about the money that contradict each other when one reply makes two of them.
_MONEY = {Intent.ALREADY_PAID, Intent.PROMISE_TO_PAY, Intent.DISPUTE}
_FAMILIES = {
    Intent.ALREADY_PAID: phrases.ALREADY_PAID,
    Intent.DISPUTE: phrases.DISPUTE,
    Intent.PROMISE_TO_PAY: phrases.PROMISE_TO_PAY,
    Intent.WRONG_CONTACT: phrases.WRONG_CONTACT,
    Intent.OUT_OF_OFFICE: phrases.OUT_OF_OFFICE,
}
_NEGATION = re.compile(phrases.NEGATION)
_PAST_AFTER = re.compile(phrases.PAST_AFTER)
_PAYMENT = {Intent.ALREADY_PAID, Intent.PROMISE_TO_PAY}
_ADDRESS = re.compile(phrases.ADDR)
_CLAUSE_END = re.compile(r"[.;!?\n]|,(?= )")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")
_BLANKS = re.compile(r"[ \t\u00a0]+")
_WINDOW = 30  # characters before a statement searched for a negation in its clause


@dataclass(frozen=True)
class Verdict:
    """The classifier's answer for one reply."""

    intent: Intent
    language: str | None = None  # the language of the phrase that decided it
    promised_on: date | None = None  # promise_to_pay: the day named, if any
    new_address: str | None = None  # wrong_contact: the address to use instead, if any
    evidence: str = ""  # the words that decided it, for the clerk to see why

    def as_dict(self) -> dict[str, str | None]:
        """JSON-ready."""
        return {
            "intent": self.intent.value,
            "language": self.language,
            "promised_on": self.promised_on.isoformat() if self.promised_on else None,
            "new_address": self.new_address,
            "evidence": self.evidence,
        }


def triage_reply(
    body: str,
    *,
    written_on: date,
    known: frozenset[str] = frozenset(),
    month_first: bool = False,
) -> Verdict:
    """Classify a reply's plain-text ``body`` (quoted history and all) written on
    ``written_on`` (the reply's Date, in the customer's time zone). ``known`` are addresses
    that cannot be a new contact (ours, and whoever already gets the email); ``month_first``
    when the customer's locale writes "02/03" for 3 February."""
    return classify_text(
        latest_text(body), written_on=written_on, known=known, month_first=month_first
    )


def classify_text(
    text: str,
    *,
    written_on: date,
    known: frozenset[str] = frozenset(),
    month_first: bool = False,
) -> Verdict:
    """Classify the customer's own words ``text`` (already without quoted history)."""
    # Runs of spaces and tabs are one space: the phrases are written with single spaces.
    text = _BLANKS.sub(" ", text)
    folded = fold(text)
    hits: dict[Intent, tuple[str, str, int]] = {}
    for intent, language, pattern in _compiled():
        if intent in hits:
            continue
        for m in pattern.finditer(folded):
            if not _undone(folded, m.start(), m.end(), payment=intent in _PAYMENT):
                hits[intent] = (language, m.group(0), m.start())
                break
    if len(_MONEY & hits.keys()) > 1:
        return Verdict(Intent.OTHER, evidence="several of paid, promised and disputed")
    for intent in PRECEDENCE:
        if intent not in hits:
            continue
        language, words, at = hits[intent]
        evidence = _sentence(text, folded, at)
        if intent is Intent.WRONG_CONTACT:
            return Verdict(
                intent, language, new_address=_new_address(folded, at, known), evidence=evidence
            )
        if intent is Intent.PROMISE_TO_PAY:
            sentence = fold(_sentence(text, folded, at))
            promised = find_promised_date(
                sentence, written_on=written_on, month_first=month_first
            ) or find_promised_date(folded, written_on=written_on, month_first=month_first)
            return Verdict(intent, language, promised_on=promised, evidence=evidence)
        return Verdict(intent, language, evidence=evidence)
    return Verdict(Intent.OTHER)


@cache
def _compiled() -> list[tuple[Intent, str, re.Pattern[str]]]:
    return [
        (intent, language, re.compile(pattern))
        for intent, family in _FAMILIES.items()
        for language in LANGUAGES
        for pattern in family.get(language, ())
    ]


def _undone(text: str, start: int, end: int, *, payment: bool) -> bool:
    """Whether the statement at ``text[start:end]`` is negated or supposed in its clause, or
    asked as a question. A statement of payment is also undone by a negation inside its own
    words ("we will not pay") and by a day put in the past right after it ("el viernes
    pasado"); the dispute and contact phrases carry their negations by meaning."""
    before = text[max(0, start - _WINDOW) : start]
    clause = _CLAUSE_END.split(before)[-1]
    if _NEGATION.search(clause):
        return True
    if payment and (_NEGATION.search(text[start:end]) or _PAST_AFTER.search(text[end:])):
        return True
    rest = _CLAUSE_END.search(text, end)
    return rest is not None and rest.group(0) == "?"


def _sentence(text: str, folded: str, at: int) -> str:
    """The sentence of ``text`` around position ``at`` (positions agree: folding keeps length
    for the scripts read here), at most 300 characters. A full stop ends a sentence only
    before a blank, so an address's dots do not."""
    if len(folded) != len(text):
        text = folded
    starts = [m.end() for m in _SENTENCE_END.finditer(text, 0, at)]
    end = _SENTENCE_END.search(text, at)
    return " ".join(text[starts[-1] if starts else 0 : end.end() if end else len(text)].split())[
        :300
    ]


def _new_address(text: str, at: int, known: frozenset[str]) -> str | None:
    """The address the customer gives to write to instead: the first after the statement,
    else the last before it; never one of ``known``."""
    found = [(m.start(), m.group(0).strip(".'")) for m in _ADDRESS.finditer(text)]
    fresh = [(pos, a) for pos, a in found if a.lower() not in known]
    after = [a for pos, a in fresh if pos >= at]
    if after:
        return after[0]
    return fresh[-1][1] if fresh else None
