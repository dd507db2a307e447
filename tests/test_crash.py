"""Crash safety, the short run: a real ``dunmail run`` SIGKILLed again and again, on both databases.

The harness is ``bench/crash.py`` (the full run: 10,000 messages, 20 kills); see its docstring
for how kill moments are drawn and how each duplicate is explained. Here: a few hundred queued
reminders, five kills at seeded random moments while mail is flowing, then a drain and a
SIGTERM. ``DUNMAIL_CRASH_SEED`` replays other kill moments.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.crash import CrashResult, run_crash

MESSAGES = 300
KILLS = 5
SEED = int(os.environ.get("DUNMAIL_CRASH_SEED", "20261130"))


def _summary(result: CrashResult) -> str:
    """What a failure message needs to be replayed and understood."""
    return (
        f"seed {result.seed}; lost {result.lost_uids}; unexplained {result.unexplained}; "
        f"foreign {result.foreign_ids}; statuses {result.statuses}; problems {result.problems}; "
        f"lease lost {result.lease_lost}; lives {result.lives}"
    )


@pytest.mark.slow
def test_sigkilled_engine_loses_nothing_and_duplicates_only_uncommitted_sends(
    tmp_path: Path, db_url: str
) -> None:
    backend = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    result = run_crash(
        backend,
        db_url,
        tmp_path,
        messages=MESSAGES,
        kills=KILLS,
        seed=SEED,
        startup_kill=1.0,
        timeout=120,
    )
    why = _summary(result)
    assert result.kills == KILLS, why
    assert result.kills_mid_send >= 1, why  # at least one kill while mail was flowing
    # Nothing lost: every queued row was accepted by the server (none failed, it accepts all).
    assert result.lost == 0, why
    assert result.statuses == {"sent": MESSAGES}, why
    # A duplicate only from a kill between the 250 and the commit, with the same Message-ID.
    assert result.explained == result.duplicates, why
    # No message went out under two Message-IDs: the distinct IDs accepted are the rows.
    assert result.foreign_ids == [], why
    assert result.distinct_ids == MESSAGES, why
    assert result.accepted == MESSAGES + sum(d["accepted"] - 1 for d in result.duplicate_detail)
    assert result.stop_exit_code == 0, why
    assert result.problems == [], why
