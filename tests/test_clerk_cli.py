"""The clerk's words on the command line: ``dunmail inbox``, ``inbox show``, ``suppressions``
and ``bounce report`` say "address does not exist (5.1.1)" where the engine stores
``userunknown``; ``--json`` keeps the codes for scripts. SQLite: the services beneath run on
both databases in tests/test_clerk_pages.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dunmail.app import Services
from mailer.outbound.memory import MemoryTransport
from tests.conftest import DEMO_DOC
from tests.test_bounce_ingest import _sent, dsn
from tests.test_cli import dunmail, write_config


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_inbox_suppressions_and_report_speak_plain_words(
    services: Services, transport: MemoryTransport, tmp_path: Path, db_url: str
) -> None:
    try:
        assert services.ledger.import_document(DEMO_DOC, tenant="acme").errors == []
        sent = await _sent(services, transport)
        assert services.inbound.ingest([("file:b.eml", dsn(sent))]).matched == 1
    finally:
        await services.close()
    config = write_config(tmp_path, db_url, 2525)

    listed = dunmail(config, "inbox")
    assert listed.returncode == 0, listed.stderr
    assert "New invoice to ap@globex.example: bounced: address does not exist (5.1.1)" in (
        listed.stdout
    )
    (row,) = json.loads(dunmail(config, "inbox", "--json").stdout)
    assert row["last"]["reason"] == "userunknown"  # scripts keep the codes

    shown = dunmail(config, "inbox", "show", str(row["id"]))
    assert (
        "sent to ap@globex.example, billing@globex.example: accepted by the receiving server (250)"
        in (shown.stdout)
    )
    assert "new_invoice" not in shown.stdout and "userunknown" not in shown.stdout

    blocked = dunmail(config, "suppressions", COLUMNS="250")
    assert blocked.returncode == 0, blocked.stderr
    flat = " ".join(blocked.stdout.split())
    for words in ("blocked since 2026-03", "address does not exist (5.1.1)", "New invoice"):
        assert words in flat, blocked.stdout
    assert (
        json.loads(dunmail(config, "suppressions", "--json").stdout)[0]["evidence"]["reason"]
        == "userunknown"
    )

    report = dunmail(config, "bounce", "report", "--since", "2026-03-01")
    assert "bounced: address does not exist (5.1.1)" in report.stdout
    assert "address does not exist" in report.stdout.split("since")[-1]  # the summary too
