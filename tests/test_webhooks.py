"""Outbound webhooks to a real HTTP receiver on loopback, on SQLite and PostgreSQL.

The receiver is the standard library's ``ThreadingHTTPServer`` on 127.0.0.1 port 0: it records
each request and answers 500 to the first ``fail`` of them. Events come from the real paths: a
send through the outbox (MemoryTransport) and an ingested DSN (tests/test_bounce_ingest.py).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from dunmail.app import Services
from mailer.clock import FixedClock
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.models import WebhookDelivery, WebhookStatus
from mailer.outbound.webhooks import GIVE_UP_AFTER, verify_signature
from tests.conftest import DEMO_DOC, sent_to
from tests.test_bounce_ingest import dsn
from tests.test_inbox import _auto_reply

SECRET_ENV = "DUNMAIL_TEST_WEBHOOK_SECRET"
SECRET = "whsec-test-3f9a0c1d2e"


@dataclass
class Receiver:
    """What the loopback endpoint was sent; ``fail`` requests get a 500 first."""

    url: str
    fail: int = 0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def events(self) -> list[str]:
        return [json.loads(body)["type"] for _, body in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            box.requests.append((dict(self.headers.items()), body))
            status = 500 if box.fail > 0 else 204
            box.fail -= 1
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield box
    server.shutdown()
    server.server_close()


def _acme(tmp_path: Path, webhooks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "acme": {
            "name": "Acme Supplies",
            "email": "ar@acme.example",
            "dkim": [
                {"domain": "acme.example", "selector": "s1", "key_file": str(tmp_path / "s1.pem")}
            ],
            "webhooks": webhooks,
        }
    }


@pytest.fixture
def hook_events() -> list[str] | None:
    """The events the endpoint asks for (None: every event); a test parametrizes it."""
    return None


@pytest.fixture
def hook_url(request: pytest.FixtureRequest) -> str:
    """Where the endpoint is: ``receiver``, or (a test parametrizes it "closed") a loopback port
    nothing listens on, so every delivery is refused."""
    if getattr(request, "param", None) != "closed":
        receiver: Receiver = request.getfixturevalue("receiver")
        return receiver.url
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{closed.server_address[1]}/hooks"
    closed.server_close()  # nothing listens there now: connection refused
    return url


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every record captured, formatted as ``caplog.text`` formats them, those of set-up (where
    the shared ``services`` are built) included: ``caplog.text`` has the test's call alone."""
    records = [*caplog.get_records("setup"), *caplog.records]
    return "\n".join(caplog.handler.format(r) for r in records)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record captured from before the services are built (ask for it first)."""
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.fixture
def services_config(
    tmp_path: Path,
    hook_url: str,
    monkeypatch: pytest.MonkeyPatch,
    hook_events: list[str] | None,
) -> dict[str, Any]:
    """This module's shared ``services``: acme with one endpoint, at ``hook_url``, for the
    ``hook_events``."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    hook: dict[str, Any] = {"url": hook_url, "secret_env": SECRET_ENV}
    if hook_events is not None:
        hook["events"] = hook_events
    return {"tenants": _acme(tmp_path, [hook])}


@pytest.fixture
def env(relay_env: tuple[Services, MemoryTransport]) -> tuple[Services, MemoryTransport]:
    """acme (DEMO_DOC imported) with one endpoint for every event, at ``receiver``."""
    return relay_env


def _rows(services: Services) -> list[WebhookDelivery]:
    with Session(services.engine) as session:
        return list(session.exec(select(WebhookDelivery).order_by(col(WebhookDelivery.id))).all())


