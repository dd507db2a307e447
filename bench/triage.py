"""Reply triage accuracy over the labelled replies in tests/replies/ (bounce/triage.py).

Precision and recall per intent and per language, overall accuracy, and the two costs that
matter to a clerk: a wrong action (an action proposed that the reply does not call for, or
with the wrong date or address) and a missed action (a reply that calls for one, with none
proposed). Printed for the dev half (odd file numbers, the only ones looked at while
writing the phrases) and the held-out half (even numbers), decided in tests/replies/build.py
before any tuning.

Run: ``PYTHONPATH=. python -m bench.triage``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date
from email import policy
from email.parser import BytesParser
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path

from bounce.reply import reply_text
from bounce.triage import Intent, Verdict, triage_reply

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "replies"
ACTIONABLE = {Intent.ALREADY_PAID, Intent.DISPUTE, Intent.PROMISE_TO_PAY, Intent.WRONG_CONTACT}


@dataclass(frozen=True)
class Case:
    """One labelled reply."""

    file: str
    language: str
    intent: Intent
    promised_on: date | None
    new_address: str | None
    split: str
    raw: bytes

    def written_on(self) -> date:
        """The reply's Date, as a day in the writer's own offset."""
        headers = BytesParser(policy=policy.default).parsebytes(self.raw, headersonly=True)
        return parsedate_to_datetime(str(headers["Date"])).date()

    def body(self) -> str:
        return reply_text(self.raw)

    def known(self) -> frozenset[str]:
        """The sender's address: whoever writes is not the new contact they name."""
        headers = BytesParser(policy=policy.default).parsebytes(self.raw, headersonly=True)
        return frozenset({parseaddr(str(headers["From"]))[1].lower()})


def load_cases(corpus: Path = CORPUS) -> list[Case]:
    """Every labelled reply, in file order."""
    cases = []
    for line in (corpus / "labels.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        cases.append(
            Case(
                file=row["file"],
                language=row["language"],
                intent=Intent(row["intent"]),
                promised_on=date.fromisoformat(row["date"]) if row["date"] else None,
                new_address=row["new_address"],
                split=row["split"],
                raw=(corpus / row["file"]).read_bytes(),
            )
        )
    return cases


def judge(case: Case) -> Verdict:
    """The classifier's verdict on one labelled reply, told (as bounce/proposals.py tells it)
    that the sender's own address is no new contact."""
    return triage_reply(case.body(), written_on=case.written_on(), known=case.known())


def is_wrong_action(case: Case, verdict: Verdict) -> bool:
    """An action proposed that the reply does not call for, or with the wrong date/address."""
    if verdict.intent not in ACTIONABLE:
        return False
    if verdict.intent is not case.intent:
        return True
    if verdict.intent is Intent.PROMISE_TO_PAY and verdict.promised_on != case.promised_on:
        return verdict.promised_on is not None  # no date: a default hold, not a wrong one
    if verdict.intent is Intent.WRONG_CONTACT and verdict.new_address != case.new_address:
        return verdict.new_address is not None
    return False


def is_missed_action(case: Case, verdict: Verdict) -> bool:
    """A reply that calls for an action, with none proposed."""
    return case.intent in ACTIONABLE and verdict.intent not in ACTIONABLE


def report(name: str, judged: list[tuple[Case, Verdict]]) -> list[str]:
    """The lines printed for one half of the corpus."""
    lines = [f"## {name}: {len(judged)} replies"]
    correct = sum(v.intent is c.intent for c, v in judged)
    lines.append(f"intent accuracy {correct}/{len(judged)} = {correct / len(judged):.1%}")
    lines.append("| intent | language | precision | recall | support |")
    lines.append("|---|---|---|---|---|")
    languages = sorted({c.language for c, _ in judged})
    for intent in Intent:
        for language in [*languages, "all"]:
            rows = [(c, v) for c, v in judged if language in ("all", c.language)]
            tp = sum(c.intent is intent and v.intent is intent for c, v in rows)
            fp = sum(c.intent is not intent and v.intent is intent for c, v in rows)
            fn = sum(c.intent is intent and v.intent is not intent for c, v in rows)
            precision = f"{tp / (tp + fp):.0%}" if tp + fp else "-"
            recall = f"{tp / (tp + fn):.0%}" if tp + fn else "-"
            lines.append(f"| {intent.value} | {language} | {precision} | {recall} | {tp + fn} |")
    wrong = sum(is_wrong_action(c, v) for c, v in judged)
    missed = sum(is_missed_action(c, v) for c, v in judged)
    lines.append(
        f"wrong actions {wrong}/{len(judged)} = {wrong / len(judged):.1%}; "
        f"missed actions {missed}/{len(judged)} = {missed / len(judged):.1%}"
    )
    dated = [(c, v) for c, v in judged if c.intent is Intent.PROMISE_TO_PAY and c.promised_on]
    right = sum(v.promised_on == c.promised_on for c, v in dated)
    lines.append(f"promised dates read right: {right}/{len(dated)}")
    confusion = Counter((c.intent.value, v.intent.value) for c, v in judged if c.intent != v.intent)
    lines.append(
        "confusions (label -> verdict): "
        + (", ".join(f"{a}->{b} x{n}" for (a, b), n in confusion.most_common()) or "none")
    )
    return lines


def main() -> None:
    cases = load_cases()
    started = time.process_time()
    judged = [(c, judge(c)) for c in cases]
    cpu = time.process_time() - started
    for split in ("dev", "held_out"):
        print("\n".join(report(split, [(c, v) for c, v in judged if c.split == split])))  # noqa: T201
        print()  # noqa: T201
    print("\n".join(report("all", judged)))  # noqa: T201
    print(f"\nCPU {cpu * 1000 / len(cases):.2f} ms per reply (strip + classify)")  # noqa: T201


if __name__ == "__main__":
    main()
