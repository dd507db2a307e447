"""The SMTP fault matrix (issue 7): a scripted loopback server misbehaves, the outbox records it.

One table, one row per fault. Each row runs through the real outbox (conftest's ``services`` with
the relay or the tenant's own SMTP pointed at ``tests/smtpd.py``), on SQLite and on PostgreSQL:

1. the first delivery pass meets the fault: the message's status, each recipient's status and
   reply code, the attempt count, ``last_error`` and the retry time must be as the row says;
2. then the fault is fixed (``fix``), outlasted (``down_for``) or left in place, and the outbox
   is driven at each due time of the injected clock until the row's final state.

After every pass, nothing may be lost: no claim is left behind (dunmail's "sending" is a
leased row), a sent message has a recipient that accepted it, a failed one says why, and
everything else waits for a future ``next_attempt_at``. At the end every recipient that
accepted has exactly one copy, every copy of a message has the same Message-ID, and no tenant
or recipient domain got more than its token bucket allows.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from dunmail.app import Services
from mailer.clock import FixedClock
from mailer.outbound.models import (
    OPEN_MESSAGE_STATES,
    DeliveryAttempt,
    Message,
    MessageRecipient,
    MessageStatus,
    RecipientStatus,
)
from mailer.outbound.requests import EnqueueRequest
from tests.smtpd import RecordingServer
from tests.test_outbox import _context

DEFERRED, SENT, FAILED = (
    MessageStatus.DEFERRED,
    MessageStatus.SENT,
    MessageStatus.FAILED,
)
ACCEPTED, DEFERRED_R, REJECTED = (
    RecipientStatus.ACCEPTED,
    RecipientStatus.DEFERRED,
    RecipientStatus.REJECTED,
)

AP, BILLING = "ap@globex.example", "billing@initech.example"  # two recipient domains
CA = "<the test CA>"  # stands for the trustme CA's PEM file in a row's ``smtp`` table
TIMEOUT = 0.3  # seconds: the endpoint's timeout_seconds, for the silent-server rows

# Small limits so the outage row has to queue behind them: the tenant's bucket (8 a minute) is
# the binding one, since its 50 messages are split over two domains of 4 a minute each.
TENANT_RATE = 8
DOMAIN_RATE = 4
DELIVERY = {
    "first_retry_after": timedelta(minutes=1),
    "max_retry_after": timedelta(minutes=2),
    "domain_rate_per_minute": DOMAIN_RATE,
}
# Retry delays: equal jitter over the upper half of the nominal delay, which doubles from
# first_retry_after (mailer/outbound/retry.py).
FIRST_RETRY = (timedelta(seconds=30), timedelta(minutes=1))
SECOND_RETRY = (timedelta(minutes=1), timedelta(minutes=2))


@dataclass(frozen=True)
class Case:
    """One fault: the server's script, how the tenant connects, and what must be recorded.

    ``rcpt`` lists (status, reply code) per recipient in address order after the first pass;
    code 0 means no reply came (a dropped connection, a timeout, a failed TLS handshake).
    """

    id: str
    script: dict[str, Any]  # smtpd_options while the fault lasts
    status: MessageStatus  # after the first pass
    rcpt: tuple[tuple[RecipientStatus, int], ...]
    error: str | None  # re.search() on Message.last_error; None: no error recorded
    received: int = 0  # transactions the server accepted on the first pass (one per recipient)
    fix: dict[str, Any] | None = None  # script changes before the retry; None: fault stays
    then: MessageStatus | None = None  # final status after retrying (default: ``status``)
    attempts: int | None = 1  # attempts in all, at the end; None: varies (the outage row)
    smtp: dict[str, Any] | None = None  # the tenant's own [smtp] table; None: the relay
    endpoint: dict[str, Any] = field(default_factory=dict)  # extra endpoint settings
    messages: int = 1  # the outage row queues a backlog
    down_for: timedelta | None = None  # server stopped (connections refused) this long
    no_mail: bool = False  # the server must never see MAIL FROM (refused before it)
    postgres: bool = False  # on PostgreSQL too (every row runs on SQLite)

    @property
    def final(self) -> MessageStatus:
        return self.then or self.status


D0, R552, R554 = (DEFERRED_R, 0), (REJECTED, 552), (REJECTED, 554)
OK = (ACCEPTED, 250)
HEAL = {"greeting": None, "rcpt": None, "data": None, "drop": None, "silent": None}

CASES = [
    # -- replies ---------------------------------------------------------------------------------
    Case(
        "421-at-greeting",
        {"greeting": "421 4.3.2 Service shutting down"},
        DEFERRED,
        ((DEFERRED_R, 421),) * 2,
        r"^421 4\.3\.2 Service shutting down$",
        fix=HEAL,
        then=SENT,
        attempts=2,
    ),
    Case(
        "450-at-rcpt-for-all",
        {"rcpt": "450 4.2.1 Mailbox temporarily unavailable"},
        DEFERRED,
        ((DEFERRED_R, 450),) * 2,
        r"^450 4\.2\.1 Mailbox temporarily unavailable$",
        fix=HEAL,
        then=SENT,
        attempts=2,
    ),
    Case(
        "451-at-rcpt-for-one",
        {"rcpt": {BILLING: "451 4.3.0 Temporary lookup failure"}},
        DEFERRED,
        (OK, (DEFERRED_R, 451)),
        None,  # the message went to ap@; billing@'s row holds the 451
        received=1,
        fix=HEAL,
        then=SENT,
        attempts=2,
    ),
    Case(
        "550-at-rcpt-for-all",
        {"rcpt": "550 5.1.1 No such user"},
        FAILED,
        ((REJECTED, 550),) * 2,
        r"^550 5\.1\.1 No such user$",
    ),
    Case(
        "452-too-many-recipients",
        # RFC 5321 s4.5.3.1.10 would have the rest sent in a later transaction; with one
        # envelope per recipient (each its own VERP return path) no transaction has two.
        {"max_recipients": 1},
        SENT,
        (OK, OK),
        None,
        received=2,
    ),
    Case(
        "552-over-advertised-size",
        {"size_limit": 2048},  # RFC 1870 SIZE: refused before MAIL FROM
        FAILED,
        (R552,) * 2,
        r"^552 5\.3\.4 message is \d+ bytes; the server takes at most 2048$",
        no_mail=True,
    ),
    Case(
        "552-at-end-of-data",
        {"size_limit": None, "data": "552 5.3.4 Message size exceeds fixed limit"},
        FAILED,
        (R552,) * 2,
        r"^552 5\.3\.4 Message size exceeds fixed limit$",
    ),
    Case(
        "554-at-end-of-data",
        {"data": "554 5.7.1 Message rejected as spam"},
        FAILED,
        (R554,) * 2,
        r"^554 5\.7\.1 Message rejected as spam$",
    ),
    Case(
        "451-at-end-of-data",
        {"data": "451 4.3.0 Queue file write error"},
        DEFERRED,
        ((DEFERRED_R, 451),) * 2,
        r"^451 4\.3\.0 Queue file write error$",
        fix=HEAL,
        then=SENT,
        attempts=2,
    ),
    # -- the connection --------------------------------------------------------------------------
    Case(
        "dropped-mid-data",
        {"drop": "data"},
        DEFERRED,
        (D0,) * 2,
        r"^connection lost during DATA$",
        fix=HEAL,
        then=SENT,
        attempts=2,
    ),
    Case(
        "silent-at-greeting",
        {"silent": "greeting"},
        DEFERRED,
        (D0,) * 2,
        r"^timed out during connect",
        endpoint={"timeout_seconds": TIMEOUT},
        fix=HEAL,
        then=SENT,
        attempts=2,
        no_mail=True,
    ),
    Case(
        "silent-after-data",  # the worst moment: the server has the message, we never hear
        {"silent": "data_end"},
        DEFERRED,
        (D0,) * 2,
        r"^timed out during DATA$",
        endpoint={"timeout_seconds": TIMEOUT},
        fix=HEAL,
        then=SENT,
        attempts=2,
    ),
    Case(
        "down-10-minutes-then-back",
        {},
        DEFERRED,
        (D0,),
        r"^Error connecting to 127\.0\.0\.1 on port \d+",
        messages=50,
        down_for=timedelta(minutes=10),
        then=SENT,
        attempts=None,
        postgres=True,  # ~150 passes of claim and record: the dialect-specific part
    ),
    # -- TLS, own-SMTP mode (certificate checks on unless the tenant opts out) ------------------
    Case(
        "tls-handshake-fails-starttls",
        {"tls": "starttls", "tls_broken": True},
        DEFERRED,
        (D0,) * 2,
        r"^TLS handshake failed during STARTTLS: ",
        smtp={"tls": "starttls", "ca_file": CA},
        attempts=2,  # one retry: still refused, never sent in clear text
        no_mail=True,
    ),
    Case(
        "tls-handshake-fails-implicit",  # port 465 settings against a plain-text server
        {},
        DEFERRED,
        (D0,) * 2,
        r"^TLS handshake failed during connect: ",
        smtp={"tls": "implicit", "ca_file": CA},
        attempts=2,
        no_mail=True,
    ),
    Case(
        "untrusted-cert-starttls-refused",
        {"tls": "starttls"},
        DEFERRED,
        (D0,) * 2,
        r"^TLS handshake failed during STARTTLS: unable to get local issuer certificate$",
        smtp={"tls": "starttls"},
        attempts=2,
        no_mail=True,
    ),
    Case(
        "untrusted-cert-implicit-refused",
        {"tls": "implicit"},
        DEFERRED,
        (D0,) * 2,
        r"^TLS handshake failed during connect: unable to get local issuer certificate$",
        smtp={"tls": "implicit"},
        attempts=2,
        no_mail=True,
    ),
    Case(
        "untrusted-cert-starttls-verify-off",
        {"tls": "starttls"},
        SENT,
        (OK,) * 2,
        None,
        received=2,  # one envelope per recipient
        smtp={"tls": "starttls", "verify_certificate": False},
    ),
    Case(
        "untrusted-cert-implicit-verify-off",
        {"tls": "implicit"},
        SENT,
        (OK,) * 2,
        None,
        received=2,  # one envelope per recipient
        smtp={"tls": "implicit", "verify_certificate": False},
    ),
    Case(
        "private-ca-starttls",
        {"tls": "starttls"},
        SENT,
        (OK,) * 2,
        None,
        received=2,  # one envelope per recipient
        smtp={"tls": "starttls", "ca_file": CA},
    ),
    Case(
        "private-ca-implicit",
        {"tls": "implicit"},
        SENT,
        (OK,) * 2,
        None,
        received=2,  # one envelope per recipient
        smtp={"tls": "implicit", "ca_file": CA},
    ),
]


@pytest.mark.parametrize(
    ("db_url", "case"),
    [
        pytest.param(db, c, id=f"{db}-{c.id}", marks=pytest.mark.smtpd_options(**c.script))
        for c in CASES
        for db in ("sqlite", "postgresql")
        if db == "sqlite" or c.postgres
    ],
    indirect=["db_url"],
)
async def test_fault_matrix(
    case: Case, services: Services, clock: FixedClock, smtpd: RecordingServer
) -> None:
    try:
        recipients = _enqueue(services, case)
        start = clock.now()
        if case.down_for is not None:
            await smtpd.close()  # nothing listens: every connection is refused

        report = await services.sending.deliver()
        _check_nothing_lost(services, start)
        attempted = [(m, r) for m, r in _outbox(services) if m.attempts]
        assert attempted and report.attempted == len(attempted)
        for message, rows in attempted:
            assert message.status is case.status
            assert [(r.status, r.code) for r in rows] == list(case.rcpt)
            assert message.attempts == 1
            if case.error is None:
                assert message.last_error is None
            else:
                assert re.search(case.error, message.last_error or ""), message.last_error
            if message.status in OPEN_MESSAGE_STATES:
                retry_in = message.next_attempt_at - start
                assert FIRST_RETRY[0] <= retry_in <= FIRST_RETRY[1]
                assert message.finished_at is None
            else:
                assert message.finished_at == start
        assert len(smtpd.envelopes) == case.received
        if case.no_mail:
            assert "MAIL" not in smtpd.commands, smtpd.commands

        if case.down_for is not None:
            back_at = start + case.down_for
            while await _next_pass(services, clock, before=back_at):
                assert smtpd.envelopes == []
            clock.set(back_at)
            await smtpd.start(smtpd.host, smtpd.port)
        elif case.fix is not None:
            smtpd.script(**case.fix)
        if case.final in OPEN_MESSAGE_STATES:  # the fault stays: one more try, same result
            assert await _next_pass(services, clock)
            for message, _ in _outbox(services):
                retry_in = message.next_attempt_at - clock.now()
                assert SECOND_RETRY[0] <= retry_in <= SECOND_RETRY[1]
        else:
            while await _next_pass(services, clock):
                pass
            clock.advance(timedelta(days=1))  # a final state is final
            assert (await services.sending.deliver()).attempted == 0
    finally:
        await services.close()

    outbox = _outbox(services)
    assert len(outbox) == case.messages
    assert {m.status for m, _ in outbox} == {case.final}
    for message, _ in outbox:
        if case.attempts is None:  # a throttled message may not be tried until the server is back
            assert message.attempts >= 1
        else:
            assert message.attempts == case.attempts
    if case.final in OPEN_MESSAGE_STATES:
        assert all(re.search(case.error or "", m.last_error or "") for m, _ in outbox)
    _check_copies(outbox, smtpd)
    _check_rates(services, recipients)
    if case.down_for is not None:
        _check_backlog_drained(services, back_at=start + case.down_for, messages=case.messages)


# -- set-up --------------------------------------------------------------------------------------


@pytest.fixture
def transport() -> None:
    """This module's shared services send over SMTP, to ``smtpd``."""
    return None


