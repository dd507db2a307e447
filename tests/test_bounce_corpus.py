"""The whole labelled bounce corpus through ``bounce.parse``, scored against the issue's targets.

The corpus lives beside the repository (``../shared/bounce-corpus``) and is never copied in; the
test skips, saying why, where it is absent. Besides the in-sample figures, the verdicts (reason,
hard/soft) are cross-validated leave-one-family-out (family = the label's ``mta``): in the fold
of family F, every phrase row whose source is "corpus" counts only if it also decides a
recipient of another family correctly; documented rows (RFC, Sisimai, vendor) always stay. The
project's own Postfix-generated returns (tests/bounce_evidence/, where present) are one more
family. Detection, recipients, status and Message-ID come from the detectors, which these folds
do not change (tests/test_bounce_generalise.py folds the detectors).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from bounce import Kind, Recipient, Report, parse
from bounce.classify import RULES, Rules, classify_hard, classify_verdict

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "bounce-corpus"
EVIDENCE = Path(__file__).resolve().parent / "bounce_evidence"
EVIDENCE_FAMILY = "dunmail-postfix"  # the project's own generated returns: one family
# What each non-bounce category must come out as.
OTHER_KINDS = {
    "feedback": Kind.COMPLAINT,
    "vacation": Kind.AUTO_REPLY,
    "delivered": Kind.DELIVERED,
    "not_bounce": Kind.NOT_BOUNCE,
}


@dataclass
class Score:
    """Hits over cases for one figure, with the files that missed."""

    hits: int = 0
    cases: int = 0
    misses: list[str] = field(default_factory=list)

    def add(self, ok: bool, name: str) -> None:
        self.cases += 1
        self.hits += ok
        if not ok:
            self.misses.append(name)

    @property
    def percent(self) -> float:
        return 100.0 * self.hits / self.cases if self.cases else 100.0


@dataclass(frozen=True)
class Case:
    """One labelled failed recipient and what the detectors read for it (None: not found)."""

    file: str
    family: str
    reason: str
    hard: bool
    disputed: bool
    failure: bool  # the report is a final failure (hard needs that)
    got: Recipient | None


@dataclass
class Run:
    """Every figure the issue names, over one pass of the corpus."""

    detection: Score = field(default_factory=Score)
    recipients: Score = field(default_factory=Score)
    status: Score = field(default_factory=Score)
    message_id: Score = field(default_factory=Score)
    reason: Score = field(default_factory=Score)
    hard: Score = field(default_factory=Score)
    other_kinds: Score = field(default_factory=Score)
    false_positives: list[str] = field(default_factory=list)
    twins_differ: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cases: list[Case] = field(default_factory=list)


def _labels(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _accepted(row: dict[str, Any]) -> set[str]:
    return {a.lower() for a in [row["address"], *row.get("address_alternatives", [])] if a}


def _score(run: Run, label: dict[str, Any], report: Report) -> None:
    name = label["file"]
    if not label["is_bounce"]:
        if report.kind in (Kind.BOUNCE, Kind.DELAYED):
            run.false_positives.append(name)
        run.other_kinds.add(report.kind is OTHER_KINDS[label["category"]], name)
        return
    run.detection.add(report.kind in (Kind.BOUNCE, Kind.DELAYED), name)
    rows = list({row["address"].lower(): row for row in label["recipients"]}.values())
    got = {r.address: r for r in report.recipients}
    exact = len(got) == len(rows) and all(_accepted(row) & set(got) for row in rows)
    run.recipients.add(exact, name)
    ids = {label["original_message_id"], *label.get("original_message_id_alternatives", [])}
    if label["original_message_id"] is not None:
        run.message_id.add(report.original_message_id in ids, name)
    disputed = any("DISPUTED" in note for note in label.get("label_notes", []))
    for row in rows:
        match = next((got[a] for a in _accepted(row) if a in got), None)
        if row["status_kind"] == "explicit":
            run.status.add(match is not None and match.status == row["status"], name)
        if not disputed:
            run.reason.add(match is not None and match.reason == row["reason"], name)
        run.hard.add(match is not None and match.hard == bool(row["hardbounce"]), name)
        run.cases.append(
            Case(
                name,
                label["mta"],
                row["reason"],
                bool(row["hardbounce"]),
                disputed,
                report.kind is Kind.BOUNCE,
                match,
            )
        )


@cache
def _read(path: Path) -> Report:
    """Each file is parsed once per session, for the figures and the per-file table alike."""
    return parse(path.read_bytes())


def _parse(path: Path, run: Run) -> Report | None:
    try:
        return _read(path)
    except Exception as exc:  # counted: the target is zero
        run.exceptions.append(f"{path.name}: {exc!r}")
        return None


def run_corpus() -> Run:
    """Parse every message, score it against its label, and compare the CRLF twins."""
    run = Run()
    started = time.perf_counter()
    for label in _labels(CORPUS / "labels.jsonl"):
        report = _parse(CORPUS / "emails" / label["file"], run)
        if report is not None:
            _score(run, label, report)
    if (EVIDENCE / "labels.jsonl").is_file():  # the project's own returns: verdicts only
        evidence = Run()
        for label in _labels(EVIDENCE / "labels.jsonl"):
            report = _parse(EVIDENCE / label["file"], run)
            if report is not None and label["is_bounce"]:
                _score(evidence, {**label, "mta": EVIDENCE_FAMILY}, report)
        run.cases.extend(evidence.cases)
    for label in _labels(CORPUS / "crlf" / "labels.jsonl"):
        crlf = _parse(CORPUS / "crlf" / label["file"], run)
        lf = _parse(CORPUS / "emails" / label["twin_file"], run)
        if crlf != lf:
            run.twins_differ.append(label["file"])
    run.seconds = time.perf_counter() - started
    return run


@dataclass
class Verdicts:
    """Reason and hard/soft over the labelled recipients, and the corpus rows a fold dropped."""

    reason: Score = field(default_factory=Score)
    hard: Score = field(default_factory=Score)
    dropped: dict[str, list[str]] = field(default_factory=dict)  # family -> rule ids off


def _reclassify(case: Case, rules: Rules) -> tuple[str, bool, tuple[str, ...]]:
    got = case.got
    if got is None:
        return "", False, ()
    verdict = classify_verdict(
        got.status,
        got.diagnostic,
        action=got.action,
        command=got.command,
        domain=got.address.rpartition("@")[2],
        reply_code=got.reply_code,
        rules=rules,
    )
    return verdict.reason, case.failure and classify_hard(verdict.reason, got.status), verdict.rules


def _add(verdicts: Verdicts, case: Case, reason: str, hard: bool) -> None:
    if case.got is not None and case.got.reason in ("feedback", "vacation"):
        reason = case.got.reason  # decided by the report's kind, not by the classifier
    if not case.disputed:
        verdicts.reason.add(case.got is not None and reason == case.reason, case.file)
    verdicts.hard.add(case.got is not None and hard == case.hard, case.file)


def in_sample(cases: list[Case], rules: Rules = RULES) -> Verdicts:
    """The verdicts with every rule on: what the rules' authors saw."""
    verdicts = Verdicts()
    for case in cases:
        reason, hard, _ = _reclassify(case, rules)
        _add(verdicts, case, reason, hard)
    return verdicts


