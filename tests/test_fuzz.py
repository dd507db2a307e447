"""Hostile input, the CI-sized fuzz (issue 7): mutated corpus bounces through ``bounce.parse``,
mutated import documents through the ledger, schemathesis against the JSON API.

The mutators are bench/fuzz.py's, which runs the long version (100,000 messages). Hypothesis
draws which corpus message and which mutations (so a failure shrinks to a short list of
mutations), derandomized so CI sees the same cases every run. The corpus lives beside the
repository (``../shared/bounce-corpus``); its tests skip, saying why, where it is absent.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz import (
    BASE_DOCUMENT,
    LIGHT_MUTATIONS,
    MUTATIONS,
    SwallowedExceptions,
    build_app_services,
    check_import,
    check_report,
    fuzz_api,
    fuzz_range,
    load_corpus,
    mutate_document,
    seed_api,
)
from bounce import Kind, parse

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "bounce-corpus"
_NO_CORPUS = f"no bounce corpus at {CORPUS}"
_CORPUS: list[bytes] = load_corpus(CORPUS) if (CORPUS / "emails").is_dir() else []
needs_corpus = pytest.mark.skipif(not _CORPUS, reason=_NO_CORPUS)
# The long version allows 1 s a message; a shared CI runner gets more slack, not none.
SLOW_SECONDS = 3.0


@pytest.fixture
def swallowed() -> Iterator[SwallowedExceptions]:
    """Exceptions ``bounce.parse`` caught and logged itself: a detector that failed."""
    handler = SwallowedExceptions()
    logger = logging.getLogger("bounce")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@needs_corpus
@settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    index=st.integers(min_value=0, max_value=max(len(_CORPUS) - 1, 0)),
    names=st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=4),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_mutated_corpus_messages_parse_without_raising(
    index: int, names: list[str], seed: int, swallowed: SwallowedExceptions
) -> None:
    rng = random.Random(seed)
    data = _CORPUS[index]
    for name in names:
        data = LIGHT_MUTATIONS[name](rng, data, _CORPUS)
    before = len(swallowed.records)
    started = time.perf_counter()
    report = parse(data)
    took = time.perf_counter() - started
    assert check_report(report) is None
    assert took < SLOW_SECONDS, f"{names} took {took:.2f} s"
    assert len(swallowed.records) == before, swallowed.records[-1].exc_info


@needs_corpus
def test_two_thousand_seeded_mutations_of_the_corpus() -> None:
    run = fuzz_range(_CORPUS, seed=7, start=0, stop=2000, light=True)
    assert run.messages == 2000
    assert run.exceptions == []
    assert run.bad_reports == []
    assert run.swallowed == []
    assert run.slowest < SLOW_SECONDS, run.slowest_index
    assert sum(run.kinds.values()) == 2000
    assert set(run.mutations) == set(MUTATIONS)  # every mutation was exercised


DSN = (
    "From: MAILER-DAEMON@mx.example\nSubject: Undelivered Mail Returned to Sender\n"
    'MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary="b"'
    "\n\n--b\nContent-Type: text/plain\n\n<ann@example.com>: host mx.example.com said: 550 5.1.1"
    " unknown user\n{line}\n\n--b\nContent-Type: message/delivery-status\n\n"
    "Reporting-MTA: dns; mx.example\n\nFinal-Recipient: rfc822; ann@example.com\n"
    "Action: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 unknown user\n{line}\n--b--\n"
)


@pytest.mark.parametrize("unit", ["a", "x.y", "5.1.1 ", "a@"])
def test_a_long_line_without_an_address_is_read_in_linear_time(unit: str) -> None:
    """Regression (fuzz seed 7, mutant 361): a long run of local-part characters made the
    address pattern rescan the run from every position, so a 100 KB line held one parse for
    minutes (``text_about`` after the DSN's diagnostic, ``_addresses`` in plain notices)."""
    raw = DSN.format(line=unit * (100_000 // len(unit))).encode()
    started = time.perf_counter()
    report = parse(raw)
    assert time.perf_counter() - started < SLOW_SECONDS
    assert report.kind is Kind.BOUNCE
    assert [r.address for r in report.recipients] == ["ann@example.com"]


# -- import documents and the JSON API ------------------------------------------------------------


@pytest.fixture(scope="module")
def app_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, str, str]]:
    """bench/fuzz.py's services on a SQLite ledger holding its base document, the app and a key."""
    import asyncio

    services, app, tenant, key = build_app_services(tmp_path_factory.mktemp("fuzz"))
    yield services, app, tenant, key
    asyncio.run(services.close())


@settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_mutated_import_documents_are_applied_or_refused_by_position(
    app_env: tuple[Any, Any, str, str], seed: int
) -> None:
    services, _, tenant, _ = app_env
    doc = mutate_document(random.Random(seed))
    report = services.ledger.import_document(copy.deepcopy(doc), tenant=tenant)
    assert check_import(doc, report) is None


def test_a_section_that_is_not_a_list_is_refused_by_name(
    app_env: tuple[Any, Any, str, str],
) -> None:
    services, _, tenant, _ = app_env
    doc = {**copy.deepcopy(BASE_DOCUMENT), "invoices": "Infinity"}
    report = services.ledger.import_document(doc, tenant=tenant)
    assert check_import(doc, report) is None
    assert [(e.where, e.reason) for e in report.errors] == [
        ("$", "'invoices' must be a list of records")
    ]


def test_schemathesis_finds_no_server_error(app_env: tuple[Any, Any, str, str]) -> None:
    _, app, _, key = app_env
    run = fuzz_api(app, key, examples=2, seed=7, known=seed_api(app, key))
    assert run.operations >= 30
    assert run.server_errors == []
    assert run.statuses[200] > 0 and run.statuses[422] > 0


def test_an_unknown_message_status_is_a_422(app_env: tuple[Any, Any, str, str]) -> None:
    """Regression (schemathesis): ``GET /messages?status=<not a state>`` was a 500."""
    from starlette.testclient import TestClient

    _, app, _, key = app_env
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        bad = client.get("/api/v1/messages", params={"status": "þ\x8e"})
        good = client.get("/api/v1/messages", params={"status": "sent"})
    assert bad.status_code == 422, bad.text
    assert good.status_code == 200
    assert all(m["status"] == "sent" for m in good.json()["items"])


@pytest.mark.parametrize(
    ("section", "field", "stamp"),
    [
        ("payment_plans", "approve_by", "9999-12-31T23:59:59-23:59"),
        ("subscriptions", "started_at", "0001-01-01T00:00:00+14:00"),
        ("invoices", "due_at", "9999-12-31"),
    ],
)
def test_a_stamp_at_the_edge_of_time_is_refused_at_its_field(
    app_env: tuple[Any, Any, str, str], section: str, field: str, stamp: str
) -> None:
    """Regression (fuzz seed 7, documents 1069 and 1284): moving such a stamp to UTC raised
    OverflowError out of the import instead of refusing the record."""
    services, _, tenant, _ = app_env
    doc = copy.deepcopy(BASE_DOCUMENT)
    doc[section][0][field] = stamp
    report = services.ledger.import_document(doc, tenant=tenant)
    assert check_import(doc, report) is None
    assert [e.where for e in report.errors][:1] == [f"{section}[0].{field}"]
    assert "out of range" in report.errors[0].reason


@pytest.mark.parametrize("path", ["/holds/{n}/lift", "/holds/{n}", "/threads/{n}"])
def test_a_row_id_past_the_id_columns_is_a_422(
    app_env: tuple[Any, Any, str, str], path: str
) -> None:
    """Regression (schemathesis): SQLite's driver raised OverflowError on an id past 64 bits,
    and PostgreSQL on one past its INTEGER (2**31 - 1), both a 500; the largest id is a 404."""
    from starlette.testclient import TestClient

    _, app, _, key = app_env
    method = "DELETE" if path == "/holds/{n}" else "POST" if "lift" in path else "GET"
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        huge = [client.request(method, "/api/v1" + path.format(n=n)) for n in (2**64, 2**31)]
        missing = client.request(method, "/api/v1" + path.format(n=2**31 - 1))
    assert [r.status_code for r in huge] == [422, 422], [r.text for r in huge]
    assert missing.status_code == 404, missing.text


def test_a_long_to_header_is_searched_for_verp_in_linear_time() -> None:
    """Regression (fuzz seed 7, mutants 48085 and 94939): a 100 KB run of local-part characters
    in To: made the VERP pattern rescan it from every position; one parse took 132 s."""
    run = "550-" * 25_000
    verp = "bounces+0123456789abcdef-abcdefghijklmnop@relay.example"
    raw = DSN.format(line="").replace("Subject:", f"To: bounces+1.2={run}x@mbox.test\nSubject:", 1)
    started = time.perf_counter()
    report = parse(raw.encode())
    assert time.perf_counter() - started < SLOW_SECONDS
    assert report.kind is Kind.BOUNCE and report.verp is None
    tagged = DSN.format(line="").replace("Subject:", f"To: {run}x {verp}\nSubject:", 1)
    assert parse(tagged.encode()).verp == verp