@pytest.fixture
def services_config(case: Case, smtpd: RecordingServer, tls_ca_file: Path) -> dict[str, Any]:
    """This module's shared ``services``: acme sends to ``smtpd`` through the relay, or through
    its own SMTP where the case says so, with the case's endpoint settings."""
    server = {"host": smtpd.host, "port": smtpd.port, **case.endpoint}
    tenant: dict[str, Any] = {
        "name": "Acme Supplies",
        "email": "ar@acme.example",
        "rate_per_minute": TENANT_RATE,
    }
    relay: dict[str, Any] = {"domain": "relay.example"}
    if case.smtp is None:
        relay |= server
    else:
        smtp = {k: (str(tls_ca_file) if v == CA else v) for k, v in case.smtp.items()}
        tenant |= {"delivery": "smtp", "smtp": {**server, **smtp}}
    return {"relay": relay, "delivery": DELIVERY, "tenants": {"acme": tenant}}


def _enqueue(services: Services, case: Case) -> list[str]:
    """The row's messages: one to both recipients, or a backlog alternating two domains."""
    tenant_id = services.tenants.id(None)
    everyone: list[str] = []
    with Session(services.engine) as session:
        for n in range(case.messages):
            to = (
                [AP, BILLING]
                if case.messages == 1
                else [f"ap{n}@{('globex', 'initech')[n % 2]}.example"]
            )
            everyone += to
            services.sending.queue.enqueue(
                session,
                EnqueueRequest(
                    tenant_id=tenant_id,
                    kind="invoice_reminder",
                    recipients=to,
                    context=_context(),
                    document=f"invoice:{n}",
                    version=1,
                ),
                now=services.clock.now(),
            )
        session.commit()
    return everyone


