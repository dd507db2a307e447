"""EDGE: poll a tenant's own mailbox over IMAP (RFC 3501 / 9051) for returned mail.

For tenants whose own SMTP server returns bounces to their own address. Each message not yet
stored is fetched without touching its flags (``BODY.PEEK[]``), handed to ``deliver`` (which
commits the raw bytes), and only then marked on the server: ``\\Seen`` plus the
``$DunmailStored`` keyword, or deleted. A crash between the two fetches the message again next
time, and the store's sha256 dedup keeps it once. A keyword rather than ``UNSEEN`` selects the
work, so a person reading the mailbox does not hide a bounce from the engine.
"""

from __future__ import annotations

import imaplib
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from mailer.config import IMAPAfter, IMAPConfig, TLSMode
from mailer.errors import ConfigError, MailerError

log = logging.getLogger(__name__)

STORED_KEYWORD = "$DunmailStored"  # RFC 3501 s2.3.2 keyword; "$" marks it as not a user's own
_UIDVALIDITY = re.compile(rb"\d+")


class MailboxError(MailerError):
    """An IMAP server was unreachable, refused the login, or failed a command."""


@dataclass
class PollResult:
    """What one poll of one mailbox did."""

    found: int = 0  # messages not yet stored
    done: int = 0  # stored, then flagged or deleted on the server
    failed: int = 0  # could not be stored: left as they were, fetched again next poll


Deliver = Callable[[str, bytes], object]  # commits (source, raw) or raises


def poll_mailbox(config: IMAPConfig, *, tenant: str, deliver: Deliver) -> PollResult:
    """Fetch every message of ``config.mailbox`` not yet stored, ``deliver`` it, then mark it.

    Blocking (imaplib): the engine runs it in a thread. Raises MailboxError (never with the
    password in it) when the server cannot be used; a message ``deliver`` fails on is left
    unmarked and the others go on.
    """
    where = f"imap {config.host}:{config.server_port} ({tenant})"
    password = config.password()  # ConfigError when the variable is unset: before connecting
    if password is None:  # pragma: no cover  (password_env is required by the model)
        raise ConfigError(f"tenants.{tenant}.imap.password_env is not set")
    try:
        conn = _connect(config)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise MailboxError(f"{where}: cannot connect: {exc}") from None
    try:
        try:
            conn.login(config.username, password)
        except imaplib.IMAP4.error as exc:
            raise MailboxError(f"{where}: login refused: {_text(exc)}") from None
        return _poll(conn, config, tenant=tenant, deliver=deliver)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise MailboxError(f"{where}: {type(exc).__name__}: {_text(exc)}") from None
    finally:
        try:
            conn.logout()
        except (OSError, imaplib.IMAP4.error):
            pass  # the connection is gone either way


def _connect(config: IMAPConfig) -> imaplib.IMAP4:
    host, port = config.host.strip("[]"), config.server_port
    if config.tls is TLSMode.IMPLICIT:
        return imaplib.IMAP4_SSL(
            host, port, ssl_context=_tls_context(config), timeout=config.timeout_seconds
        )
    conn = imaplib.IMAP4(host, port, timeout=config.timeout_seconds)
    if config.tls is TLSMode.STARTTLS:
        conn.starttls(ssl_context=_tls_context(config))  # RFC 2595; raises if refused
    elif not _loopback(config.host) and not config.allow_plaintext_auth:
        # The config validator refuses this too; a LOGIN in clear text is never sent anyway.
        conn.shutdown()
        raise ConfigError(f"imap {config.host}: tls = 'none' beyond loopback needs opt-in")
    return conn


