"""PURE: the clerk's words for the engine's names, in the clerk's language.

The engine speaks in codes (``new_invoice``, ``userunknown``, ``250``); a clerk reads "New
invoice", "address does not exist (5.1.1)", "accepted by the receiving server (250)". Every
such word is here, one table per concept (email kinds, bounce reasons, message, recipient,
thread and suppression states, timeline events, hold reasons, SMTP outcomes), and every page and
command a clerk reads asks :class:`Labels` for it: nowhere else turns a code into words.

The English text is the message id; translations live in their own gettext domain, ``clerk``
(``templates/locale/<lang>/LC_MESSAGES/clerk.po``), apart from the email templates'
``messages`` catalog, and are compiled in memory with Babel as the email catalogs are
(mailer/content/i18n.py). ``python -m dunmail.labels`` re-extracts ``clerk.pot`` from this
module and merges it into each ``.po``; tests/test_labels.py names any label left untranslated
and any kind or reason left without a label. A code no table knows is shown as it is, spaces for
underscores: a new code is readable the day it appears, and the test fails until it has words.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from gettext import NullTranslations
from pathlib import Path
from typing import Any

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_file

from dunmail.label_words import (
    ATTEMPT_OUTCOMES,
    EVENTS,
    HOLD_REASONS,
    INVOICE_STATES,
    KINDS,
    MESSAGE_STATES,
    REASONS,
    RECIPIENT_STATES,
    REPLY_CLASSES,
    REVIEW_OUTCOMES,
    SUPPRESSION_KINDS,
    THREAD_STATUSES,
)
from mailer.content.formatting import format_money
from mailer.content.i18n import catalog_languages, domain_translations, write_catalogs

DOMAIN = "clerk"
SOURCE_LANGUAGE = "en"
LOCALE_ROOT = Path(__file__).resolve().parents[1] / "templates" / "locale"
WORDS_MODULE = Path(__file__).resolve().parent / "label_words.py"


def _plain(code: str) -> str:
    """A code no table knows, readable: ``new_thing`` -> "new thing"."""
    return code.replace("_", " ")


@dataclass(frozen=True)
class Labels:
    """The clerk's words in one language (``language``: "de", "en", "es", "fr", "ro")."""

    language: str
    translations: NullTranslations

    def text(self, message: str, **values: object) -> str:
        """One message of the clerk catalog, translated, with ``{name}`` values filled in."""
        translated = self.translations.gettext(message)
        return translated.format(**values) if values else translated

    def _word(self, table: dict[str, str], code: str | None) -> str:
        if not code:
            return "-"
        found = table.get(str(code))
        return self.text(found) if found else _plain(str(code))

    def kind(self, kind: str | None) -> str:
        """An email kind: ``late_payment_reminder`` -> "Overdue reminder"."""
        return self._word(KINDS, kind)

    def reason(self, reason: str | None) -> str:
        """A bounce reason the classifier emits: ``userunknown`` -> "address does not exist"."""
        return self._word(REASONS, reason)

    def message_state(self, status: str | None) -> str:
        """An outbox message's state: ``deferred`` -> "will try again"."""
        return self._word(MESSAGE_STATES, status)

    def recipient_state(self, status: str | None) -> str:
        """One recipient's state of an email."""
        return self._word(RECIPIENT_STATES, status)

    def invoice_state(self, status: str | None) -> str:
        """An invoice's state: ``open`` -> "unpaid"."""
        return self._word(INVOICE_STATES, status)

    def thread_status(self, status: str | None) -> str:
        return self._word(THREAD_STATUSES, status)

    def suppression_kind(self, kind: str | None) -> str:
        return self._word(SUPPRESSION_KINDS, kind)

    def event(self, kind: str | None) -> str:
        """A timeline entry's type: ``bounce`` -> "bounced"."""
        return self._word(EVENTS, kind)

    def hold_reason(self, reason: str | None) -> str:
        return self._word(HOLD_REASONS, reason)

    def money(self, amount_minor: int | None, currency: str) -> str:
        """An amount in minor units as the clerk's language writes it (JPY has no cents)."""
        return "" if amount_minor is None else format_money(amount_minor, currency, self.language)

    def reply(self, code: int | None) -> str:
        """An SMTP reply code in words with the code: "accepted by the receiving server (250)"."""
        if code is None:
            return self.text("no answer from the receiving server")
        family = REPLY_CLASSES.get(str(code)[:1], REPLY_CLASSES["5"])
        return f"{self.text(family)} ({code})"

    def failure(self, reason: str | None, status: str | None) -> str:
        """Why mail failed: "address does not exist (5.1.1)"."""
        words = self.reason(reason)
        return f"{words} ({status})" if status else words

    def outcome(
        self,
        state: str | None,
        code: int | None,
        *,
        reason: str | None = None,
        status: str | None = None,
    ) -> str:
        """What happened to one recipient of an email, the SMTP answer and any later bounce
        kept apart: a bounce arrives after the server said 250, so "bounced 250" is never
        shown; it reads "accepted (250), then bounced: address does not exist (5.1.1)"."""
        if state == "bounced":
            why = self.failure(reason, status) if reason else self.text("no reason given")
            return self.text("accepted ({code}), then bounced: {why}", code=code or 250, why=why)
        if state == "pending" or (code is None and state in (None, "deferred")):
            return self.recipient_state(state or "pending")
        if state == "rejected" and reason:
            return self.text(
                "refused: {why}; server answer {reply}",
                why=self.failure(reason, status),
                reply=self.reply(code),
            )
        return self.reply(code)

    def entry(self, e: Mapping[str, Any]) -> str | None:
        """A timeline entry (bounce/timeline.py) in plain words, or None where the entry is a
        person's words already (a reply, a note, a click), which the page shows as they are."""
        kind, address = self.kind(e.get("email_kind")), e.get("address") or "-"
        why = self.failure(e.get("reason"), e.get("status"))
        match e.get("type"):
            case "queued":
                return f"{kind}: {self.message_state(e.get('status'))}"
            case "sent":
                to = ", ".join(e.get("to") or ()) or "-"
                reply = self.reply(e.get("code"))
                return self.text("{kind} sent to {to}: {reply}", kind=kind, to=to, reply=reply)
            case "attempt":
                outcome = self._word(ATTEMPT_OUTCOMES, e.get("status"))
                reply = self.reply(e.get("code"))
                return self.text(
                    "{kind}: not sent this time, {outcome}: {reply}",
                    kind=kind,
                    outcome=outcome,
                    reply=reply,
                )
            case "bounce" | "delayed" | "delivered" | "unverified" | "review" | "reviewed":
                what = self.event(e.get("type"))
                closed = str(e.get("summary") or "").rpartition("review closed: ")[2]
                if e.get("type") == "reviewed" and closed:
                    what += ", " + self._word(REVIEW_OUTCOMES, closed)
                return self.text(
                    "{kind} to {address}: {what}: {why}",
                    kind=kind if e.get("email_kind") else self.text("email"),
                    address=address,
                    what=what,
                    why=why,
                )
            case "complaint":
                return self.text(
                    "{kind} to {address}: marked as spam by the recipient",
                    kind=kind,
                    address=address,
                )
        return None

    def block(self, b: Mapping[str, Any]) -> dict[str, str]:
        """A suppression (dunmail/services/customer_rows.py ``block_row`` with ``evidence``)
        in words: ``since`` when, ``why`` (the reason in words), ``by`` whom or what."""
        since = (b.get("created_at") or "")[:16].replace("T", " ")
        evidence = b.get("evidence")
        kind = b.get("kind")
        if kind == "manual":
            why = self.suppression_kind(kind)
            by = self.text("{who}: {note}", who=b.get("created_by") or "-", note=b.get("reason"))
        elif evidence:
            why = (
                self.reason("feedback")
                if evidence.get("event") == "complaint"
                else self.failure(evidence.get("reason"), evidence.get("status"))
            )
            by = self.text(
                "what came back about {kind} {document}",
                kind=self.kind(evidence.get("email_kind")),
                document=evidence.get("document") or "",
            )
        else:
            why, by = self.suppression_kind(kind), b.get("created_by") or "-"
        until = (b.get("expires_at") or "")[:16].replace("T", " ")
        state = (
            self.text("blocked since {since}", since=since)
            if b.get("active", True)
            else self.text("was blocked from {since}", since=since)
        )
        if until and b.get("active", True):
            state += " " + self.text("until {until}", until=until)
        return {"state": state, "why": why, "by": by}


