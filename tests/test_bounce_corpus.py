"""The whole labelled bounce corpus through ``bounce.parse``, scored against the issue's targets.

The corpus lives beside the repository (``../shared/bounce-corpus``) and is never copied in; the
test skips, saying why, where it is absent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bounce import Kind, Report, parse

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "bounce-corpus"
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
    for row in rows:
        match = next((got[a] for a in _accepted(row) if a in got), None)
        if row["status_kind"] == "explicit":
            run.status.add(match is not None and match.status == row["status"], name)
        if not any("DISPUTED" in note for note in label.get("label_notes", [])):
            run.reason.add(match is not None and match.reason == row["reason"], name)
        run.hard.add(match is not None and match.hard == bool(row["hardbounce"]), name)


def _parse(path: Path, run: Run) -> Report | None:
    try:
        return parse(path.read_bytes())
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
    for label in _labels(CORPUS / "crlf" / "labels.jsonl"):
        crlf = _parse(CORPUS / "crlf" / label["file"], run)
        lf = _parse(CORPUS / "emails" / label["twin_file"], run)
        if crlf != lf:
            run.twins_differ.append(label["file"])
    run.seconds = time.perf_counter() - started
    return run


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


# The targets. The hard/soft misses left (9 of 371) were studied one by one; most are
# labels that contradict their own message or the rest of the corpus, kept here so nobody
# "fixes" them by special-casing a file:
# - rfc3464-01.eml: "550 5.1.1 <a@b>... User Unknown" labelled mailboxfull (soft); 5.1.1 is
#   RFC 3463's "bad destination mailbox address" and every other 5.1.1 file is userunknown.
# - lhost-opensmtpd-12.eml: a delay notice (Action: delayed, Status: 4.0.0, "only a temporary
#   failure report") labelled hard; the README defines hard notaccept as a 5.x.x one.
# - lhost-apachejames-01.eml: the label's address has one zero fewer than the message's
#   "RCPT TO: 000000000000@...", so no reading of the message can match it.
# - lhost-v5sendmail-01.eml: the label's address is cut short ("kijitora@exampl").
# - rhost-messagelabs-03.eml ("542 a@b Rejected") and rfc3464-06.eml ("554 ... Service
#   unavailable", the unknown user only in mail.local's line, which names no address) are
#   userunknown by rules of Sisimai's that no wording in the reply supports.
# - lhost-sendmail-27.eml (5.0.0 "User unknown" answering RCPT: filtered there, userunknown
#   everywhere else), lhost-x2-01.eml ("This user doesn't have a example.co.jp account":
#   filtered there, userunknown in rhost-yahooinc-03.eml) and lhost-amazonses-01.eml ("5.1.0 -
#   Unknown address error 550-'5.7.1 ... Access denied'") are the remaining real misses.
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
