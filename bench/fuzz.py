"""Fuzzing: mutated bounces through ``bounce.parse``, mutated import documents through the
ledger, and schemathesis against the JSON API's OpenAPI spec. Nothing may raise.

    PYTHONPATH=. python bench/fuzz.py [--messages 100000] [--documents 2000]
                                      [--api-examples 60] [--seed 7]

* bounce: every message of ``../shared/bounce-corpus`` (``emails/``, ``crlf/``, ``postfix/``)
  is the seed of ``--messages`` mutants, message ``i`` being corpus message ``i % n`` put through
  one to four mutations drawn by ``random.Random(f"{seed}:{i}")`` (see ``MUTATIONS``): byte
  flips, truncation, header duplication and removal, boundary corruption, CRLF/LF/CR mixing,
  charset garbage, huge lines, nesting in message/rfc822, base64 garbage, deep multipart
  nesting, splices of other corpus messages. ``bounce.parse`` promises never to raise; each
  mutant must also return a ``Report`` whose strings encode as UTF-8 (they are stored and shown),
  and finish within ``SLOW_SECONDS``. Exceptions the parser caught and logged itself (a detector
  that failed) are counted too: not a crash, but a bug.
* import: ``--documents`` mutants of a valid document that uses every section (values replaced
  by other types, NaN, huge numbers, bad dates and zones, unknown fields, dangling references,
  duplicated records, whole sections broken) through ``services.ledger.import_document`` on a SQLite
  ledger. Every record must be applied or refused at its position (``invoices[3]...``).
* api: schemathesis' Python API in-process against ``create_app(services)`` with an API key;
  every operation of the OpenAPI spec gets ``--api-examples`` positive and as many negative
  cases (and, where the path names a record, as many more pointed at a real one). The check is
  schemathesis' ``not_a_server_error``: no 5xx, no exception out of the app.

A finding is printed with what reproduces it (``--seed`` and the message's index, or the
document, or the request). Results go to ``bench/results/fuzz.json`` (a ``table`` for
``bench/run_all.py``); the exit status is 1 when anything was found. About two minutes on the
defaults. Arguments this script does not know are ignored with a note.
"""

from __future__ import annotations

import argparse
import base64
import copy
import functools
import json
import logging
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as a script, this file's own folder is sys.path[0], where bench/bounce.py would shadow the
# bounce package under test: take the folder off the path before importing the package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

from bounce import Kind, Recipient, Report, parse  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CORPUS = ROOT.parent / "shared" / "bounce-corpus"
SLOW_SECONDS = 1.0  # one message taking longer is a finding (a regex gone quadratic, say)
TARGET_MESSAGES = 100_000  # issue 7
MAX_BYTES = 2_000_000  # a mutant is cut here: a thousand copies of a 1 MB line prove nothing more


def load_corpus(corpus: Path = CORPUS) -> list[bytes]:
    """Every message of the corpus, as bytes, in a fixed order (bench/bounce.py's selection)."""
    paths = sorted(
        p for folder in ("emails", "crlf", "postfix") for p in (corpus / folder).glob("*")
    )
    return [p.read_bytes() for p in paths if p.is_file() and p.suffix != ".jsonl"]


# -- bounce mutations: each takes the rng, the message and the corpus, returns new bytes --------

Mutation = Callable[[random.Random, bytes, list[bytes]], bytes]
_BOUNDARY = re.compile(rb'boundary\s*=\s*"?([^";\r\n]+)"?', re.IGNORECASE)
_CHARSET = re.compile(rb'charset\s*=\s*"?([^";\s]+)"?', re.IGNORECASE)
_HEADER_LINE = re.compile(rb"^[!-9;-~]+:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*\r?\n", re.MULTILINE)
_GARBAGE_CHARSETS = [
    b"x-unknown",
    b"utf-7",
    b"utf-16",
    b"utf-32-be",
    b"\xff\xfe",
    b"",
    b"us-ascii\x00",
    b"iso-8859-99",
    b"cp65001",
    b"a" * 300,
    b"../../etc/passwd",
    b"base64",
]
_WORDS = [
    b"550 5.1.1 ",
    b"5.7.1",
    b"<a@b.example>",
    b"Final-Recipient: rfc822; ",
    b"Status: 5.",
    b"Diagnostic-Code: smtp; 550 ",
    b"=?utf-8?B?",
    b"?=",
    b"\x00",
    b"\xff\xfe",
    b"\xc3",
    b"--",
    b"Message-ID: <",
    b"original message follows",
    b"mailer-daemon@",
    b"@",
    b";",
    b":",
    b"\t",
    b" ",
]


def _pos(rng: random.Random, data: bytes) -> int:
    return rng.randrange(len(data) + 1)