@lru_cache(maxsize=64)
def labels_for(locale: str | None, root: Path = LOCALE_ROOT) -> Labels:
    """The clerk's words for ``locale`` ("es_MX" reads the es catalog); English for a language
    without a clerk catalog, for junk, and for None."""
    return Labels(*domain_translations(locale, root, DOMAIN))


def languages(root: Path = LOCALE_ROOT) -> list[str]:
    """English plus every language with a clerk catalog."""
    return catalog_languages(root, DOMAIN)


def extract_labels() -> Catalog:
    """Every clerk message: the ``N_(...)`` strings of label_words.py and the ``text(...)``
    format strings of this module."""
    catalog = Catalog(domain=DOMAIN, project="dunmail", msgid_bugs_address=None)
    for path, keywords in ((WORDS_MODULE, {"N_": None}), (Path(__file__), {"text": None})):
        for lineno, message, comments, _context in extract_from_file(
            "python", str(path), keywords=keywords
        ):
            catalog.add(message, None, [(path.name, lineno)], auto_comments=comments)
    return catalog


def refresh_catalogs(root: Path = LOCALE_ROOT) -> None:
    """Re-extract ``clerk.pot`` and merge it into every ``clerk.po`` (new labels arrive
    untranslated and the test names them; translations of unchanged labels are kept)."""
    write_catalogs(root, DOMAIN, extract_labels())


if __name__ == "__main__":
    refresh_catalogs()
