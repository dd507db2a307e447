"""EDGE: what keeps the inbound SMTP server up under abuse, modelled on Postfix's smtpd.

The inbound server faces the whole internet. Without limits one client can hold every file
descriptor with idle connections, pour thousands of recipients into one transaction, keep a
session alive forever by dripping a byte at a time, and turn each refusal into a log line. Postfix
answers each of these with a setting (postconf(5)); the same ideas, with the same replies:

- ``smtpd_recipient_limit``: recipients past the limit get ``452 4.5.3`` (RFC 5321 s4.5.3.1.10);
  the transaction goes on with those already accepted, and a conforming client sends the rest
  in another transaction.
- ``smtpd_client_connection_count_limit`` and the process limit: a connection past the limit, per
  client address or overall, gets ``421 4.7.0`` and is closed at once, before any session state
  or task exists for it.
- ``smtpd_timeout``: an idle client is told ``421 4.4.2`` and disconnected (aiosmtpd's ``timeout``).
- A total session time (Postfix bounds it with per-record deadlines): even a client that sends a
  command just before each idle timeout is disconnected with ``421 4.4.2``.
- ``smtpd_hard_error_limit``: after that many 4xx/5xx replies the session ends with ``421 4.7.0``.

And the log says what happened without becoming the attack: every line this module or aiosmtpd
writes is throttled per message template, with "N similar messages suppressed" summaries.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, syntax

from mailer.config import InboundConfig
from mailer.errors import ConfigError

log = logging.getLogger(__name__)

# aiosmtpd's own logger: per-connection chatter at INFO, bogus commands at WARNING.
AIOSMTPD_LOGGER = "mail.log"

TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"  # RFC 5321 s4.5.3.1.10, RFC 3463


@dataclass(frozen=True)
class SessionLimits:
    """What one SMTP session may do (the per-connection half of InboundConfig)."""

    max_recipients: int
    session_seconds: float
    max_errors: int

    @classmethod
    def from_config(cls, config: InboundConfig) -> SessionLimits:
        """The session limits ``config`` asks for."""
        return cls(
            max_recipients=config.max_recipients,
            session_seconds=config.session_timeout_seconds,
            max_errors=config.max_errors_per_session,
        )


def client_key(peer: object, *, ipv6_prefix: int) -> str:
    """Whom a connection counts against: its IPv4 address, or its IPv6 network of
    ``ipv6_prefix`` bits (one host commonly holds a whole /64, so per-address counting of IPv6
    would be no limit at all; Postfix's ``smtpd_client_ipv6_prefix_length`` is the same idea)."""
    host = peer[0] if isinstance(peer, tuple) and peer else peer
    try:
        address = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return str(host)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/{ipv6_prefix}", strict=False))
    return str(address)


@dataclass
class ConnectionGate:
    """Counts open connections overall and per client; shared by every session of one server."""

    max_total: int
    max_per_client: int
    ipv6_prefix: int = 64
    total: int = 0
    per_client: dict[str, int] = field(default_factory=dict)

    def admit(self, peer: object) -> tuple[str | None, str]:
        """``(key, "")`` if the connection may proceed (release ``key`` when it ends), else
        ``(None, why)``."""
        key = client_key(peer, ipv6_prefix=self.ipv6_prefix)
        if self.total >= self.max_total:
            return None, f"{self.total} connections open, the limit is {self.max_total}"
        count = self.per_client.get(key, 0)
        if count >= self.max_per_client:
            return None, f"{count} connections open from {key}, the limit is {self.max_per_client}"
        self.total += 1
        self.per_client[key] = count + 1
        return key, ""

    def release(self, key: str) -> None:
        """One connection admitted under ``key`` has ended."""
        self.total -= 1
        left = self.per_client.get(key, 1) - 1
        if left > 0:
            self.per_client[key] = left
        else:
            self.per_client.pop(key, None)


class GateProtocol(asyncio.Protocol):
    """What the listening socket builds for each new connection: it asks the gate, and either
    answers 421 and closes, or hands the transport to a new SMTP session.

    A refusal costs a few microseconds and the socket for as long as one write takes: no SMTP
    session object (aiosmtpd's costs some 0.3 ms to build), no reader task, no timer."""

    def __init__(
        self, gate: ConnectionGate, session: Callable[[str], LimitedSMTP], hostname: str
    ) -> None:
        self._gate = gate
        self._session = session
        self._hostname = hostname

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        key, why = self._gate.admit(peer)
        if key is None:
            # RFC 5321 s3.8: 421 and close when the service is not available.
            log.warning("inbound: refused a connection from %s: %s", _host(peer), why)
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(f"421 4.7.0 {self._hostname} Too many connections\r\n".encode())
            transport.close()
            return
        try:
            session = self._session(key)
        except BaseException:
            self._gate.release(key)
            transport.close()
            raise
        # asyncio's documented way to change protocols: reading starts after this callback,
        # so the session sees every byte the client sends.
        transport.set_protocol(session)
        session.connection_made(transport)


class LimitedSMTP(SMTP):
    """aiosmtpd's SMTP session with the recipient, time and error limits; it holds one place
    under ``client`` at the gate until its connection is lost."""

    def __init__(
        self,
        handler: Any,
        *,
        gate: ConnectionGate,
        client: str,
        limits: SessionLimits,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._gate = gate
        self._client: str | None = client  # the gate key, until released
        self._limits = limits
        self._hanging_up = False  # we sent our last reply; later pushes are dropped
        self._errors = 0
        self._in_hook = False  # the handler is storing a message: do not cut its 250 off
        self._session_timer: asyncio.TimerHandle | None = None

    # -- connections -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._session_timer is None:  # not STARTTLS's second call
            self._session_timer = self.loop.call_later(
                self._limits.session_seconds, self._session_expired
            )
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._session_timer is not None:
            self._session_timer.cancel()
        if self._client is not None:
            self._gate.release(self._client)
            self._client = None
        super().connection_lost(error)

    def _hang_up(self, reply: str) -> None:
        """Send a last reply and close; nothing more is written on this connection."""
        if self._hanging_up or self.transport is None:
            return
        self._hanging_up = True
        if isinstance(self.transport, asyncio.WriteTransport):
            self.transport.write(reply.encode() + b"\r\n")
        self.transport.close()  # the reply is flushed first; connection_lost cleans up

    def _timeout_cb(self) -> None:
        # aiosmtpd's idle timeout (smtpd_timeout) closes silently; say why, as Postfix does.
        log.info("inbound: closed an idle connection from %s", _host(self._peer()))
        self._hang_up(f"421 4.4.2 {self.hostname} Error: timeout exceeded")

    def _session_expired(self) -> None:
        if self._in_hook:
            # The message is being stored: let its reply go out, then close.
            self._session_timer = self.loop.call_later(0.2, self._session_expired)
            return
        log.warning(
            "inbound: closed a connection from %s at the session time limit (%gs)",
            _host(self._peer()),
            self._limits.session_seconds,
        )
        self._hang_up(f"421 4.4.2 {self.hostname} Error: session time limit exceeded")

    def _peer(self) -> object:
        return self.session.peer if self.session is not None else None

    # -- replies and commands ------------------------------------------------------------------

    async def push(self, status: Any) -> None:
        if self._hanging_up:
            return
        await super().push(status)
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else str(status)
        if text[:1] in ("4", "5"):
            self._errors += 1
            log.info("inbound: answered %r to %s", text[:60], _host(self._peer()))
            if self._errors >= self._limits.max_errors:
                log.warning(
                    "inbound: closed a connection from %s after %d errors",
                    _host(self._peer()),
                    self._errors,
                )
                self._hang_up(f"421 4.7.0 {self.hostname} Error: too many errors")

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        # Overrides aiosmtpd's hook dispatcher (a private method, stable across 1.4.x) only to
        # know when the handler is at work, so the session timer never cuts a stored message's
        # 250 off: the sender would deliver it again.
        self._in_hook = True
        try:
            return await super()._call_handler_hook(command, *args)
        finally:
            self._in_hook = False

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        envelope = self.envelope
        if (
            envelope is not None
            and envelope.mail_from
            and len(envelope.rcpt_tos) >= self._limits.max_recipients
        ):
            # Postfix's smtpd_recipient_limit: checked before the address is even parsed. Not
            # counted as an error (Postfix's recipient overshoot): a client that pipelined its
            # list gets 452 for the rest and sends them in the next transaction.
            if len(envelope.rcpt_tos) == self._limits.max_recipients:
                log.warning(
                    "inbound: %s sent more than %d recipients in one transaction",
                    _host(self._peer()),
                    self._limits.max_recipients,
                )
            await SMTP.push(self, TOO_MANY_RECIPIENTS)
            return
        await super().smtp_RCPT(arg)


def _host(peer: object) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)


# -- throttled logging --------------------------------------------------------------------------


@dataclass
class _Window:
    start: float
    dropped: int = 0
    last: str = ""
    flush_pending: bool = False


class LogThrottle:
    """PURE: at most one line per key per ``interval`` seconds; counts the lines it drops."""

    def __init__(self, interval: float, *, max_keys: int = 1000) -> None:
        self.interval = interval
        self._max_keys = max_keys
        self._windows: dict[Hashable, _Window] = {}

    def admit(self, key: Hashable, now: float, text: str = "") -> tuple[bool, int]:
        """``(log it, lines of this key dropped and not yet reported)``."""
        window = self._windows.get(key)
        if window is None or now - window.start >= self.interval:
            dropped = window.dropped if window else 0
            if window is None and len(self._windows) >= self._max_keys:
                self._windows.pop(next(iter(self._windows)))  # the oldest key
            self._windows[key] = _Window(start=now)
            return True, dropped
        window.dropped += 1
        window.last = text
        return False, 0

    def take(self, key: Hashable, now: float) -> tuple[int, str]:
        """At a window's end: ``(dropped, last dropped text)``, reported once; a new window
        starts, so a continuing flood is summarised once per interval."""
        window = self._windows.get(key)
        if window is None or not window.dropped:
            return 0, ""
        self._windows[key] = _Window(start=now)
        return window.dropped, window.last

    def pending_flush(self, key: Hashable, now: float) -> float | None:
        """Seconds until ``key``'s window ends, the first time a flush is wanted; else None."""
        window = self._windows.get(key)
        if window is None or window.flush_pending:
            return None
        window.flush_pending = True
        return max(0.0, window.start + self.interval - now)


class ThrottleFilter(logging.Filter):
    """A logger filter: passes the first record of each (logger, level, template) per interval
    and summarises the rest ("N similar messages suppressed") when the interval ends."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.throttle = LogThrottle(interval)
        self._clock = clock

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "throttle_summary", False):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        admitted, dropped = self.throttle.admit(key, now, record.getMessage())
        if admitted:
            if dropped:  # no event loop ran the summary timer: say it here
                record.msg = f"{record.getMessage()} ({dropped} similar messages suppressed)"
                record.args = None
            return True
        delay = self.throttle.pending_flush(key, now)
        if delay is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return False  # reported with the next admitted record of this key
            loop.call_later(delay, self._flush, key, record.name, record.levelno)
        return False

    def _flush(self, key: Hashable, name: str, level: int) -> None:
        dropped, last = self.throttle.take(key, self._clock())
        if dropped:
            logging.getLogger(name).log(
                level,
                "%d similar messages suppressed in the last %gs; the last: %s",
                dropped,
                self.throttle.interval,
                last,
                extra={"throttle_summary": True},
            )


def install_log_throttle(interval: float) -> ThrottleFilter:
    """Throttle this module's and aiosmtpd's loggers: everything either writes is caused by a
    remote client, so a flood of clients must not become a flood of log. One filter per
    process: a server started later replaces an earlier one's (and its counts)."""
    throttle = ThrottleFilter(interval)
    for name in (__name__, AIOSMTPD_LOGGER):
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, ThrottleFilter)]:
            logger.removeFilter(old)
        logger.addFilter(throttle)
    return throttle


# Files the rest of the process needs besides inbound connections: the web server's sockets, the
# database pool, log files, and connections being refused (each holds a descriptor briefly).
FILE_RESERVE = 256


def check_file_limit(max_connections: int) -> None:
    """Refuse to start when ``max_connections`` cannot fit the process's open-file limit: the
    limit is what keeps descriptors for the web app and the database, so it must bind first."""
    import resource  # POSIX only, like the server itself

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and max_connections + FILE_RESERVE > soft:
        raise ConfigError(
            f"inbound.max_connections = {max_connections} needs {max_connections + FILE_RESERVE}"
            f" open files with the rest of dunmail, but this process may open {soft} (ulimit -n):"
            " lower max_connections or raise the limit"
        )
