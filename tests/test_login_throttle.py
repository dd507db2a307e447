"""The sign-in throttle keeps its counts in the database, on SQLite and PostgreSQL: every engine
process serving the web app sees the same failures, and a restart forgets none."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from dunmail.web.auth import LoginThrottle
from mailer.clock import FixedClock
from mailer.models import LoginFailure


def _rows(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(LoginFailure)).one()


def test_five_failures_lock_the_pair_for_every_process_until_the_window_passes(
    engine: Engine, clock: FixedClock
) -> None:
    one, other = LoginThrottle(engine), LoginThrottle(engine)  # two processes, one database
    for _ in range(4):
        one.failed("Bo@Acme.example ", "10.0.0.1", clock.now())
    assert not other.blocked("bo@acme.example", "10.0.0.1", clock.now())
    other.failed("bo@acme.example", "10.0.0.1", clock.now())
    assert one.blocked("BO@acme.example", "10.0.0.1", clock.now())
    # Another client, or another email, is not held up by this pair.
    assert not one.blocked("bo@acme.example", "10.0.0.2", clock.now())
    assert not one.blocked("ana@acme.example", "10.0.0.1", clock.now())

    clock.advance(timedelta(minutes=15))
    assert not other.blocked("bo@acme.example", "10.0.0.1", clock.now())
    other.failed("bo@acme.example", "10.0.0.1", clock.now())
    assert _rows(engine) == 1  # the aged failures went as the new one came


def test_guessing_one_email_from_many_clients_meets_the_email_limit(
    engine: Engine, clock: FixedClock
) -> None:
    throttle = LoginThrottle(engine, per_client=5, per_email=20)
    for n in range(20):
        assert not throttle.blocked("bo@acme.example", f"10.0.1.{n}", clock.now())
        throttle.failed("bo@acme.example", f"10.0.1.{n}", clock.now())
    assert throttle.blocked("bo@acme.example", "192.0.2.7", clock.now())
    assert not throttle.blocked("ana@acme.example", "192.0.2.7", clock.now())


def test_a_sign_in_clears_its_pairs_failures_only(engine: Engine, clock: FixedClock) -> None:
    throttle = LoginThrottle(engine)
    for client in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
        throttle.failed("bo@acme.example", client, clock.now())
    throttle.succeeded(" BO@acme.example", "10.0.0.1")
    with Session(engine) as session:
        left = session.exec(select(LoginFailure.client)).all()
    assert left == ["10.0.0.2"]
