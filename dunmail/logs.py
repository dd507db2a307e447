"""Logging for the engine: one line per event, as text or JSON, with secrets scrubbed.

Secrets should never reach a log call in the first place; the filter here is the second line of
defence, for what a library or an exception message might carry: link tokens in URLs, API keys,
passwords and bearer tokens in SMTP or HTTP transcripts.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

# (pattern, replacement): each keeps enough to tell what was there.
_SECRETS = [
    (re.compile(r"(/l/)[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"), r"\1[token]"),
    (re.compile(r"\bdm_[A-Za-z0-9]{4,16}_[A-Za-z0-9_-]{16,}"), "dm_[key]"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1[secret]"),
    (re.compile(r"(?i)((?:password|passwd|secret|token)\s*[=:]\s*)\S+"), r"\1[secret]"),
    (re.compile(r"(?i)(AUTH (?:PLAIN|LOGIN|XOAUTH2)\s+)\S+"), r"\1[secret]"),
    (re.compile(r"(postgresql(?:\+\w+)?://[^:/@\s]+:)[^@\s]+@"), r"\1[secret]@"),
]


def scrub(text: str) -> str:
    """``text`` with anything that looks like a secret replaced."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class ScrubFilter(logging.Filter):
    """Scrubs the formatted message (and the exception text) of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set: store the scrubbed traceback there.
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, *, fmt: str = "text") -> None:
    """Configure the root logger once for a command or ``dunmail run``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ScrubFilter())
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # flanker's parser generator is chatty on first import; its warnings are not ours.
    logging.getLogger("flanker").setLevel(logging.ERROR)
    # Alembic narrates every migration check at INFO; only its warnings matter to a user.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # aiosmtpd logs every SMTP command and APScheduler every tick at INFO; uvicorn every request.
    for chatty in ("mail.log", "apscheduler", "uvicorn.access", "httpx"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
