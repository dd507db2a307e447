"""The suite's long tests run first, spread evenly over the xdist workers.

``dev.py test`` runs ``pytest -n auto --dist worksteal``: each worker is first handed one
contiguous share of the collected tests (worker k gets tests k*n/W to (k+1)*n/W), and a worker
that runs dry later steals the tail of the longest queue. In collection order (file names) the
long tests sat where they fell, several in the last share and some at its very end: a 20-second
test that starts last decides when the suite ends, however well the short ones are shared.

So, after collection, the long tests are dealt out longest first to the worker whose share is
lightest so far, and each worker's share starts with its long tests; the other tests keep
their order. Work stealing then only moves short tests at the end. Which tests are long, and
roughly how long, is the table below (seconds on a loaded 2-CPU machine, from a full run's
``--durations``); a test missing from it only runs where collection put it, so the table can
lag behind.
"""

from __future__ import annotations

import pytest

# Node-id prefix -> seconds per test (each parametrised case of a prefix counts on its own).
LONG: dict[str, float] = {
    "tests/test_fuzz.py::test_schemathesis": 27,
    "tests/test_crash.py::": 20,
    "tests/test_throttle_cluster.py::test_a_back_off_seen": 15,
    "tests/test_throttle_cluster.py::test_three_processes": 15,
    "tests/test_run_workers.py::test_three_delivery_processes": 15,
    "tests/test_run.py::test_demo_engine_delivers": 14,
    "tests/test_matrix.py::": 12,
    "tests/test_bounce_evidence_corpus.py::test_regenerated_cases": 12,
    "tests/test_import_concurrency.py::test_a_killed_import": 10,
    "tests/test_quarter.py::": 10,
    "tests/test_tick_cli.py::test_two_tick_processes": 9,
    "tests/test_tick_cli.py::test_a_tick_killed_mid_pass": 9,
    "tests/test_import_concurrency.py::test_a_second_import": 9,
    "tests/test_import_concurrency.py::test_the_engine_keeps_answering": 9,
    "tests/test_run_ops.py::test_ctrl_c": 9,
    "tests/test_pdf.py::test_every_document_renders_through_the_pool": 6,
    "tests/test_attacks_login.py::test_a_flood_of_failed_sign_ins": 6,
    "tests/test_queries.py::test_a_query_holds_the_invoice": 6,
    "tests/test_attacks_http.py::": 6,
    "tests/test_fault_matrix.py::test_fault_matrix[postgresql-down": 6,
    "tests/test_fault_matrix.py::test_fault_matrix[sqlite-down": 5,
    "tests/test_cli.py::test_worker_killed_mid_send": 5,
    "tests/test_clerk_browser.py::test_find_a_customer": 5,
    "tests/test_attacks_sandbox.py::test_a_template_past_its_time": 5,
}


def expected_seconds(nodeid: str) -> float:
    """The table's figure for the longest prefix of ``nodeid``, else 0 (a short test)."""
    matches = [prefix for prefix in LONG if nodeid.startswith(prefix)]
    return LONG[max(matches, key=len)] if matches else 0.0


def long_first(nodeids: list[str], workers: int) -> list[int]:
    """The new order, as indices into ``nodeids``: each worker's contiguous share starts with
    its long tests (longest first, each to the lightest share so far), then short ones."""
    weights = [expected_seconds(nodeid) for nodeid in nodeids]
    long = sorted((i for i, w in enumerate(weights) if w), key=lambda i: -weights[i])
    if not long:
        return list(range(len(nodeids)))
    shares: list[list[int]] = [[] for _ in range(max(workers, 1))]
    loads = [0.0] * len(shares)
    for index in long:
        lightest = loads.index(min(loads))
        shares[lightest].append(index)
        loads[lightest] += weights[index]
    short = [i for i, w in enumerate(weights) if not w]
    order: list[int] = []
    n = len(nodeids)
    for k, share in enumerate(shares):
        size = (k + 1) * n // len(shares) - k * n // len(shares)
        take = max(size - len(share), 0)
        order += share + short[:take]
        short = short[take:]
    return order + short


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every xdist worker collects and reorders alike (the controller checks the collections
    # are identical); workercount is the W of the shares above.
    workerinput = getattr(config, "workerinput", None)
    workers = int(workerinput["workercount"]) if workerinput else 1
    order = long_first([item.nodeid for item in items], workers)
    items[:] = [items[i] for i in order]
