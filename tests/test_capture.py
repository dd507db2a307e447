"""The built-in capture server: a real SMTP conversation ends as a file in a Maildir."""

from __future__ import annotations

import mailbox
from pathlib import Path

import pytest

from dunmail.capture import start_capture
from mailer.config import SMTPEndpoint
from mailer.errors import TransientDeliveryError
from mailer.outbound.smtp import SMTPTransport

MESSAGE = b"From: a@x.test\r\nTo: b@y.test\r\nSubject: hi\r\nMessage-ID: <1@x.test>\r\n\r\nbody\r\n"


async def test_captured_mail_lands_in_a_new_maildir(tmp_path: Path) -> None:
    maildir = tmp_path / "var" / "maildir"
    server = await start_capture("127.0.0.1", 0, maildir)
    port = server.sockets[0].getsockname()[1]
    transport = SMTPTransport(SMTPEndpoint(host="127.0.0.1", port=port))
    try:
        result = await transport.send(MESSAGE, sender="bounces@x.test", recipients=["b@y.test"])
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()
    assert result.code == 250
    stored = list(mailbox.Maildir(maildir, create=False))
    assert len(stored) == 1
    assert stored[0]["Message-ID"] == "<1@x.test>"
    assert stored[0]["Return-Path"] == "<bounces@x.test>"


async def test_store_failure_is_a_temporary_reply(tmp_path: Path) -> None:
    maildir = tmp_path / "maildir"
    server = await start_capture("127.0.0.1", 0, maildir)
    port = server.sockets[0].getsockname()[1]
    (maildir / "tmp").rmdir()  # the Maildir breaks under the running server
    transport = SMTPTransport(SMTPEndpoint(host="127.0.0.1", port=port))
    try:
        with pytest.raises(TransientDeliveryError) as caught:
            await transport.send(MESSAGE, sender="bounces@x.test", recipients=["b@y.test"])
        assert caught.value.code == 451
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()