def cross_validated(cases: list[Case], rules: Rules = RULES, *, strict: bool = False) -> Verdicts:
    """Leave-one-family-out: in F's fold a "corpus" row counts only if it also decides right a
    recipient of another family; otherwise it is switched off for F's files.

    ``strict`` trusts no phrase row's source: every wording row is treated as if it had been
    written from the corpus, so a row that decides only F's mail is off in F's fold whatever it
    says it came from. The "sisimai:" rows were written by people who had read the corpus; this
    is the figure that does not take their word for it.
    """
    sources = rules.sources()
    phrase_ids = {row.id for row in rules.phrases}
    fitted = {
        rule
        for rule, source in sources.items()
        if source == "corpus" or (strict and rule in phrase_ids)
    }
    support: dict[str, set[str]] = {rule: set() for rule in fitted}
    for case in cases:
        reason, _, used = _reclassify(case, rules)
        if case.got is not None and not case.disputed and reason == case.reason:
            for rule in fitted.intersection(used):
                support[rule].add(case.family)
    verdicts = Verdicts()
    folds: dict[frozenset[str], Rules] = {}
    for family in sorted({case.family for case in cases}):
        off = frozenset(rule for rule in fitted if not support[rule] - {family})
        verdicts.dropped[family] = sorted(off)
        fold = folds.setdefault(off, rules.without(off))
        for case in cases:
            if case.family == family:
                reason, hard, _ = _reclassify(case, fold)
                _add(verdicts, case, reason, hard)
    return verdicts