def byte_flips(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    """XOR a few random bytes with random values."""
    if not data:
        return bytes([rng.randrange(256)])
    buf = bytearray(data)
    for _i in range(rng.choice((1, 2, 4, 8, 32, 256))):
        buf[rng.randrange(len(buf))] ^= rng.randrange(1, 256)
    return bytes(buf)


def insert_words(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    """Drop fragments a detector looks for (codes, field names, encoded-word halves) anywhere."""
    for _i in range(rng.randint(1, 12)):
        at = _pos(rng, data)
        data = data[:at] + rng.choice(_WORDS) + data[at:]
    return data


def cut_range(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    """Delete a random stretch."""
    start = _pos(rng, data)
    return data[:start] + data[start + rng.randint(1, 4096) :]


def truncate(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    """Keep only a prefix (a connection dropped mid-DATA)."""
    return data[: _pos(rng, data)]


def duplicate_header(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    """Repeat one header line (top level or nested) up to a thousand times."""
    lines = list(_HEADER_LINE.finditer(data))
    if not lines:
        return data
    found = rng.choice(lines)
    times = rng.choice((2, 3, 10, 1000))
    return data[: found.end()] + found.group(0) * times + data[found.end() :]


def remove_header(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    """Remove a few header lines (Content-Type, From, a boundary's declaration...)."""
    for _i in range(rng.randint(1, 4)):
        lines = list(_HEADER_LINE.finditer(data))
        if not lines:
            break
        found = rng.choice(lines)
        data = data[: found.start()] + data[found.end() :]
    return data


def corrupt_boundary(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    """Break a multipart boundary: declared empty or different, delimiters changed or dropped."""
    found = _BOUNDARY.search(data)
    if found is None:
        return data
    boundary = found.group(1)
    choice = rng.randrange(6)
    if choice == 0:  # declared as something else
        return data[: found.start(1)] + b"x" + boundary[1:] + data[found.end(1) :]
    if choice == 1:  # declared empty
        return data[: found.start()] + b'boundary=""' + data[found.end() :]
    if choice == 2:  # the closing delimiter lost
        return data.replace(b"--" + boundary + b"--", b"")
    if choice == 3:  # one delimiter line mangled
        at = data.find(b"--" + boundary, found.end())
        return data if at < 0 else data[:at] + b"-" + data[at + 3 :]
    if choice == 4:  # every delimiter of the first part doubled
        return data.replace(b"--" + boundary, b"--" + boundary + b"\n--" + boundary, 2)
    return data[: found.start(1)] + boundary * 50 + data[found.end(1) :]  # a 70+ byte boundary


def mix_line_endings(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    """Each line ends in LF, CRLF, CR or CRCRLF at random."""
    ends = (b"\n", b"\r\n", b"\r", b"\r\r\n")
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    return b"".join(line + rng.choice(ends) for line in lines)


def charset_garbage(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    """Unknown or hostile charsets in Content-Type, and broken encoded-words in headers."""
    found = list(_CHARSET.finditer(data))
    if found and rng.random() < 0.6:
        hit = rng.choice(found)
        return data[: hit.start(1)] + rng.choice(_GARBAGE_CHARSETS) + data[hit.end(1) :]
    word = b"=?" + rng.choice(_GARBAGE_CHARSETS) + rng.choice((b"?B?", b"?Q?", b"?X?"))
    word += rng.choice((b"!!!", b"=FF=FE", base64.b64encode(rng.randbytes(12)), b"")) + b"?="
    name = rng.choice((b"Subject", b"From", b"X-Failed-Recipients", b"Final-Recipient"))
    return name + b": " + word + b" " + word + b"\n" + data


def huge_line(rng: random.Random, data: bytes, _: list[bytes], *, limit: int = 0) -> bytes:
    """A very long line (up to 1 MB, or ``limit``) of letters, spaces, digits or status-like
    text."""
    unit = rng.choice((b"a", b" ", b"5", b"5.1.1 ", b"550-", b"x@", b"<", b"=", b"a@b.c "))
    size = rng.choice((10_000, 50_000, 100_000)) if rng.random() < 0.98 else 1_000_000
    size = min(size, limit or size)
    at = _pos(rng, data)
    return data[:at] + unit * (size // len(unit)) + data[at:]


def nest_rfc822(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    """Wrap the message as the returned original of a DSN, one to 40 times over."""
    for depth in range(rng.choice((1, 2, 5, 40))):
        data = (
            b"From: MAILER-DAEMON@mx.example\nSubject: Undelivered Mail\n"
            b"MIME-Version: 1.0\n"
            b'Content-Type: multipart/report; report-type=delivery-status; boundary="n%d"\n\n'
            b"--n%d\nContent-Type: text/plain\n\ndelivery failed\n\n"
            b"--n%d\nContent-Type: message/delivery-status\n\n"
            b"Final-Recipient: rfc822; u%d@nest.example\nAction: failed\nStatus: 5.1.1\n\n"
            b"--n%d\nContent-Type: message/rfc822\n\n%b\n--n%d--\n"
        ) % (depth, depth, depth, depth, depth, data, depth)
    return data


def base64_garbage(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    """Declare a body base64 (or quoted-printable) and fill it with what is not."""
    body = rng.choice(
        (
            b"!!!! not base64 ====\n" * 5,
            base64.b64encode(rng.randbytes(300))[:-3],  # bad padding
            b"QUJD\x00\xff====QUJD\n" * 3,
            rng.randbytes(200),
            b"=\n=4=ZZ=\n" * 10,
        )
    )
    encoding = rng.choice((b"base64", b"quoted-printable", b"x-uuencode", b"8bit"))
    part = b"Content-Type: text/plain\nContent-Transfer-Encoding: " + encoding + b"\n\n" + body
    found = _BOUNDARY.search(data)
    if found is not None:
        delim = b"\n--" + found.group(1) + b"\n"
        at = data.find(delim, found.end())
        if at >= 0:
            return data[: at + len(delim)] + part + delim + data[at + len(delim) :]
    return b"Content-Transfer-Encoding: " + encoding + b"\n" + data + b"\n" + body


def deep_multipart(rng: random.Random, data: bytes, _: list[bytes], *, limit: int = 0) -> bytes:
    """Nest the message in multipart/mixed 5 to 200 levels deep, or now and then 1,000 (past
    the stdlib parser's recursion limit); at most ``limit`` when given."""
    depth = rng.choice((5, 20, 50, 100, 200)) if rng.random() < 0.98 else 1000
    depth = min(depth, limit or depth)
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="d%d"\n\n--d%d\n' % (i, i) for i in range(depth)
    )
    tail = b"".join(b"\n--d%d--\n" % i for i in reversed(range(depth)))
    return b"From: postmaster@deep.example\nMIME-Version: 1.0\n" + head + data + tail


def splice(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    """Insert a stretch of another corpus message (a DSN part inside an ARF, say)."""
    other = rng.choice(corpus)
    start = _pos(rng, other)
    chunk = other[start : start + rng.randint(1, 8192)]
    at = _pos(rng, data)
    return data[:at] + chunk + data[at:]


MUTATIONS: dict[str, Mutation] = {
    m.__name__: m
    for m in (
        byte_flips,
        insert_words,
        cut_range,
        truncate,
        duplicate_header,
        remove_header,
        corrupt_boundary,
        mix_line_endings,
        charset_garbage,
        huge_line,
        nest_rfc822,
        base64_garbage,
        deep_multipart,
        splice,
    )
}


# The same mutations at CI size (tests/test_fuzz.py): lines of at most 20 KB, nesting at most
# 50 deep. The draws are the same, so a light mutant is its full-size twin, smaller.
LIGHT_MUTATIONS: dict[str, Mutation] = {
    **MUTATIONS,
    "huge_line": functools.partial(huge_line, limit=20_000),
    "deep_multipart": functools.partial(deep_multipart, limit=50),
}


def mutate(
    corpus: list[bytes], *, seed: int, index: int, light: bool = False
) -> tuple[bytes, list[str]]:
    """Mutant ``index`` of the run seeded ``seed``: corpus message ``index % len(corpus)`` under
    one to four mutations; returns it and the mutations' names (the reproducer)."""
    rng = random.Random(f"{seed}:{index}")
    data = corpus[index % len(corpus)]
    names = [rng.choice(list(MUTATIONS)) for _ in range(rng.choice((1, 1, 2, 2, 3, 4)))]
    table = LIGHT_MUTATIONS if light else MUTATIONS
    for name in names:
        data = table[name](rng, data, corpus)[:MAX_BYTES]
    return data, names


# -- checking one parse -----------------------------------------------------------------------


class SwallowedExceptions(logging.Handler):
    """Counts the exceptions ``bounce.parse`` caught and logged (a detector that failed)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            yield from _strings(getattr(value, f.name))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def check_report(report: object) -> str | None:
    """What is wrong with what ``bounce.parse`` returned, or None."""
    if not isinstance(report, Report):
        return f"returned {type(report).__name__}, not a Report"
    if not isinstance(report.kind, Kind):
        return f"kind {report.kind!r} is not a Kind"
    if not all(isinstance(r, Recipient) for r in report.recipients):
        return "a recipient is not a Recipient"
    for text in _strings(report):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return f"a string does not encode as UTF-8 (lone surrogate): {text[:80]!r}"
    return None


@dataclass
class BounceRun:
    """What the bounce fuzzing found."""

    messages: int = 0
    bytes: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    slowest_index: int = -1
    kinds: Counter[str] = field(default_factory=Counter)
    mutations: Counter[str] = field(default_factory=Counter)
    exceptions: list[dict[str, Any]] = field(default_factory=list)
    bad_reports: list[dict[str, Any]] = field(default_factory=list)
    slow: list[dict[str, Any]] = field(default_factory=list)
    swallowed: list[dict[str, Any]] = field(default_factory=list)


def fuzz_range(
    corpus: list[bytes], *, seed: int, start: int, stop: int, light: bool = False
) -> BounceRun:
    """Mutants ``start`` to ``stop`` through ``bounce.parse``; nothing may raise, be wrong or be
    slow. Each mutant depends only on the seed and its index, so ranges may run anywhere."""
    run = BounceRun()
    handler = SwallowedExceptions()
    logger = logging.getLogger("bounce")
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False  # count them, do not print 100,000
    started = time.perf_counter()
    try:
        for index in range(start, stop):
            data, names = mutate(corpus, seed=seed, index=index, light=light)
            where = {"seed": seed, "index": index, "mutations": names, "size": len(data)}
            run.mutations.update(names)
            run.bytes += len(data)
            before = len(handler.records)
            t0 = time.perf_counter()
            try:
                report = parse(data)
            except Exception as exc:  # the finding itself: parse promises never to raise
                run.exceptions.append({**where, "error": repr(exc)[:300]})
                continue
            took = time.perf_counter() - t0
            if took > run.slowest:
                run.slowest, run.slowest_index = took, index
            if took > SLOW_SECONDS:
                run.slow.append({**where, "seconds": round(took, 3)})
            if len(handler.records) > before:
                record = handler.records[-1]
                error = record.exc_info[1] if record.exc_info else None
                run.swallowed.append({**where, "logged": record.getMessage(), "error": repr(error)})
                del handler.records[:]
            problem = check_report(report)
            if problem:
                run.bad_reports.append({**where, "problem": problem})
            else:
                run.kinds[report.kind.value] += 1
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    run.messages = stop - start
    run.seconds = time.perf_counter() - started
    return run


_CORPUS: list[bytes] = []  # a worker process's copy, loaded once


def _worker_range(job: tuple[Path, int, int, int]) -> BounceRun:
    corpus_dir, seed, start, stop = job
    if not _CORPUS:
        _CORPUS.extend(load_corpus(corpus_dir))
    return fuzz_range(_CORPUS, seed=seed, start=start, stop=stop)


def fuzz_bounces(corpus_dir: Path, *, count: int, seed: int, workers: int) -> BounceRun:
    """``count`` mutants in chunks of 1,000 over ``workers`` processes, merged in index order."""
    import multiprocessing

    chunk = 1000
    jobs = [(corpus_dir, seed, i, min(i + chunk, count)) for i in range(0, count, chunk)]
    total = BounceRun()
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for done, part in enumerate(pool.imap(_worker_range, jobs), 1):
            total.messages += part.messages
            total.bytes += part.bytes
            if part.slowest > total.slowest:
                total.slowest, total.slowest_index = part.slowest, part.slowest_index
            total.kinds.update(part.kinds)
            total.mutations.update(part.mutations)
            for name in ("exceptions", "bad_reports", "slow", "swallowed"):
                getattr(total, name).extend(getattr(part, name))
            if done % 10 == 0 or done == len(jobs):
                rate = total.messages / (time.perf_counter() - started)
                print(f"  bounce: {total.messages:,} messages, {rate:,.0f}/s", flush=True)
    total.seconds = time.perf_counter() - started
    return total


# -- import documents ---------------------------------------------------------------------------

# The README's example document: every section, each record valid and referring to the others.
BASE_DOCUMENT: dict[str, Any] = {
    "customers": [
        {
            "id": "C-100",
            "name": "Globex",
            "locale": "en",
            "time_zone": "Europe/London",
            "chase": True,
            "contacts": [
                {"email": "ap@globex.example", "name": "AP", "roles": ["ap"], "send_invoices": True}
            ],
        }
    ],
    "invoices": [
        {
            "id": "erp-7781",
            "number": "INV-1042",
            "customer": "C-100",
            "currency": "EUR",
            "issued_at": "2026-03-01",
            "due_at": "2026-03-31",
            "status": "open",
            "lines": [
                {
                    "description": "Support",
                    "quantity": "1",
                    "unit_price": "120.00",
                    "tax_rate": "20",
                }
            ],
        }
    ],
    "credit_notes": [
        {
            "id": "cn-1",
            "number": "CN-7",
            "customer": "C-100",
            "currency": "EUR",
            "issued_at": "2026-03-12",
            "invoice": "erp-7781",
            "reason": "Goodwill for the late delivery",
            "lines": [{"description": "Goodwill", "quantity": "1", "unit_price": "10.00"}],
        }
    ],
    "payments": [
        {
            "id": "p-1",
            "customer": "C-100",
            "amount": "50.00",
            "currency": "EUR",
            "received_at": "2026-03-10T14:00:00Z",
            "method": "Visa •••• 4242",
            "receipt_number": "RCPT-5521",
            "invoices": [{"invoice": "erp-7781", "amount": "50.00"}],
        }
    ],
    "refunds": [
        {
            "id": "rf-1",
            "payment": "p-1",
            "amount": "20.00",
            "currency": "EUR",
            "refunded_at": "2026-03-11",
            "reason": "Duplicate charge",
            "method": "Visa •••• 4242",
            "receipt_number": "RF-310",
        }
    ],
    "autopay_failures": [
        {
            "id": "ap-1",
            "customer": "C-100",
            "invoice": "erp-7781",
            "amount": "70.00",
            "currency": "EUR",
            "attempted_at": "2026-03-31T09:00:00Z",
            "decline_reason": "insufficient_funds",
            "next_retry_at": "2026-04-03T09:00:00Z",
            "method": "Visa •••• 4242",
        }
    ],
    "subscriptions": [
        {
            "id": "sub-1",
            "customer": "C-100",
            "plan": "Business",
            "amount": "49.00",
            "currency": "EUR",
            "interval": "month",
            "status": "active",
            "started_at": "2026-03-02",
            "next_bill_at": "2026-04-02",
        }
    ],
    "estimates": [
        {
            "id": "est-9",
            "number": "EST-204",
            "customer": "C-100",
            "currency": "EUR",
            "issued_at": "2026-03-02",
            "valid_until": "2026-04-01",
            "status": "sent",
            "lines": [
                {
                    "description": "Migration",
                    "quantity": "3",
                    "unit_price": "400.00",
                    "tax_rate": "20",
                }
            ],
        }
    ],
    "payment_plans": [
        {
            "id": "pp-7",
            "number": "PP-7",
            "customer": "C-100",
            "currency": "EUR",
            "status": "proposed",
            "approve_by": "2026-04-20",
            "installments": [
                {"due_at": "2026-05-01", "amount": "35.00"},
                {"due_at": "2026-06-01", "amount": "35.00"},
            ],
            "invoices": ["erp-7781"],
        }
    ],
}
_SECTION_NAMES = tuple(BASE_DOCUMENT)
# What a JSON decoder can hand the importer (json.loads also gives NaN and Infinity, and lone
# surrogates from "\ud800"), with strings aimed at each rule of the format.
_HOSTILE: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    10**30,
    -(10**30),
    1.5,
    float("nan"),
    float("inf"),
    "",
    " ",
    "x" * 10_000,
    "\x00",
    "a\r\nBcc: x@evil.example",
    "\ud800",
    "１２３",
    "١٢.٥",
    "1e400",
    "1E-400",
    "NaN",
    "Infinity",
    "-0",
    "0.001",
    "12,50",
    " 12.50 ",
    "99999999999999999999999999999.99",
    "2026-02-30",
    "2026-03-01T25:00:00",
    "2026-03-01T12:00:00+24:00",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01",
    "0001-01-01T00:00:00+14:00",
    "2026-03-08T02:30:00",  # a wall-clock time that does not exist in America/New_York
    "Mars/Olympus",
    "../../etc/localtime",
    "Europe/London\x00",
    "America/New_York",
    "XXX",
    "eur",
    "€",
    "JPY",
    "KWD",
    "ap@globex.example",
    "Name <ap@globex.example>",
    "a@b.example, c@d.example",
    "erp-7781",
    "C-100",
    "p-1",
    "unknown-ref",
    "INV-1042",
    [],
    {},
    ["a"],
    [None],
    {"a": 1},
]


def _hostile(rng: random.Random) -> Any:
    value = rng.choice(_HOSTILE)
    return copy.deepcopy(value) if isinstance(value, list | dict) else value


def _containers(node: Any, out: list[Any]) -> list[Any]:
    """Every dict and list inside ``node`` (``node`` included)."""
    if isinstance(node, dict | list):
        out.append(node)
        for child in node.values() if isinstance(node, dict) else node:
            _containers(child, out)
    return out


def mutate_document(rng: random.Random) -> Any:
    """A mutant of ``BASE_DOCUMENT``: one to six edits anywhere in it, or a broken shape."""
    doc: Any = copy.deepcopy(BASE_DOCUMENT)
    roll = rng.random()
    if roll < 0.02:
        return _hostile(rng)  # not an object at all
    if roll < 0.1:  # many records at once: duplicates, renamed copies
        section = rng.choice(_SECTION_NAMES)
        records = doc[section]
        for i in range(rng.randint(1, 30)):
            record = copy.deepcopy(rng.choice(records))
            if rng.random() < 0.7 and "id" in record:
                record["id"] = f"{record['id']}-{i}"
                if "number" in record and rng.random() < 0.8:
                    record["number"] = f"{record['number']}-{i}"
            records.append(record)
    for _i in range(rng.randint(1, 6)):
        node = rng.choice(_containers(doc, []))
        action = rng.randrange(5)
        if isinstance(node, dict):
            keys = list(node)
            if action == 0 or not keys:
                node[rng.choice(("extra", "Id", "ID", "__proto__", "customers", "amount"))] = (
                    _hostile(rng)
                )
            elif action == 1:
                del node[rng.choice(keys)]
            else:
                node[rng.choice(keys)] = _hostile(rng)
        elif node:
            if action == 0:
                node.append(copy.deepcopy(rng.choice(node)))
            elif action == 1:
                del node[rng.randrange(len(node))]
            elif action == 2:
                rng.shuffle(node)
            else:
                node[rng.randrange(len(node))] = _hostile(rng)
        else:
            node.append(_hostile(rng))
    return doc


_AT_RECORD = re.compile(r"^(\w+)\[(\d+)\]")


def check_import(doc: Any, report: Any) -> str | None:
    """Every record of every section applied or refused at its position; else what is wrong."""
    errors = list(report.errors)
    for error in errors:
        if (
            not isinstance(error.where, str)
            or not isinstance(error.reason, str)
            or not error.reason
        ):
            return f"an error without a position or reason: {error!r}"
    if not isinstance(doc, dict):
        return None if errors else "a document that is not an object was accepted"
    for section, counts in report.counts().items():
        records = doc.get(section)
        if records is None:
            continue
        if not isinstance(records, list):
            named = (e.where == "$" and repr(section) in e.reason for e in errors)
            if not any(named):
                return f"{section} is not a list, and no error names it"
            continue
        refused = {
            int(m.group(2))
            for e in errors
            if (m := _AT_RECORD.match(e.where)) and m.group(1) == section
        }
        applied = counts.created + counts.updated + counts.unchanged
        if applied + len(refused) != len(records) or any(i >= len(records) for i in refused):
            return (
                f"{section}: {len(records)} records, {applied} applied, "
                f"{len(refused)} refused at {sorted(refused)[:10]}"
            )
    return None


@dataclass
class ImportRun:
    """What the import fuzzing found."""

    documents: int = 0
    records: int = 0
    applied: int = 0
    refused: int = 0
    seconds: float = 0.0
    exceptions: list[dict[str, Any]] = field(default_factory=list)
    unaccounted: list[dict[str, Any]] = field(default_factory=list)


def _record_count(doc: Any) -> int:
    if not isinstance(doc, dict):
        return 0
    return sum(len(v) for k, v in doc.items() if k in _SECTION_NAMES and isinstance(v, list))


def fuzz_imports(services: Any, tenant: str, *, count: int, seed: int) -> ImportRun:
    """``count`` mutated documents through ``services.ledger.import_document``, one ledger for
    all, so later documents update what earlier ones created."""
    run = ImportRun()
    started = time.perf_counter()
    for index in range(count):
        doc = mutate_document(random.Random(f"{seed}:import:{index}"))
        where = {"seed": seed, "index": index}
        run.records += _record_count(doc)
        try:
            report = services.ledger.import_document(copy.deepcopy(doc), tenant=tenant)
        except Exception as exc:  # the finding itself: a record must be refused, not crash
            sample = json.dumps(doc, default=repr)[:2000]
            run.exceptions.append({**where, "error": repr(exc)[:300], "document": sample})
            continue
        run.refused += len(report.errors)
        run.applied += sum(c.created + c.updated + c.unchanged for c in report.counts().values())
        problem = check_import(doc, report)
        if problem:
            sample = json.dumps(doc, default=repr)[:2000]
            run.unaccounted.append({**where, "problem": problem, "document": sample})
    run.documents = count
    run.seconds = time.perf_counter() - started
    return run


# -- the JSON API through schemathesis --------------------------------------------------------


@dataclass
class ApiRun:
    """What schemathesis found."""

    operations: int = 0
    cases: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[dict[str, Any]] = field(default_factory=list)
    unsatisfiable: list[str] = field(default_factory=list)  # modes no case could be made for


def seed_api(app: Any, key: str) -> dict[str, Any]:
    """Real records for path parameters (an invoice, a sent message, its thread, a hold), made
    through the API itself; returns the path parameter values that name them."""
    from starlette.testclient import TestClient

    known: dict[str, Any] = {"number": "INV-1042"}
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(app, base_url="http://testserver/api/v1", headers=headers) as client:
        sent = client.post("/invoices/INV-1042/send", json={"kind": "new_invoice"})
        if sent.status_code == 200:
            known["uid"] = sent.json()["uid"]
        threads = client.get("/threads").json()
        items = (
            threads.get("threads", threads.get("items", [])) if isinstance(threads, dict) else []
        )
        if items:
            known["thread_id"] = items[0]["id"]
        hold = client.post("/holds", json={"invoice": "INV-1042", "note": "fuzz"})
        if hold.status_code == 200:
            known["hold_id"] = hold.json()["id"]
    return known


def fuzz_api(app: Any, key: str, *, examples: int, seed: int, known: dict[str, Any]) -> ApiRun:
    """Every operation of the OpenAPI spec: ``examples`` positive and negative cases each, and
    as many again aimed at the records in ``known``; no response may be a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.result import Ok

    run = ApiRun()
    headers = {"Authorization": f"Bearer {key}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    started = time.perf_counter()

    def exercise(operation: Any, strategy: Any, label: str) -> None:
        @hypothesis_seed(seed)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def one(case: Any) -> None:
            run.cases += 1
            where = {"operation": f"{operation.method.upper()} {operation.path}", "mode": label}
            try:
                response = case.call(headers=headers)
            except Exception as exc:  # the app raised instead of answering
                run.server_errors.append({**where, "error": repr(exc)[:300], "curl": _curl(case)})
                return
            run.statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=[not_a_server_error], headers=headers)
            except Exception as exc:  # not_a_server_error failed: a 5xx
                run.server_errors.append(
                    {
                        **where,
                        "status": response.status_code,
                        "error": str(exc)[:300],
                        "curl": _curl(case),
                    }
                )

        try:
            one()
        except Unsatisfiable:  # e.g. no negative case exists for a GET without parameters
            run.unsatisfiable.append(f"{operation.method.upper()} {operation.path} ({label})")

    for result in schema.get_all_operations():
        if not isinstance(result, Ok):  # the spec itself is broken there: a finding too
            run.server_errors.append({"operation": "?", "error": repr(result.err())[:300]})
            continue
        operation = result.ok()
        run.operations += 1
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            exercise(operation, operation.as_strategy(mode), mode.value)
        names = {p.name for p in operation.path_parameters}
        if names and names <= set(known):
            fixed = {name: known[name] for name in names}
            exercise(operation, operation.as_strategy(path_parameters=fixed), "known records")
    run.seconds = time.perf_counter() - started
    return run


def _curl(case: Any) -> str:
    try:
        return str(case.as_curl_command(headers={"Authorization": "Bearer <key>"}))[:1000]
    except Exception:  # a reproducer is a courtesy; the finding stands without it
        return f"{case.method} {case.formatted_path}"


# -- the run --------------------------------------------------------------------------------------


def build_app_services(workdir: Path) -> tuple[Any, Any, str, str]:
    """Services on a fresh SQLite ledger (bench/_workload's tenant, mail kept in memory), the
    app over them and an API key: ``(services, app, tenant, key)``."""
    from bench._workload import TENANT, make_config
    from dunmail.app import build_services
    from dunmail.web.app import create_app
    from dunmail.web.keyring import create_key
    from mailer.clock import FixedClock
    from mailer.db import session_scope
    from mailer.outbound.memory import MemoryTransport

    config = make_config(workdir, f"sqlite:///{workdir / 'fuzz.db'}", None)
    clock = FixedClock(datetime(2026, 3, 16, 9, 0, tzinfo=UTC))
    services = build_services(config, clock, MemoryTransport())
    report = services.ledger.import_document(copy.deepcopy(BASE_DOCUMENT), tenant=TENANT)
    if report.errors:
        raise RuntimeError(f"the base document does not import: {report.errors}")
    with session_scope(services.engine) as session:
        _, key = create_key(
            session, tenant_id=services.tenants.id(TENANT), name="fuzz", now=clock.now()
        )
    return services, create_app(services), TENANT, key


def build_table(r: dict[str, Any]) -> list[dict[str, str]]:
    """The README rows (what, measured, target, notes) from the result figures."""
    b, i, a = r["bounce"], r["import"], r["api"]
    b_found = b["exceptions"] + b["bad_reports"]
    met = "met" if b["messages"] >= TARGET_MESSAGES and b_found == 0 else "NOT met"
    rows = [
        {
            "what": "fuzz: mutated corpus messages through bounce.parse",
            "measured": f"{b['messages']:,} messages, {b['exceptions']} exceptions, "
            f"{b['bad_reports']} bad reports",
            "target": f">= {TARGET_MESSAGES:,} messages, 0 exceptions ({met})",
            "notes": f"seed {r['seed']}; {b['corpus']} corpus messages x 1-4 of "
            f"{len(MUTATIONS)} mutations; {b['megabytes']:,.0f} MB in {b['seconds']:.0f} s; "
            f"slowest {b['slowest_seconds'] * 1000:.0f} ms ({b['slow']} over "
            f"{SLOW_SECONDS:.0f} s); {b['swallowed']} detector exceptions caught inside parse",
        },
        {
            "what": "fuzz: mutated import documents through "
            "services.ledger.import_document (SQLite)",
            "measured": f"{i['documents']:,} documents, {i['exceptions']} exceptions, "
            f"{i['unaccounted']} records unaccounted",
            "target": "0 exceptions; every record applied or refused at its position "
            f"({'met' if i['exceptions'] + i['unaccounted'] == 0 else 'NOT met'})",
            "notes": f"{i['records']:,} records: {i['applied']:,} applied, {i['refused']:,} "
            f"errors; {i['seconds']:.0f} s",
        },
        {
            "what": "fuzz: schemathesis against /openapi.json (in-process ASGI)",
            "measured": f"{a['cases']:,} requests over {a['operations']} operations, "
            f"{a['server_errors']} server errors",
            "target": f"no 5xx ({'met' if a['server_errors'] == 0 else 'NOT met'})",
            "notes": f"{a['examples']} positive + {a['examples']} negative cases per operation, "
            f"and as many on real records where the path names one; statuses "
            f"{', '.join(f'{k}: {v}' for k, v in sorted(a['statuses'].items()))}; "
            f"{a['seconds']:.0f} s",
        },
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=TARGET_MESSAGES)
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--api-examples", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"fuzz.py: ignoring {' '.join(unknown)}")
    if not (args.corpus / "emails").is_dir():
        print(f"fuzz.py: no corpus at {args.corpus}")
        return 1
    logging.basicConfig(level=logging.CRITICAL)  # the app logs every refusal; findings are ours
    corpus = load_corpus(args.corpus)
    started = time.perf_counter()
    print(f"fuzz: {args.messages:,} mutants of {len(corpus)} corpus messages, seed {args.seed}")
    bounce_run = fuzz_bounces(
        args.corpus, count=args.messages, seed=args.seed, workers=args.workers
    )
    with tempfile.TemporaryDirectory(prefix="dunmail-fuzz-") as workdir:
        services, app, tenant, key = build_app_services(Path(workdir))
        try:
            print(f"fuzz: {args.documents:,} import documents")
            import_run = fuzz_imports(services, tenant, count=args.documents, seed=args.seed)
            print(f"fuzz: schemathesis, {args.api_examples} examples per operation and mode")
            known = seed_api(app, key)
            api_run = fuzz_api(app, key, examples=args.api_examples, seed=args.seed, known=known)
        finally:
            import asyncio

            asyncio.run(services.close())
    findings = {
        "bounce_exceptions": bounce_run.exceptions,
        "bounce_bad_reports": bounce_run.bad_reports,
        "bounce_slow": bounce_run.slow,
        "bounce_swallowed": bounce_run.swallowed[:50],
        "import_exceptions": import_run.exceptions,
        "import_unaccounted": import_run.unaccounted,
        "api_server_errors": api_run.server_errors,
    }
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "seed": args.seed,
        "seconds": round(time.perf_counter() - started, 1),
        "bounce": {
            "messages": bounce_run.messages,
            "corpus": len(corpus),
            "megabytes": round(bounce_run.bytes / 1e6, 1),
            "seconds": round(bounce_run.seconds, 1),
            "rate": round(bounce_run.messages / bounce_run.seconds, 1),
            "slowest_seconds": round(bounce_run.slowest, 4),
            "slowest_index": bounce_run.slowest_index,
            "exceptions": len(bounce_run.exceptions),
            "bad_reports": len(bounce_run.bad_reports),
            "slow": len(bounce_run.slow),
            "swallowed": len(bounce_run.swallowed),
            "kinds": dict(bounce_run.kinds.most_common()),
            "mutations": dict(sorted(bounce_run.mutations.items())),
        },
        "import": {
            "documents": import_run.documents,
            "records": import_run.records,
            "applied": import_run.applied,
            "refused": import_run.refused,
            "seconds": round(import_run.seconds, 1),
            "exceptions": len(import_run.exceptions),
            "unaccounted": len(import_run.unaccounted),
        },
        "api": {
            "operations": api_run.operations,
            "examples": args.api_examples,
            "cases": api_run.cases,
            "seconds": round(api_run.seconds, 1),
            "statuses": {str(k): v for k, v in sorted(api_run.statuses.items())},
            "server_errors": len(api_run.server_errors),
            "unsatisfiable": api_run.unsatisfiable,
        },
        "findings": findings,
    }
    result["table"] = build_table(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fuzz.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print()
    for name, found in findings.items():
        for item in found[:5]:
            print(f"FINDING {name}: {json.dumps(item)[:600]}")
        if len(found) > 5:
            print(f"FINDING {name}: ... {len(found) - 5} more in bench/results/fuzz.json")
    for row in result["table"]:
        print("| " + " | ".join(row.values()) + " |")
    crashed = any(
        findings[k]
        for k in (
            "bounce_exceptions",
            "bounce_bad_reports",
            "import_exceptions",
            "import_unaccounted",
            "api_server_errors",
        )
    )
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
