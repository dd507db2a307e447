"""The sign-in throttle keeps its counts in the database, on SQLite and PostgreSQL: every engine
process serving the web app sees the same attempts, a restart forgets none, and one statement
checks and counts, so concurrent attempts cannot all slip under a limit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from threading import Barrier

from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from dunmail.web.models import LoginCounter
from dunmail.web.throttle import LoginThrottle, Refused
from mailer.clock import FixedClock
from mailer.config import LoginConfig


def _rows(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(LoginCounter)).one()


def test_five_attempts_lock_the_pair_for_every_process_until_the_window_passes(
    engine: Engine, clock: FixedClock
) -> None:
    one, other = LoginThrottle(engine), LoginThrottle(engine)  # two processes, one database
    for _ in range(4):
        assert one.claim("Bo@Acme.example ", "10.0.0.1", clock.now()) is None
    assert other.claim("bo@acme.example", "10.0.0.1", clock.now()) is None
    clock.advance(timedelta(minutes=5))
    refused = one.claim("BO@acme.example", "10.0.0.1", clock.now())
    assert refused == Refused("address_and_client", 10 * 60)  # the window opened 5 minutes ago
    # Another client, or another email, is not held up by this pair.
    assert one.claim("bo@acme.example", "10.0.0.2", clock.now()) is None
    assert one.claim("ana@acme.example", "10.0.0.1", clock.now()) is None

    clock.advance(timedelta(minutes=10))
    assert other.claim("bo@acme.example", "10.0.0.1", clock.now()) is None
    assert one.count("bo@acme.example", "10.0.0.1", clock.now())["address_and_client"] == 1
    # The first attempt of a new overall window drops the keys whose windows ended.
    clock.advance(timedelta(minutes=15))
    one.claim("cy@acme.example", "10.0.0.3", clock.now())
    assert _rows(engine) == 4  # only cy's four keys are left


def test_guessing_one_email_from_many_clients_meets_the_address_limit(
    engine: Engine, clock: FixedClock
) -> None:
    throttle = LoginThrottle(engine, LoginConfig(per_address_and_client=5, per_address=20))
    for n in range(20):
        assert throttle.claim("bo@acme.example", f"10.0.1.{n}", clock.now()) is None
    refused = throttle.claim("bo@acme.example", "192.0.2.7", clock.now())
    assert refused is not None and refused.limit == "address"
    assert throttle.claim("ana@acme.example", "192.0.2.7", clock.now()) is None


def test_spraying_many_emails_from_one_client_meets_the_client_limit(
    engine: Engine, clock: FixedClock
) -> None:
    throttle = LoginThrottle(engine, LoginConfig(per_client=30, window_minutes=10))
    for n in range(30):
        assert throttle.claim(f"user{n}@acme.example", "10.0.0.9", clock.now()) is None
    clock.advance(timedelta(seconds=90))
    refused = throttle.claim("user99@acme.example", "10.0.0.9", clock.now())
    assert refused == Refused("client", 10 * 60 - 90)
    assert throttle.claim("user99@acme.example", "10.0.0.10", clock.now()) is None


def test_the_overall_limit_holds_across_clients_and_names(
    engine: Engine, clock: FixedClock
) -> None:
    throttle = LoginThrottle(engine, LoginConfig(overall=40))
    for n in range(40):
        assert throttle.claim(f"user{n}@acme.example", f"10.0.{n}.1", clock.now()) is None
    refused = throttle.claim("new@acme.example", "10.9.9.9", clock.now())
    assert refused is not None and refused.limit == "overall" and refused.retry_after == 15 * 60


def test_refused_attempts_spend_nobody_elses_limits(engine: Engine, clock: FixedClock) -> None:
    """A client hammering a locked name is refused without counting: the client's and the
    overall limits stay where they were, for the client's other names and for everyone."""
    throttle = LoginThrottle(engine, LoginConfig(per_client=10, overall=12))
    for _ in range(5):
        throttle.claim("bo@acme.example", "10.0.0.1", clock.now())
    for _ in range(200):
        assert throttle.claim("bo@acme.example", "10.0.0.1", clock.now()) is not None
    counts = throttle.count("bo@acme.example", "10.0.0.1", clock.now())
    assert counts == {"address_and_client": 5, "address": 5, "client": 5, "overall": 5}
    assert throttle.claim("ana@acme.example", "10.0.0.2", clock.now()) is None

    # A client past its limit spraying new names leaves no rows behind: the table cannot grow.
    for n in range(5):
        throttle.claim(f"user{n}@acme.example", "10.0.0.1", clock.now())
    rows = _rows(engine)
    for n in range(100):
        refused = throttle.claim(f"fresh{n}@acme.example", "10.0.0.1", clock.now())
        assert refused is not None and refused.limit == "client"
    assert _rows(engine) == rows


def test_a_sign_in_clears_its_pair_and_takes_back_its_attempt(
    engine: Engine, clock: FixedClock
) -> None:
    throttle = LoginThrottle(engine)
    for client in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
        throttle.claim("bo@acme.example", client, clock.now())
    throttle.claim("bo@acme.example", "10.0.0.1", clock.now())  # the right password, this time
    throttle.succeeded(" BO@acme.example", "10.0.0.1")
    counts = throttle.count("bo@acme.example", "10.0.0.1", clock.now())
    assert counts == {"address_and_client": 0, "address": 3, "client": 2, "overall": 3}
    assert throttle.count("bo@acme.example", "10.0.0.2", clock.now())["address_and_client"] == 1


def test_concurrent_attempts_never_pass_the_limit(engine: Engine, clock: FixedClock) -> None:
    """60 attempts on one name released at once from 60 threads, each with its own connection:
    exactly the limit is let through (a check, then a count, let 59 through)."""
    throttle = LoginThrottle(engine)
    start = Barrier(60)

    def attempt(n: int) -> Refused | None:
        start.wait()
        return throttle.claim("bo@acme.example", "10.0.0.1", clock.now())

    engine.pool.dispose()
    with ThreadPoolExecutor(60) as pool:
        results = list(pool.map(attempt, range(60)))
    assert sum(r is None for r in results) == 5
    assert all(r.limit == "address_and_client" for r in results if r is not None)
    assert throttle.count("bo@acme.example", "10.0.0.1", clock.now())["address"] == 5