def _lines(run: Run) -> Iterator[str]:
    for title, score in [
        ("bounce detection", run.detection),
        ("exact recipients", run.recipients),
        ("status (explicit)", run.status),
        ("original Message-ID", run.message_id),
        ("reason (not disputed)", run.reason),
        ("hard/soft", run.hard),
        ("other kinds right", run.other_kinds),
    ]:
        yield f"{title:24} {score.percent:6.2f} % ({score.hits}/{score.cases})"
    inside, folded = in_sample(run.cases), cross_validated(run.cases)
    strict = cross_validated(run.cases, strict=True)
    families = len({case.family for case in run.cases})
    yield f"verdicts over {len(run.cases)} labelled recipients in {families} families"
    yield f"{'':24} {'in-sample':>20} {'leave-one-family-out':>20} {'strict (no row trusted)':>24}"
    for title, a, b, c in [
        ("reason (not disputed)", inside.reason, folded.reason, strict.reason),
        ("hard/soft", inside.hard, folded.hard, strict.hard),
    ]:
        cells = [f"{x.percent:6.2f} % ({x.hits}/{x.cases})" for x in (a, b, c)]
        yield f"{title:24} {cells[0]:>20} {cells[1]:>20} {cells[2]:>24}"
    off = sorted({rule for rules in strict.dropped.values() for rule in rules})
    yield f"{'strict: rows off':24} {len(off)} of {len(RULES.phrases)} phrase rows in some fold"
    dropped = sorted({rule for rules in folded.dropped.values() for rule in rules})
    yield f"{'corpus rows dropped':24} in some fold: {dropped}"
    yield "(detection, recipients, status, Message-ID: the detectors'; verdict folds keep them)"
    yield f"{'false positives':24} {len(run.false_positives)} {run.false_positives}"
    yield f"{'CRLF twins differing':24} {len(run.twins_differ)} {run.twins_differ}"
    yield f"{'exceptions':24} {len(run.exceptions)} {run.exceptions}"
    yield f"{'time':24} {run.seconds:.2f} s"


@pytest.fixture(scope="module")
def corpus_run() -> Run:
    if not (CORPUS / "labels.jsonl").is_file():
        pytest.skip(f"bounce corpus not found at {CORPUS}")
    return run_corpus()


