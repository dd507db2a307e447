"""A server that refuses a message with its PDF as too big gets the download-link version.

The configured ``max_message_bytes`` (10 MiB by default) is only our budget: a server may
advertise a smaller SIZE (RFC 1870) or enforce a limit it never advertised (Postfix's default
``message_size_limit`` is 10,240,000 bytes, just under 10 MiB). Its 552 / 5.3.4 refusal must
not leave the email ``failed``: the outbox sends the same email, same Message-ID, with the PDF
linked instead, in the same attempt. Real loopback SMTP, real WeasyPrint, SQLite and PostgreSQL.
"""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlmodel import Session as DBSession
from sqlmodel import col, select

from tests.conftest import WEASYPRINT_SKIP

if WEASYPRINT_SKIP:
    pytest.skip(WEASYPRINT_SKIP, allow_module_level=True)

from dunmail.app import Services  # noqa: E402  (after the skip)
from mailer.content.pdf_pool import PDFRenderer
from mailer.outbound.compose import message_id
from mailer.outbound.models import DeliveryAttempt, Message, MessageStatus
from tests.conftest import DEMO_DOC
from tests.smtpd import RecordingServer

# The email alone is about 10 KB; with the invoice PDF it is well over 20 KB.
SERVER_LIMIT = 20_000


@pytest.fixture
def transport() -> None:
    """This module's shared services send over SMTP, to ``smtpd``."""
    return None


@pytest.fixture
def services_config(smtpd: RecordingServer) -> dict[str, Any]:
    """This module's shared ``services``: PDFs attached, the relay is ``smtpd``."""
    return {
        "pdfs": True,
        "relay": {"domain": "relay.example", "host": smtpd.host, "port": smtpd.port},
    }


@pytest.fixture
def services_options() -> dict[str, Any]:
    """This module's shared ``services`` render their PDFs in-process."""
    return {"pdf_renderer": PDFRenderer(workers=0)}


async def _send(services: Services) -> Message:
    assert services.ledger.import_document(DEMO_DOC, tenant="acme").errors == []
    return await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant=None)


def _parsed(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _attempts(services: Services, message: Message) -> list[DeliveryAttempt]:
    with DBSession(services.engine) as session:
        query = select(DeliveryAttempt).where(DeliveryAttempt.message_id == message.id)
        return list(session.exec(query.order_by(col(DeliveryAttempt.number))).all())


def _assert_linked(services: Services, smtpd: RecordingServer, message: Message) -> None:
    """Delivered once, in one attempt, with the link instead of the PDF and the row's own
    Message-ID; the message still records the PDF the link serves."""
    assert message.status is MessageStatus.SENT, message.last_error
    assert message.attempts == 1
    [attempt] = _attempts(services, message)
    assert attempt.code == 250
    # One envelope per recipient (its own VERP return path), the same bytes in each.
    assert len(smtpd.envelopes) == 2 and len({e.content for e in smtpd.envelopes}) == 1
    received = smtpd.envelopes[0]
    assert len(received.content) <= SERVER_LIMIT
    parsed = _parsed(received.content)
    assert list(parsed.iter_attachments()) == []
    text = parsed.get_body(preferencelist=("plain",))
    assert text is not None
    body = text.get_content()
    assert "INV-1042.pdf" in body and "too large to attach" in body and "/l/" in body
    domain = str(parsed["Message-ID"]).strip("<>").rpartition("@")[2]
    assert str(parsed["Message-ID"]) == message_id(message.uid, domain)
    assert message.pdf_sha256 is not None


@pytest.mark.smtpd_options(size_limit=SERVER_LIMIT)
async def test_a_server_advertising_a_smaller_size_gets_the_link_version(
    services: Services, smtpd: RecordingServer
) -> None:
    message = await _send(services)
    _assert_linked(services, smtpd, message)
    # The advertised SIZE is checked before MAIL: the too-big version never went out.
    assert smtpd.commands.count("MAIL") == 2  # one per recipient, both the link version
    for sent in smtpd.envelopes:
        assert f"SIZE={len(sent.content)}" in sent.mail_options


@pytest.mark.smtpd_options(size_limit=None)
async def test_a_552_at_end_of_data_without_advertised_size_gets_the_link_version(
    services: Services, smtpd: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server that advertises no SIZE yet refuses, after the whole body, what is over its limit.
    accept = smtpd.handler.handle_DATA
    refused: list[int] = []

    async def refuse_big(smtp: SMTP, session: Session, envelope: Envelope) -> str:
        size = len(envelope.original_content or b"")
        if size > SERVER_LIMIT:
            refused.append(size)
            return "552 5.3.4 Message too big"
        return await accept(smtp, session, envelope)

    monkeypatch.setattr(smtpd.handler, "handle_DATA", refuse_big)
    message = await _send(services)
    _assert_linked(services, smtpd, message)
    assert len(refused) == 1 and refused[0] > SERVER_LIMIT  # the PDF version, once
    assert smtpd.commands.count("DATA") == 3  # then the link version, once per recipient


@pytest.mark.smtpd_options(size_limit=None, data="552 5.3.4 Message too big")
async def test_a_server_refusing_the_link_version_too_fails_after_one_fallback(
    services: Services, smtpd: RecordingServer
) -> None:
    message = await _send(services)
    assert message.status is MessageStatus.FAILED
    assert message.last_error is not None and "5.3.4" in message.last_error
    assert smtpd.envelopes == []
    # The PDF version, then the link version; never a third try or a loop.
    assert smtpd.commands.count("DATA") == 2
    assert len(_attempts(services, message)) == 1