async def _next_pass(
    services: Services, clock: FixedClock, *, before: datetime | None = None
) -> bool:
    """Move the clock to the next due message (unless that is ``before`` or later) and run
    one delivery pass there; False when nothing is due."""
    with Session(services.engine) as session:
        due = session.exec(
            select(Message.next_attempt_at)
            .where(col(Message.status).in_(OPEN_MESSAGE_STATES))
            .order_by(col(Message.next_attempt_at))
        ).first()
    if due is None or (before is not None and due >= before):
        return False
    clock.set(max(clock.now(), due))
    await services.sending.deliver()
    _check_nothing_lost(services, clock.now())
    return True


# -- checks --------------------------------------------------------------------------------------


def _outbox(services: Services) -> list[tuple[Message, list[MessageRecipient]]]:
    with Session(services.engine) as session:
        messages = session.exec(select(Message).order_by(col(Message.id))).all()
        rows = session.exec(select(MessageRecipient).order_by(col(MessageRecipient.address))).all()
    return [(m, [r for r in rows if r.message_id == m.id]) for m in messages]


def _check_nothing_lost(services: Services, now: datetime) -> None:
    """After a pass: no claim left, and each message sent, failed with a reason, or waiting."""
    for message, rows in _outbox(services):
        statuses = {r.status for r in rows}
        assert message.claimed_until is None and message.claimed_by is None, message.uid
        if message.status is SENT:
            assert ACCEPTED in statuses and statuses <= {ACCEPTED, REJECTED}
        elif message.status is FAILED:
            assert statuses == {REJECTED} and message.last_error, message.uid
            assert message.finished_at is not None
        else:
            assert message.status in OPEN_MESSAGE_STATES, message.status
            assert message.next_attempt_at > now, message.uid  # every due message was tried
            assert RecipientStatus.PENDING in statuses or DEFERRED_R in statuses


