"""The clerk's words (dunmail/labels.py): every code a clerk can meet has words in every shipped
language, the clerk catalog is complete and in step with the code, and an outcome never reads
"bounced 250".

The codes are read from where the engine makes them (the enums, the classifier's tables and the
reasons its source returns), so a new kind, reason or state without words fails here.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from hypothesis import given
from hypothesis import strategies as st

from bounce import classify
from bounce.phrases import PHRASES
from bounce.reply_codes import REPLY_ROWS
from bounce.report import Kind as EventKind
from bounce.status_codes import STATUS_ROWS
from dunmail import label_words
from dunmail.labels import DOMAIN, LOCALE_ROOT, extract_labels, labels_for, languages
from mailer.content.kinds import KINDS, Kind
from mailer.inbox_models import ThreadStatus
from mailer.ledger.models import HoldReason, InvoiceStatus
from mailer.outbound.models import AttemptOutcome, MessageStatus, RecipientStatus
from mailer.outbound.suppression import SuppressionKind

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["de", "en", "es", "fr", "ro"]


def emitted_reasons() -> set[str]:
    """Every reason the classifier and the decoder can store: the three tables' rows, the
    vendor codes, and each reason literal the classifier, decoder and event reader return."""
    reasons = {r.reason for r in PHRASES} | {r.reason for r in STATUS_ROWS}
    reasons |= {r.reason for r in REPLY_ROWS} | {c[2] for c in classify._SPECTRUM_CODES}
    for source in ("bounce/classify.py", "bounce/decode.py", "bounce/delivery_events.py"):
        text = (ROOT / source).read_text(encoding="utf-8")
        for either in re.findall(r'Verdict\(\s*"(\w+)"(?: if [^"]+ else "(\w+)")?', text):
            reasons |= {r for r in either if r}
        reasons |= set(re.findall(r'reason\s*=\s*"(\w+)"', text))
    return reasons


def test_the_reasons_found_include_the_ones_a_clerk_meets_most() -> None:
    found = emitted_reasons()
    assert {"userunknown", "mailboxfull", "feedback", "vacation", "expired"} <= found
    assert len(found) >= 30


@pytest.mark.parametrize("language", SHIPPED)
def test_every_kind_reason_and_state_has_words_in_every_language(language: str) -> None:
    labels = labels_for(language)
    assert labels.language == language
    tables: list[tuple[str, list[str], dict[str, str]]] = [
        ("kind", [k.value for k in Kind] + list(KINDS), label_words.KINDS),
        ("reason", sorted(emitted_reasons()), label_words.REASONS),
        ("message state", [s.value for s in MessageStatus], label_words.MESSAGE_STATES),
        ("recipient state", [s.value for s in RecipientStatus], label_words.RECIPIENT_STATES),
        ("attempt", [s.value for s in AttemptOutcome], label_words.ATTEMPT_OUTCOMES),
        ("suppression", [s.value for s in SuppressionKind], label_words.SUPPRESSION_KINDS),
        ("thread", [s.value for s in ThreadStatus], label_words.THREAD_STATUSES),
        ("invoice", [s.value for s in InvoiceStatus], label_words.INVOICE_STATES),
        ("hold", [s.value for s in HoldReason], label_words.HOLD_REASONS),
        (
            "event",
            [k.value for k in EventKind if k is not EventKind.NOT_BOUNCE]
            + ["queued", "sent", "attempt", "reply", "click", "note", "unverified", "review"],
            label_words.EVENTS,
        ),
    ]
    missing = [
        f"{what} {code}" for what, codes, table in tables for code in codes if code not in table
    ]
    assert missing == [], f"give these words in dunmail/label_words.py: {missing}"
    for _, codes, table in tables:
        for code in codes:
            word = labels.text(table[code])
            assert word and "_" not in word, (language, code, word)
            if language != "en":  # the compiled catalog carries a translation of it
                catalog = getattr(labels.translations, "_catalog", {})
                assert table[code] in catalog, f"{code!r} is not translated into {language}"


def test_the_words_a_clerk_reads_instead_of_codes() -> None:
    en = labels_for("en")
    assert en.kind("late_payment_reminder") == "Overdue reminder"
    assert en.reason("userunknown") == "address does not exist"
    assert en.failure("userunknown", "5.1.1") == "address does not exist (5.1.1)"
    assert en.failure("mailboxfull", "4.2.2") == "mailbox full (4.2.2)"
    assert en.reply(250) == "accepted by the receiving server (250)"
    assert en.reply(452) == "temporarily refused by the receiving server (452)"
    assert en.outcome("accepted", 250) == "accepted by the receiving server (250)"
    assert (
        en.outcome("bounced", 250, reason="userunknown", status="5.1.1")
        == "accepted (250), then bounced: address does not exist (5.1.1)"
    )
    assert en.kind("brand_new_kind") == "brand new kind"  # readable before it has words
    fr = labels_for("fr_CA")  # a region without its own catalog reads the language's
    assert fr.language == "fr" and fr.kind("new_invoice") == "Nouvelle facture"
    assert labels_for("ja").language == "en" and labels_for("not a locale").language == "en"
    de = labels_for("de_CH")
    assert de.language == "de" and de.kind("late_payment_reminder") == "Mahnung"
    assert de.reply(452) == "vom empfangenden Server vorübergehend abgelehnt (452)"


@given(
    state=st.sampled_from([s.value for s in RecipientStatus] + [None]),
    code=st.one_of(st.none(), st.integers(200, 599)),
    reason=st.one_of(st.none(), st.text(string.ascii_lowercase + "_", max_size=20)),
    status=st.one_of(st.none(), st.from_regex(r"[245]\.\d\.\d{1,2}", fullmatch=True)),
    language=st.sampled_from(SHIPPED),
)
def test_an_outcome_never_reads_bounced_with_the_acceptance_code(
    state: str | None, code: int | None, reason: str | None, status: str | None, language: str
) -> None:
    labels = labels_for(language)
    text = labels.outcome(state, code, reason=reason, status=status)
    bounced = r"(bounced|rebotado|returnat|erreur|unzustellbar|zurückgemeldet)\s*\(?2\d\d"
    assert text and not re.search(bounced, text)
    if state == "bounced":
        accepted = labels.text("accepted ({code}), then bounced: {why}", code=code or 250, why="")
        assert text.startswith(accepted.split("(")[0])


def test_the_clerk_catalogs_are_complete_and_in_step_with_the_code() -> None:
    """``python -m dunmail.labels`` after changing a label; then translate what is new."""
    wanted = {m.id for m in extract_labels() if m.id}
    with (LOCALE_ROOT / f"{DOMAIN}.pot").open("rb") as fh:
        template = {m.id for m in read_po(fh) if m.id}
    assert template == wanted, "clerk.pot is stale: run python -m dunmail.labels"
    assert languages() == SHIPPED
    for language in (s for s in SHIPPED if s != "en"):
        path = LOCALE_ROOT / language / "LC_MESSAGES" / f"{DOMAIN}.po"
        with path.open("rb") as fh:
            catalog = read_po(fh, locale=language, domain=DOMAIN)
        todo = [m.id for m in catalog if m.id and (not m.string or m.fuzzy)]
        assert todo == [], f"translate these in {path.name} ({language}): {todo}"
        assert {m.id for m in catalog if m.id} == wanted
        for m in catalog:
            if m.id:
                fields = set(re.findall(r"{(\w+)}", str(m.id)))
                assert set(re.findall(r"{(\w+)}", str(m.string))) == fields, (language, m.id)


def test_the_email_catalog_is_another_domain() -> None:
    """The clerk's words never land in the email templates' catalog, nor the reverse."""
    with (LOCALE_ROOT / "messages.pot").open("rb") as fh:
        email = {m.id for m in read_po(fh) if m.id}
    assert not email & {m.id for m in extract_labels() if m.id and "{" in str(m.id)}


def test_a_block_says_since_when_why_and_from_what() -> None:
    en = labels_for("en")
    evidence = {
        "event": "bounce",
        "reason": "userunknown",
        "status": "5.1.1",
        "email_kind": "late_payment_reminder",
        "document": "INV-7",
    }
    bounce: dict[str, object] = {
        "kind": "hard",
        "created_at": "2026-03-02T09:05:00+00:00",
        "created_by": "bounce",
        "active": True,
        "evidence": evidence,
    }
    assert en.block(bounce) == {
        "state": "blocked since 2026-03-02 09:05",
        "why": "address does not exist (5.1.1)",
        "by": "what came back about Overdue reminder INV-7",
    }
    complaint = {
        **bounce,
        "kind": "complaint",
        "evidence": {**evidence, "event": "complaint"},
    }
    assert en.block(complaint)["why"] == "marked as spam by the recipient"
    manual = {**bounce, "kind": "manual", "created_by": "ana@acme.example", "reason": "left"}
    assert en.block(manual) == {
        "state": "blocked since 2026-03-02 09:05",
        "why": "blocked by a person",
        "by": "ana@acme.example: left",
    }
    soft = {**bounce, "kind": "soft", "expires_at": "2026-03-30T09:05:00+00:00", "evidence": None}
    assert en.block(soft)["state"] == "blocked since 2026-03-02 09:05 until 2026-03-30 09:05"
    assert en.block(soft)["why"] == "repeated temporary failures"
    lifted = {**manual, "active": False}
    assert labels_for("fr").block(lifted)["state"] == "a été bloqué à partir du 2026-03-02 09:05"
