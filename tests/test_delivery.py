"""The pure delivery rules: per-recipient results, 4xx vs 5xx, backoff with jitter, expiry."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from mailer.config import DeliveryConfig
from mailer.errors import PermanentDeliveryError, TransientDeliveryError
from mailer.outbound.delivery import decide
from mailer.outbound.models import AttemptOutcome, MessageStatus, RecipientStatus
from mailer.outbound.retry import retry_after
from mailer.outbound.transport import RecipientResult, SendResult

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
POLICY = DeliveryConfig()


def _decide(
    result: SendResult | None = None,
    error: BaseException | None = None,
    *,
    now: datetime = T0,
    attempts: int = 1,
    previously_accepted: int = 0,
    recipients: tuple[str, ...] = ("a@x.test", "b@y.test"),
):  # type: ignore[no-untyped-def]
    return decide(
        recipients=recipients,
        previously_accepted=previously_accepted,
        attempts=attempts,
        created_at=T0,
        now=now,
        result=result,
        error=error,
        policy=POLICY,
        rng=random.Random(7),
    )


def _result(*codes: int, data: int | None = 250) -> SendResult:
    rcpts = tuple(
        RecipientResult(a, c, "text") for a, c in zip(("a@x.test", "b@y.test"), codes, strict=True)
    )
    return SendResult(recipients=rcpts, code=data, message="ok", endpoint="e")


def test_all_accepted_is_sent() -> None:
    d = _decide(_result(250, 250))
    assert d.status is MessageStatus.SENT and d.finished and d.next_attempt_at is None
    assert {u.status for u in d.recipients} == {RecipientStatus.ACCEPTED}
    assert d.outcome is AttemptOutcome.ACCEPTED


def test_partial_4xx_defers_only_that_recipient() -> None:
    d = _decide(_result(250, 451))
    assert d.status is MessageStatus.DEFERRED
    assert [u.status for u in d.recipients] == [RecipientStatus.ACCEPTED, RecipientStatus.DEFERRED]
    assert d.next_attempt_at is not None and d.next_attempt_at > T0
    assert d.outcome is AttemptOutcome.PARTIAL


def test_partial_5xx_is_sent_with_a_rejected_recipient() -> None:
    d = _decide(_result(250, 550))
    assert d.status is MessageStatus.SENT
    assert d.recipients[1].status is RecipientStatus.REJECTED
    assert d.outcome is AttemptOutcome.PARTIAL


def test_all_refused_5xx_fails() -> None:
    d = _decide(_result(550, 553, data=None))
    assert d.status is MessageStatus.FAILED and d.outcome is AttemptOutcome.REJECTED


def test_rcpt_accepted_but_no_data_reply_is_not_accepted() -> None:
    # A 250 to RCPT means nothing until the server takes the DATA.
    d = _decide(_result(250, 550, data=None))
    assert d.recipients[0].status is not RecipientStatus.ACCEPTED


def test_transient_error_defers_everyone() -> None:
    d = _decide(error=TransientDeliveryError(421, "4.3.2 try later"))
    assert d.status is MessageStatus.DEFERRED and d.code == 421
    assert {u.status for u in d.recipients} == {RecipientStatus.DEFERRED}


def test_permanent_error_fails_at_once() -> None:
    d = _decide(error=PermanentDeliveryError(554, "5.7.1 rejected"))
    assert d.status is MessageStatus.FAILED and d.finished


def test_previously_accepted_makes_a_late_failure_sent() -> None:
    d = _decide(
        error=PermanentDeliveryError(550, "no"), recipients=("b@y.test",), previously_accepted=1
    )
    assert d.status is MessageStatus.SENT


def test_expiry_turns_4xx_into_failure() -> None:
    late = T0 + POLICY.max_age
    d = _decide(error=TransientDeliveryError(451, "later"), now=late, attempts=30)
    assert d.status is MessageStatus.FAILED and d.outcome is AttemptOutcome.EXPIRED
    just_before = T0 + POLICY.max_age - timedelta(seconds=1)
    assert _decide(error=TransientDeliveryError(451, "x"), now=just_before).status is (
        MessageStatus.DEFERRED
    )


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(1)
    first, cap = timedelta(minutes=5), timedelta(hours=4)
    delays = [retry_after(n, first=first, maximum=cap, rng=rng) for n in range(1, 12)]
    for n, d in enumerate(delays, start=1):
        nominal = min(cap, first * 2 ** (n - 1))
        assert nominal / 2 <= d <= nominal
    assert delays[-1] <= cap
    assert len(set(delays[:4])) == 4
    samples = {retry_after(3, first=first, maximum=cap, rng=rng) for _ in range(20)}
    assert len(samples) > 10  # jitter spreads retries out