def _check_copies(
    outbox: list[tuple[Message, list[MessageRecipient]]], smtpd: RecordingServer
) -> None:
    """Each recipient that accepted has one copy, with the message's one Message-ID."""
    copies = Counter(
        (str(msg["Message-ID"]).strip("<>").partition("@")[0], rcpt)
        for msg, envelope in zip(smtpd.messages, smtpd.envelopes, strict=True)
        for rcpt in envelope.rcpt_tos
    )
    expected = {(m.uid, r.address): 1 for m, rows in outbox for r in rows if r.status is ACCEPTED}
    assert dict(copies) == expected


def _check_rates(services: Services, recipients: list[str]) -> None:
    """Every attempt took a token from its tenant's and its domains' buckets, so each key's
    attempts must fit a token bucket: any k of them within t take at most burst + rate * t."""
    with Session(services.engine) as session:
        attempts = session.exec(select(DeliveryAttempt)).all()
    by_key: dict[str, list[datetime]] = {"tenant": []}
    for attempt in attempts:
        by_key["tenant"].append(attempt.started_at)
        for domain in {r["address"].rpartition("@")[2] for r in attempt.recipients}:
            by_key.setdefault(domain, []).append(attempt.started_at)
    assert set(by_key) - {"tenant"} <= {a.rpartition("@")[2] for a in recipients}
    for key, times in by_key.items():
        rate = TENANT_RATE if key == "tenant" else DOMAIN_RATE
        times.sort()
        for i, first in enumerate(times):
            for j in range(i, len(times)):
                allowed = rate + rate * (times[j] - first) / timedelta(minutes=1)
                assert j - i + 1 <= allowed, f"{key}: {j - i + 1} attempts in {times[j] - first}"


def _check_backlog_drained(services: Services, *, back_at: datetime, messages: int) -> None:
    """Once the server is back, the backlog goes as fast as the limits allow: after the last
    retry timer (at most max_retry_after) at the tenant's rate, the binding limit here."""
    with Session(services.engine) as session:
        done = session.exec(
            select(DeliveryAttempt.finished_at).where(DeliveryAttempt.code == 250)
        ).all()
    assert len(done) == messages and min(done) >= back_at
    allowed = services.config.delivery.max_retry_after + timedelta(minutes=messages / TENANT_RATE)
    assert max(done) - back_at <= allowed
