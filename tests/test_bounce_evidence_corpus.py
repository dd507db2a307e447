"""The project's own generated bounces (tests/bounce_evidence) read back to their verdicts.

Each ``.eml`` there is a notice a real Postfix sent back for a failure we configured on a second,
receiving Postfix (unknown user, unknown domain, full mailbox, size limit, greeting timeout,
client/DNSBL/sender/header policy, relaying denied); its label says what it must come out as,
written from the case, not from the parser. The files are committed, so the per-file table runs
anywhere; one test regenerates a few cases live where Postfix can run, to show the committed
files are still what Postfix sends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bounce import Kind, Report, parse
from tests.bounce_evidence.generate import CASES, generate
from tests.postfix import unavailable_reason

EVIDENCE = Path(__file__).resolve().parent / "bounce_evidence"
KINDS = {"bounce": Kind.BOUNCE, "delayed": Kind.DELAYED}

# Verdicts bounce.parse gets wrong today, with why (strict: a fix must remove its entry).
KNOWN_WRONG: dict[str, str] = {}


def _labels() -> list[dict[str, Any]]:
    lines = (EVIDENCE / "labels.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def expected_verdict(label: dict[str, Any]) -> dict[str, Any]:
    """What the label says ``bounce.parse`` must answer."""
    return {
        "kind": KINDS[label["category"]].value,
        "original_message_id": label["original_message_id"],
        "recipients": [
            {
                "address": row["address"],
                "status": row["status"],
                "reply_code": int(row["replycode"]) if row["replycode"] else None,
                "reason": row["reason"],
                "hard": row["hardbounce"],
                "action": row["action"],
            }
            for row in label["recipients"]
        ],
    }


def verdict(report: Report) -> dict[str, Any]:
    """The same fields out of a parsed report."""
    return {
        "kind": report.kind.value,
        "original_message_id": report.original_message_id,
        "recipients": [
            {
                "address": r.address,
                "status": r.status,
                "reply_code": r.reply_code,
                "reason": r.reason,
                "hard": r.hard,
                "action": r.action,
            }
            for r in report.recipients
        ],
    }


def _param(label: dict[str, Any]) -> Any:
    why = KNOWN_WRONG.get(label["file"])
    marks = [pytest.mark.xfail(strict=True, reason=why)] if why else []
    return pytest.param(label, id=label["file"].removesuffix(".eml"), marks=marks)


LABELS = _labels()


def test_every_file_is_labelled_once() -> None:
    files = sorted(p.name for p in EVIDENCE.glob("*.eml"))
    assert sorted(label["file"] for label in LABELS) == files
    assert len(files) >= 12
    assert set(KNOWN_WRONG) <= set(files)


@pytest.mark.parametrize("label", [_param(label) for label in LABELS])
def test_generated_notice_parses_to_its_label(label: dict[str, Any]) -> None:
    raw = (EVIDENCE / label["file"]).read_bytes()
    assert verdict(parse(raw)) == expected_verdict(label)
    # The same bytes with CRLF line endings (as an IMAP fetch gives them) read the same.
    assert parse(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")) == parse(raw)


# Immediate refusals only (no queue timers): one per side that decides, within ~10 s.
LIVE = ("userunknown-rcpt", "hostunknown-nxdomain", "blocked-dnsbl")


@pytest.mark.slow
def test_regenerated_cases_read_as_the_committed_ones(tmp_path: Path) -> None:
    """Two real Postfix instances, three cases: what comes back now parses to the same verdict
    as the committed file (and the label), so the corpus has not drifted from Postfix."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    cases = [case for case in CASES if case.name in LIVE]
    result = generate(cases, tmp_path)
    assert result.missing == []
    committed = {label["file"]: label for label in LABELS}
    assert len(result.labels) == len(LIVE)
    for label in result.labels:
        assert label == committed[label["file"]]
        fresh = verdict(parse((tmp_path / label["file"]).read_bytes()))
        assert fresh == expected_verdict(label)
        assert fresh == verdict(parse((EVIDENCE / label["file"]).read_bytes()))