def test_print_figures(corpus_run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue asks for the figures on every run, not only when something fails."""
    with capsys.disabled():
        print("\n" + "\n".join(_lines(corpus_run)))  # noqa: T201


# The targets. The misses left are listed file by file in KNOWN_MISSES below; most are
# labels that contradict their own message or the rest of the corpus, kept so that nobody
# "fixes" them by special-casing a file.
def test_reason_cross_validated(corpus_run: Run) -> None:
    """The issue's target, on verdicts whose corpus-fitted rows are switched off per family."""
    folded = cross_validated(corpus_run.cases)
    assert folded.reason.percent >= 90, folded.reason.misses


def test_hard_or_soft_cross_validated(corpus_run: Run) -> None:
    folded = cross_validated(corpus_run.cases)
    assert folded.hard.percent >= 97, folded.hard.misses


def test_the_harness_recomputes_what_parse_said(corpus_run: Run) -> None:
    """Re-classifying a recipient's fields with every rule on gives parse's own verdict."""
    for case in corpus_run.cases:
        if case.got is not None and case.got.reason not in ("feedback", "vacation"):
            assert _reclassify(case, RULES)[0] == case.got.reason, case.file


def test_a_fold_drops_a_corpus_row_seen_in_its_own_family_only() -> None:
    """A "corpus" row that decides only family A's mail is off in A's fold, on in B's."""
    from bounce.phrases import PhraseRow

    fitted = PhraseRow("expired.fitted", "expired", r"nyaan-only-wording", "corpus")
    rules = Rules(phrases=(fitted, *RULES.phrases))
    said = "550 nyaan-only-wording"
    recipient = Recipient("a@b.example", "5.0.0", 550, "expired", False, "failed", said)
    cases = [
        Case("a.eml", "A", "expired", False, False, True, recipient),
        Case("b.eml", "B", "expired", False, False, True, recipient),
        Case("c.eml", "C", "onhold", False, False, True, recipient),
    ]
    assert in_sample(cases, rules).reason.hits == 2
    folded = cross_validated(cases, rules)
    assert not any("expired.fitted" in off for off in folded.dropped.values())  # A, B agree
    alone = cross_validated(cases[:1] + cases[2:], rules)
    assert "expired.fitted" in alone.dropped["A"]
    assert "expired.fitted" not in alone.dropped["C"]
    assert alone.reason.hits == 0  # A's file loses the row; C's never matched it rightly


def test_bounces_are_detected(corpus_run: Run) -> None:
    assert corpus_run.detection.percent >= 99, corpus_run.detection.misses


def test_exact_recipients(corpus_run: Run) -> None:
    assert corpus_run.recipients.percent >= 98, corpus_run.recipients.misses


def test_status_where_explicit(corpus_run: Run) -> None:
    assert corpus_run.status.percent >= 97, corpus_run.status.misses


def test_original_message_id(corpus_run: Run) -> None:
    assert corpus_run.message_id.percent >= 97, corpus_run.message_id.misses


def test_reason_where_not_disputed(corpus_run: Run) -> None:
    assert corpus_run.reason.percent >= 90, corpus_run.reason.misses


def test_hard_or_soft(corpus_run: Run) -> None:
    assert corpus_run.hard.percent >= 97, corpus_run.hard.misses


def test_nothing_else_taken_for_a_bounce(corpus_run: Run) -> None:
    assert corpus_run.false_positives == []


def test_complaints_auto_replies_and_mail_are_told_apart(corpus_run: Run) -> None:
    assert corpus_run.other_kinds.percent == 100, corpus_run.other_kinds.misses


def test_crlf_twins_are_identical(corpus_run: Run) -> None:
    assert corpus_run.twins_differ == []


def test_no_exceptions(corpus_run: Run) -> None:
    assert corpus_run.exceptions == []


# --- one case per corpus file, so that a regression names its file ----------------------------
# Today's known misses, each with why; strict, so a file that starts passing shows up too.
KNOWN_MISSES: dict[str, str] = {
    "lhost-amazonses-01.eml": "'Unknown address error ... Access denied' labelled securityerror",
    "lhost-apachejames-01.eml": "the label's address has one zero fewer than the message's",
    "lhost-dragonfly-18.eml": "5.7.0 'policy violation' wording labelled securityerror",
    "lhost-exim-46.eml": "'Missing reverse DNS' at connection labelled blocked, read requireptr",
    "lhost-gmail-03.eml": "Gmail's generic 'rejected by the recipient domain' labelled filtered",
    "lhost-mfilter-04.eml": "5.4.1 at DATA in Japanese prose labelled rejected",
    "lhost-opensmtpd-12.eml": "a delay notice (4.0.0, 'only a temporary failure') labelled hard",
    "lhost-postfix-64.eml": "no server reply: Sisimai says undefined where the prose is the text",
    "lhost-sendmail-16.eml": "'(BL)' alone says blocklist; no wording family reads a tag",
    "lhost-sendmail-27.eml": "5.0.0 'User unknown' answering RCPT labelled filtered",
    "lhost-sendmail-55.eml": "a bare '71' (EX_OSERR) labelled mailererror",
    "lhost-v5sendmail-01.eml": "the label's address is cut short",
    "lhost-v5sendmail-06.eml": "'Remote protocol error ... timed out' at MAIL labelled norelaying",
    "lhost-x2-01.eml": "'This user doesn't have a ... account': filtered here only",
    "lhost-x3-05.eml": "no server reply: Sisimai says undefined where the prose is the text",
    "rfc3464-01.eml": "5.1.1 'User Unknown' labelled mailboxfull",
    "rfc3464-06.eml": "'Service unavailable' labelled userunknown by a rule no wording supports",
    "rhost-messagelabs-01.eml": "no diagnostic at all, labelled securityerror",
    "rhost-messagelabs-03.eml": "'542 ... Rejected' labelled userunknown",
    "rhost-nttdocomo-02.eml": "'Unknown user' at DATA labelled rejected (Sisimai's docomo rule)",
}


def _corpus_labels() -> list[dict[str, Any]]:
    path = CORPUS / "labels.jsonl"
    return _labels(path) if path.is_file() else []


def _file_param(label: dict[str, Any]) -> Any:
    why = KNOWN_MISSES.get(label["file"])
    marks = [pytest.mark.xfail(strict=True, reason=why)] if why else []
    return pytest.param(label, id=label["file"], marks=marks)


@pytest.mark.parametrize("label", [_file_param(label) for label in _corpus_labels()])
def test_each_corpus_file(label: dict[str, Any]) -> None:
    """The file's kind, and each labelled recipient's reason (undisputed) and hard/soft."""
    report = _read(CORPUS / "emails" / label["file"])
    if not label["is_bounce"]:
        assert report.kind is OTHER_KINDS[label["category"]]
        return
    assert report.kind in (Kind.BOUNCE, Kind.DELAYED)
    got = {r.address: r for r in report.recipients}
    disputed = any("DISPUTED" in note for note in label.get("label_notes", []))
    for row in label["recipients"]:
        match = next((got[a] for a in _accepted(row) if a in got), None)
        assert match is not None, row["address"]
        if not disputed:
            assert match.reason == row["reason"], (row["address"], match.diagnostic[:200])
        assert match.hard == bool(row["hardbounce"]), (row["address"], match.reason)
