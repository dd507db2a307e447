"""The built-in capture SMTP server: accepts every message and files it into a Maildir.

It lets a newcomer watch real SMTP conversations and read real, DKIM-signed MIME without a mail
server. It is an aiosmtpd handler in the style of ``aiosmtpd.handlers.Mailbox``.
"""

from __future__ import annotations

import asyncio
import logging
import mailbox
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger(__name__)


class MaildirHandler:
    """Stores each accepted message, with its envelope, before answering 250."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._maildir = mailbox.Maildir(path, create=True)  # makes tmp/, new/ and cur/
        self.count = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        rcpts = ", ".join(envelope.rcpt_tos)
        prefix = (f"Return-Path: <{envelope.mail_from}>\r\nX-Original-To: {rcpts}\r\n").encode(
            "ascii", "replace"
        )
        # The 250 goes out only after the file is on disk: accepted means stored. A failure to
        # store is a 451, so the sender keeps the message and tries again (RFC 5321 s4.2.5).
        try:
            await asyncio.to_thread(self._maildir.add, prefix + content)
        except OSError as exc:
            log.error("capture: cannot store message: %s", exc)
            return "451 4.3.0 Could not store the message"
        self.count += 1
        log.info(
            "captured message from %s to %d recipient(s)",
            envelope.mail_from,
            len(envelope.rcpt_tos),
        )
        return "250 2.0.0 Captured"


async def start_capture(host: str, port: int, maildir: Path) -> asyncio.Server:
    """Listen on ``host:port`` (loopback by default) and file mail into ``maildir``."""
    handler = MaildirHandler(maildir)
    loop = asyncio.get_running_loop()

    def factory() -> Any:
        return SMTP(handler, hostname="dunmail-capture", decode_data=False, enable_SMTPUTF8=True)

    return await loop.create_server(factory, host=host, port=port)
