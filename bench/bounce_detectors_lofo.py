"""How well the detectors generalise: the labelled corpus in-sample and leave-one-family-out.

    PYTHONPATH=. python bench/bounce_detectors_lofo.py [--misses]

Each family detector (Postfix, Exim, qmail, Exchange, ...) was written against its own mail
system's notices in the corpus, so its in-sample figures say little about mail from a system
nobody wrote a module for. This script reads every labelled message three ways:

* in-sample: the whole registry, as ``bounce.parse`` runs in production;
* leave-one-family-out: each message with the detectors written for its own family (its label's
  ``mta``, matched against each detector's ``families``) switched off, so only the generic
  readers and the other families' detectors see it;
* generic only: every family detector switched off: RFC 3464/5965/3834 and the prose reader.

and reports, for each, bounce detection, exact recipients, status (where the label says it is
explicit), the original Message-ID and false positives (a non-bounce read as a bounce or delay
notice), scored as ``tests/test_bounce_corpus.py`` scores them. ``--misses`` lists the files
each figure missed. Results also go to ``bench/results/bounce_detectors_lofo.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script, this file's folder is sys.path[0], where bench/bounce.py would shadow the
# bounce package: take the folder off the path before importing it.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

from bounce import Kind, Report, parse  # noqa: E402
from bounce.detectors.base import Detector  # noqa: E402
from bounce.registry import DETECTORS, generic_only, without_families  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "bounce-corpus"
RESULTS = ROOT / "bench" / "results"

Label = dict[str, Any]
Choice = Callable[[Label], Sequence[Detector]]


@dataclass
class Score:
    """Hits over cases for one figure, with the files that missed."""

    hits: int = 0
    cases: int = 0
    misses: list[str] = field(default_factory=list)

    def add(self, ok: bool, name: str) -> None:
        """Count one case."""
        self.cases += 1
        self.hits += ok
        if not ok:
            self.misses.append(name)

    @property
    def percent(self) -> float:
        """Hits as a percentage of cases (100 when there are none)."""
        return 100.0 * self.hits / self.cases if self.cases else 100.0


@dataclass
class Figures:
    """The five detection figures over one reading of the corpus."""

    detection: Score = field(default_factory=Score)
    recipients: Score = field(default_factory=Score)
    status: Score = field(default_factory=Score)
    message_id: Score = field(default_factory=Score)
    false_positives: list[str] = field(default_factory=list)

    def scores(self) -> list[tuple[str, Score]]:
        """The figures in reporting order."""
        return [
            ("detection", self.detection),
            ("recipients", self.recipients),
            ("status", self.status),
            ("message_id", self.message_id),
        ]


def load_labels(corpus: Path = CORPUS) -> list[Label]:
    """Every label row of the corpus."""
    lines = (corpus / "labels.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _accepted(row: Label) -> set[str]:
    return {a.lower() for a in [row["address"], *row.get("address_alternatives", [])] if a}


def score(figures: Figures, label: Label, report: Report) -> None:
    """Score one report against its label."""
    name = label["file"]
    if not label["is_bounce"]:
        if report.kind in (Kind.BOUNCE, Kind.DELAYED):
            figures.false_positives.append(name)
        return
    figures.detection.add(report.kind in (Kind.BOUNCE, Kind.DELAYED), name)
    rows = list({row["address"].lower(): row for row in label["recipients"]}.values())
    got = {r.address: r for r in report.recipients}
    exact = len(got) == len(rows) and all(_accepted(row) & set(got) for row in rows)
    figures.recipients.add(exact, name)
    if label["original_message_id"] is not None:
        ids = {label["original_message_id"], *label.get("original_message_id_alternatives", [])}
        figures.message_id.add(report.original_message_id in ids, name)
    for row in rows:
        if row["status_kind"] == "explicit":
            match = next((got[a] for a in _accepted(row) if a in got), None)
            figures.status.add(match is not None and match.status == row["status"], name)


def read_corpus(choose: Choice, labels: list[Label], corpus: Path = CORPUS) -> Figures:
    """Parse every labelled message with the detectors ``choose`` gives for its label."""
    figures = Figures()
    for label in labels:
        raw = (corpus / "emails" / label["file"]).read_bytes()
        score(figures, label, parse(raw, detectors=choose(label)))
    return figures


def in_sample(label: Label) -> Sequence[Detector]:
    """The whole registry."""
    return DETECTORS


def leave_family_out(label: Label) -> Sequence[Detector]:
    """The registry without the detectors written for this message's own family."""
    return without_families(label["mta"])


def generic(label: Label) -> Sequence[Detector]:
    """The standards and the prose reader alone."""
    return generic_only()


READINGS: dict[str, Choice] = {
    "in-sample": in_sample,
    "leave-one-family-out": leave_family_out,
    "generic only": generic,
}


def read_all(corpus: Path = CORPUS) -> dict[str, Figures]:
    """Every reading of the corpus, by name."""
    labels = load_labels(corpus)
    return {name: read_corpus(choose, labels, corpus) for name, choose in READINGS.items()}


def table(results: dict[str, Figures]) -> Iterator[str]:
    """The figures as a markdown table, one row per reading."""
    yield "| reading | detection | recipients | status | Message-ID | false positives |"
    yield "| --- | --- | --- | --- | --- | --- |"
    for name, figures in results.items():
        cells = [f"{s.percent:.1f} % ({s.hits}/{s.cases})" for _, s in figures.scores()]
        yield f"| {name} | {' | '.join(cells)} | {len(figures.false_positives)} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--misses", action="store_true", help="list the files each figure missed")
    args = parser.parse_args(argv)
    if not (args.corpus / "labels.jsonl").is_file():
        print(f"bounce_detectors_lofo.py: no corpus at {args.corpus}")
        return 1
    results = read_all(args.corpus)
    for line in table(results):
        print(line)
    if args.misses:
        for name, figures in results.items():
            print(f"\n{name}")
            for title, s in figures.scores():
                print(f"  {title}: {s.misses}")
            print(f"  false positives: {figures.false_positives}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {
        name: {
            **{
                title: {"hits": s.hits, "cases": s.cases, "misses": s.misses}
                for title, s in figures.scores()
            },
            "false_positives": figures.false_positives,
        }
        for name, figures in results.items()
    }
    path = RESULTS / "bounce_detectors_lofo.json"
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
