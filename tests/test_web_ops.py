"""Operations: /healthz, Prometheus /metrics, the demo's start page, and logs without secrets;
through a real uvicorn (``web_server``)."""

from __future__ import annotations

import json
import logging

import httpx
from prometheus_client.parser import text_string_to_metric_families

from dunmail.app import Services
from dunmail.logs import JSONFormatter, ScrubFilter, scrub
from mailer.outbound.memory import MemoryTransport
from tests.test_bounce_ingest import _sent, dsn


async def test_healthz_answers_when_the_database_does(web_server: str) -> None:
    async with httpx.AsyncClient(base_url=web_server) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_metrics_count_the_queue_sends_and_bounces(
    web_server: str, relay_env: tuple[Services, MemoryTransport]
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    services.inbound.ingest([("file:b.eml", dsn(sent))])
    async with httpx.AsyncClient(base_url=web_server) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert samples[("dunmail_messages_sent_total", ())] == 1
    assert samples[("dunmail_queue_messages", (("state", "queued"),))] == 0
    assert samples[("dunmail_returned_total", (("kind", "bounce"),))] == 1
    assert samples[("dunmail_send_latency_seconds_count", ())] == 1
    assert samples[("dunmail_webhooks_pending", ())] == 0


async def test_the_demo_start_page_shows_outbox_and_inbox_and_escapes_mail(
    web_server: str, relay_env: tuple[Services, MemoryTransport]
) -> None:
    services, transport = relay_env
    sent = await _sent(services, transport)
    hostile = dsn(sent, diagnostic="smtp; 550 5.1.1 <script>alert(1)</script> unknown")
    services.inbound.ingest([("file:b.eml", hostile)])
    async with httpx.AsyncClient(base_url=web_server) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert "Outbox" in response.text and "AR inbox" in response.text
    assert "INV-1042" in response.text and "new_invoice" in response.text
    assert "<script>alert(1)</script>" not in response.text
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_logs_never_carry_tokens_keys_or_passwords(caplog: object) -> None:
    line = (
        "GET /l/eyJkIjoiaW52b2ljZToxIn0.PNqdfBZvQHNCNu-7eIEZEQjZ HTTP/1.1; "
        "key dm_ab12cd34_Zm9vYmFyYmF6cXV4cXV1eA; Authorization: Bearer abcdefgh12345678; "
        "password=hunter2hunter2; AUTH PLAIN AGZvbwBiYXI=; "
        "postgresql+psycopg://app:s3cret@db/ledger"
    )
    cleaned = scrub(line)
    for secret in ("PNqdfBZ", "Zm9vYmFy", "abcdefgh1234", "hunter2", "AGZvbwBiYXI", "s3cret"):
        assert secret not in cleaned, secret
    assert "/l/[token]" in cleaned and "dm_[key]" in cleaned

    record = logging.LogRecord("dunmail", logging.INFO, __file__, 1, "sent %s", (line,), None)
    assert ScrubFilter().filter(record)
    entry = json.loads(JSONFormatter().format(record))
    assert entry["level"] == "INFO" and "hunter2" not in entry["message"]
    assert entry["message"].startswith("sent GET /l/[token]")