def _tls_context(config: IMAPConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    if not config.verify_certificate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _poll(conn: imaplib.IMAP4, config: IMAPConfig, *, tenant: str, deliver: Deliver) -> PollResult:
    typ, data = conn.select(_quote(config.mailbox))
    if typ != "OK":
        raise MailboxError(f"imap {tenant}: cannot select {config.mailbox!r}: {_text(data)}")
    uidvalidity = _uidvalidity(conn)
    keyword = _keyword_allowed(conn)
    if not keyword:
        log.warning(
            "imap %s: %s does not allow keywords; falling back to \\Seen", tenant, config.mailbox
        )
    criteria = ("UNDELETED", "UNKEYWORD", STORED_KEYWORD) if keyword else ("UNDELETED", "UNSEEN")
    typ, data = conn.uid("SEARCH", *criteria)
    if typ != "OK":
        raise MailboxError(f"imap {tenant}: SEARCH failed: {_text(data)}")
    uids = [u.decode("ascii") for u in (data[0] or b"").split()]
    result = PollResult(found=len(uids))
    flags = "\\Seen " + STORED_KEYWORD if keyword else "\\Seen"
    if config.after is IMAPAfter.DELETE:
        flags += " \\Deleted"
    done: list[str] = []
    for uid in uids:
        raw = _fetch(conn, uid)
        if raw is None:
            continue  # expunged by someone else since the SEARCH
        source = f"imap:{tenant}/{config.mailbox}/{uidvalidity}:{uid}"[:300]
        try:
            deliver(source, raw)
        except Exception as exc:  # per-message boundary: not stored, so not marked; next poll
            log.error("imap %s: storing UID %s failed (%s)", tenant, uid, type(exc).__name__)
            result.failed += 1
            continue
        # Only now, with the raw bytes committed, may the server forget the message.
        typ, data = conn.uid("STORE", uid, "+FLAGS.SILENT", f"({flags})")
        if typ != "OK":
            raise MailboxError(f"imap {tenant}: STORE failed: {_text(data)}")
        done.append(uid)
    if config.after is IMAPAfter.DELETE and done:
        _expunge(conn, done)
    result.done = len(done)
    if uids:
        log.info(
            "imap %s: %d new, %d stored, %d failed",
            tenant,
            result.found,
            result.done,
            result.failed,
        )
    return result


def _fetch(conn: imaplib.IMAP4, uid: str) -> bytes | None:
    # BODY.PEEK[] leaves \Seen alone (RFC 3501 s6.4.5): a failed store changes nothing.
    typ, data = conn.uid("FETCH", uid, "(BODY.PEEK[])")
    if typ != "OK":
        raise MailboxError(f"FETCH {uid} failed: {_text(data)}")
    for item in data:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
            return item[1]
    return None


def _expunge(conn: imaplib.IMAP4, uids: list[str]) -> None:
    typ, data = conn.capability()
    capabilities = (data[0] or b"").upper().split() if typ == "OK" and data else []
    if b"UIDPLUS" in capabilities:
        # RFC 4315 UID EXPUNGE: only the messages we stored, never one a person marked.
        conn.uid("EXPUNGE", ",".join(uids))
    else:
        conn.expunge()


def _uidvalidity(conn: imaplib.IMAP4) -> str:
    _, data = conn.response("UIDVALIDITY")
    for item in data or []:
        if isinstance(item, bytes) and _UIDVALIDITY.fullmatch(item.strip()):
            return item.strip().decode("ascii")
    return "0"


def _keyword_allowed(conn: imaplib.IMAP4) -> bool:
    # PERMANENTFLAGS lists \* when new keywords may be created (RFC 3501 s7.1).
    _, data = conn.response("PERMANENTFLAGS")
    text = b" ".join(item for item in data or [] if isinstance(item, bytes))
    if not data or data == [None]:
        return True  # not sent: RFC 3501 says all flags may then be changed permanently
    return b"\\*" in text or STORED_KEYWORD.encode().lower() in text.lower()


def _quote(mailbox: str) -> str:
    """An IMAP quoted string (RFC 3501 s4.3); the config allows printable ASCII only."""
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _loopback(host: str) -> bool:
    return host in {"localhost", "[::1]", "::1"} or host.startswith("127.")


def _text(value: object) -> str:
    """A server response for an error message: decoded, one line, bounded."""
    if isinstance(value, list):
        value = b" ".join(v for v in value if isinstance(v, bytes))
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, BaseException):
        value = str(value.args[0] if value.args else value)
        if value.startswith("b'") or value.startswith('b"'):
            value = value[2:-1]
    return " ".join(str(value).split())[:300]