async def test_signed_events_for_a_send_and_a_bounce(
    env: tuple[Services, MemoryTransport],
    receiver: Receiver,
    clock: FixedClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    services, transport = env
    message = await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    assert receiver.requests == []  # queued with the result, sent by the worker
    await services.sending.deliver_webhooks()

    ((headers, body),) = receiver.requests
    payload = json.loads(body)
    assert payload["type"] == "message.sent" and headers["Dunmail-Event"] == "message.sent"
    assert headers["Dunmail-Delivery"] == payload["id"]
    assert headers["Content-Type"] == "application/json"
    assert verify_signature(SECRET, body, headers["Dunmail-Signature"], now=clock.now())
    assert not verify_signature("other", body, headers["Dunmail-Signature"], now=clock.now())
    assert not verify_signature(SECRET, body + b" ", headers["Dunmail-Signature"], now=clock.now())
    late = clock.now() + timedelta(minutes=10)
    assert not verify_signature(SECRET, body, headers["Dunmail-Signature"], now=late)
    data = payload["data"]
    assert (data["message"], data["invoice"], data["customer"]) == (message.uid, "INV-1042", "C-1")
    assert {r["status"] for r in data["recipients"]} == {"accepted"}

    services.inbound.ingest([("file:b.eml", dsn(sent_to(transport)))])
    await services.sending.deliver_webhooks()
    assert receiver.events() == ["message.sent", "message.bounced"]
    bounced = json.loads(receiver.requests[-1][1])["data"]
    assert (bounced["address"], bounced["hard"], bounced["status"]) == (
        "ap@globex.example",
        True,
        "5.1.1",
    )
    assert bounced["thread"] is not None
    # Ingesting the same DSN again records nothing new, so it emits nothing either.
    services.inbound.reprocess()
    await services.sending.deliver_webhooks()
    assert len(receiver.requests) == 2
    assert [r.status for r in _rows(services)] == [WebhookStatus.DELIVERED] * 2
    assert SECRET not in caplog.text


async def test_a_failed_delivery_is_retried_with_backoff(
    env: tuple[Services, MemoryTransport], receiver: Receiver, clock: FixedClock
) -> None:
    services, _ = env
    receiver.fail = 2
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    await services.sending.deliver_webhooks()
    (row,) = _rows(services)
    assert (row.status, row.attempts, row.last_error) == (WebhookStatus.PENDING, 1, "HTTP 500")
    # 1 minute, with jitter from its upper half
    assert clock.now() + timedelta(seconds=30) <= row.next_attempt_at
    assert row.next_attempt_at <= clock.now() + timedelta(minutes=1)

    await services.sending.deliver_webhooks()  # not due yet
    assert len(receiver.requests) == 1
    clock.advance(timedelta(minutes=1))
    await services.sending.deliver_webhooks()
    (row,) = _rows(services)
    assert (row.attempts, row.status) == (2, WebhookStatus.PENDING)
    assert row.next_attempt_at >= clock.now() + timedelta(minutes=1)  # 2 minutes, jittered
    clock.advance(timedelta(minutes=2))
    await services.dunning.tick()  # the engine's tick delivers webhooks too
    (row,) = _rows(services)
    assert (row.attempts, row.status, row.last_error) == (3, WebhookStatus.DELIVERED, None)
    ids = {headers["Dunmail-Delivery"] for headers, _ in receiver.requests}
    assert len(receiver.requests) == 3 and len(ids) == 1  # one event, three tries


@pytest.mark.parametrize("hook_url", ["closed"], indirect=True)
@pytest.mark.parametrize("hook_events", [["message.sent"]])
async def test_nothing_is_lost_while_the_endpoint_is_down_and_it_gives_up_after_days(
    debug_logs: pytest.LogCaptureFixture, services: Services, clock: FixedClock
) -> None:
    caplog = debug_logs
    try:
        assert services.ledger.import_document(DEMO_DOC, tenant="acme").errors == []
        await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
        await services.sending.deliver_webhooks()
        (row,) = _rows(services)
        assert (row.status, row.attempts) == (WebhookStatus.PENDING, 1)
        assert row.last_error is not None and "ConnectError" in row.last_error
        tries = 1
        while row.status is WebhookStatus.PENDING:
            clock.advance(row.next_attempt_at - clock.now())
            await services.sending.deliver_webhooks()
            (row,) = _rows(services)
            tries += 1
        assert row.status is WebhookStatus.FAILED and row.attempts == tries
        assert clock.now() - row.created_at <= GIVE_UP_AFTER
        assert 12 <= tries <= 30  # 1 min doubling to 6 h over about three days
    finally:
        await services.close()
    assert SECRET not in _logged(caplog)


@pytest.mark.parametrize("hook_events", [["message.bounced", "thread.replied"]])
async def test_an_endpoint_gets_only_the_events_it_asked_for(
    services: Services, transport: MemoryTransport, receiver: Receiver
) -> None:
    assert services.ledger.import_document(DEMO_DOC, tenant="acme").errors == []
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    services.inbound.ingest([("file:b.eml", dsn(sent_to(transport)))])
    services.inbound.ingest([("file:ooo.eml", _auto_reply(sent_to(transport)))])
    await services.sending.deliver_webhooks()
    assert sorted(receiver.events()) == ["message.bounced", "thread.replied"]
    replied = next(json.loads(b)["data"] for _, b in receiver.requests if b"replied" in b)
    assert replied["auto_reply"] is True and replied["thread"] is not None
