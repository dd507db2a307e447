"""The Transport protocol and its two implementations: pooled SMTP (aiosmtplib) and in-memory."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import logging
import re
import ssl
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import aiosmtplib

from mailer.config import SMTPEndpoint, TLSMode
from mailer.errors import (
    AddressError,
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
)

log = logging.getLogger(__name__)

# RFC 5321 s2.3.8: lines end in CRLF on the wire. aiosmtplib rewrites lone CR or LF the same way,
# so normalising first makes the size check, SIZE= and MemoryTransport see the bytes sent.
_LINE_ENDING = re.compile(rb"\r\n|\n|\r(?!\n)")
# CR/LF in an address would smuggle a second SMTP command into MAIL or RCPT.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_QUIT_TIMEOUT = 5.0  # QUIT is a courtesy; never let a silent server hold up close()


@dataclass(frozen=True)
class RecipientResult:
    """The server's answer to one RCPT TO, kept per address so partial refusals stay visible."""

    address: str
    code: int
    message: str

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        """A 4xx refusal: the same address may be tried again later (RFC 5321 s4.2.1)."""
        return 400 <= self.code < 500


@dataclass(frozen=True)
class SendResult:
    """One mail transaction: every RCPT reply and the reply to end-of-DATA.

    ``code`` is None when no recipient was accepted, so DATA was never sent.
    """

    recipients: tuple[RecipientResult, ...]
    code: int | None
    message: str
    endpoint: str

    @property
    def accepted(self) -> tuple[str, ...]:
        """Addresses the server took the message for."""
        if self.code is None:
            return ()
        return tuple(r.address for r in self.recipients if r.accepted)

    @property
    def refused(self) -> tuple[RecipientResult, ...]:
        return tuple(r for r in self.recipients if not r.accepted)


class Transport(Protocol):
    """How mail leaves the process: one transaction per call, DKIM-signed bytes in, replies out.

    RCPT refusals come back in the result; a failure of the whole transaction raises
    ``TransientDeliveryError`` or ``PermanentDeliveryError``.
    """

    @property
    def key(self) -> str:
        """Identity of the endpoint for logs and delivery-attempt records (never a secret)."""
        ...

    async def send(
        self, message: bytes, *, sender: str, recipients: Sequence[str]
    ) -> SendResult: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class _Envelope:
    sender: str
    recipients: tuple[str, ...]
    data: bytes  # exactly the octets DATA carries, before dot-stuffing

    @property
    def needs_smtputf8(self) -> bool:
        return not all(a.isascii() for a in (self.sender, *self.recipients))


def _build_envelope(
    message: bytes, *, sender: str, recipients: Sequence[str], max_bytes: int | None
) -> _Envelope:
    """Check the caller's input once, before any socket is touched."""
    if isinstance(recipients, str):
        raise TypeError("recipients must be a sequence of addresses, not one string")
    if not recipients:
        raise ValueError("a message needs at least one recipient")
    for address in (sender, *recipients):
        if _CONTROL.search(address):
            raise AddressError(f"control character in address {address!r}")
    data = _LINE_ENDING.sub(b"\r\n", message)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if max_bytes is not None and len(data) > max_bytes:
        raise PermanentDeliveryError(
            552, f"5.3.4 message is {len(data)} bytes, over the {max_bytes}-byte limit"
        )
    return _Envelope(sender, tuple(recipients), data)


# --- in memory ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SentMail:
    """A message MemoryTransport accepted: the envelope and the bytes DATA would have carried."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes


class MemoryTransport:
    """A real Transport keeping mail in ``.sent``, like Django's locmem backend: tests, dry runs.

    It parses every message, refuses scripted recipients per address, and raises scripted
    failures, so callers exercise the same paths as with SMTP.
    """

    key: ClassVar[str] = "memory"

    def __init__(
        self,
        *,
        refuse: Mapping[str, tuple[int, str]] | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        self.sent: list[SentMail] = []
        self._refuse: dict[str, tuple[int, str]] = {}
        for address, (code, text) in (refuse or {}).items():
            if not 400 <= code < 600:
                raise ValueError(f"refusal for {address!r} must be a 4xx or 5xx code, not {code}")
            self._refuse[address.lower()] = (code, text)
        self._max_bytes = max_message_bytes
        self._failures: list[DeliveryError] = []

    def fail_next(self, exc: DeliveryError) -> None:
        """Make the next send raise ``exc`` (calls queue up, one failure per send)."""
        self._failures.append(exc)

    async def send(self, message: bytes, *, sender: str, recipients: Sequence[str]) -> SendResult:
        if self._failures:
            raise self._failures.pop(0)
        envelope = _build_envelope(
            message, sender=sender, recipients=recipients, max_bytes=self._max_bytes
        )
        _check_is_message(envelope.data)
        results = tuple(self._reply(address) for address in envelope.recipients)
        accepted = tuple(r.address for r in results if r.accepted)
        if not accepted:
            return SendResult(results, None, "", self.key)
        self.sent.append(SentMail(envelope.sender, accepted, envelope.data))
        return SendResult(results, 250, "2.0.0 OK: kept in memory", self.key)

    async def close(self) -> None:
        """Nothing to release; present so MemoryTransport is a full Transport."""

    def _reply(self, address: str) -> RecipientResult:
        code, text = self._refuse.get(address.lower(), (250, "2.1.5 OK"))
        return RecipientResult(address, code, text)


def _check_is_message(data: bytes) -> None:
    """Fail like a strict server would on bytes that are not an RFC 5322 message."""
    parsed = email.message_from_bytes(data, policy=email.policy.SMTP)
    if not parsed.keys():
        raise PermanentDeliveryError(554, "5.6.0 not an RFC 5322 message: no header fields")
    if parsed["From"] is None:  # RFC 5322 s3.6: From is required
        raise PermanentDeliveryError(554, "5.6.0 message has no From header field")


# --- SMTP --------------------------------------------------------------------------------------


class _StaleConnection(Exception):
    """A pooled connection was found closed on its first command: safe to retry on a new one."""


@dataclass(eq=False)
class _Connection:
    client: aiosmtplib.SMTP
    generation: int  # close() bumps the transport's generation; older connections are retired
    expiry: asyncio.TimerHandle | None = None


class SMTPTransport:
    """A pool of SMTP connections to one endpoint.

    Idle connections are reused (newest first) and quit after ``idle_timeout_seconds``; at most
    ``max_connections`` transactions run at once and further callers wait. One SSL context is
    built here and shared, since building one costs about 20 ms of CPU.

    ``owner`` names whose endpoint this is ("relay", "tenant:acme"): a tenant's own server
    may listen on the relay's host and port, yet its pool, connection cap, size budget,
    credentials and back-off are its own, so its name is part of :attr:`key`.
    """

    def __init__(self, endpoint: SMTPEndpoint, *, owner: str | None = None) -> None:
        self._endpoint = endpoint
        self._key = endpoint.key if owner is None else f"{owner} {endpoint.key}"
        self._tls = _build_tls_context(endpoint)
        self._slots = asyncio.Semaphore(endpoint.max_connections)
        self._idle: list[_Connection] = []
        self._generation = 0
        self._quitting: set[asyncio.Task[None]] = set()
        self._local_hostname = endpoint.local_hostname

    @property
    def key(self) -> str:
        return self._key

    async def send(self, message: bytes, *, sender: str, recipients: Sequence[str]) -> SendResult:
        envelope = _build_envelope(
            message,
            sender=sender,
            recipients=recipients,
            max_bytes=self._endpoint.max_message_bytes,
        )
        async with self._slots:
            conn = self._take_idle()
            if conn is not None:
                try:
                    return await self._send_on(conn, envelope, reused=True)
                except _StaleConnection:
                    log.info("pooled connection to %s had closed; retrying on a new one", self.key)
            conn = await self._connect()
            return await self._send_on(conn, envelope, reused=False)

    async def close(self) -> None:
        """Quit idle connections now and busy ones when their transaction ends."""
        self._generation += 1
        idle, self._idle = self._idle, []
        for conn in idle:
            if conn.expiry is not None:
                conn.expiry.cancel()
        await asyncio.gather(*(_quit(conn.client) for conn in idle), *self._quitting)

    async def _connect(self) -> _Connection:
        client = await _open(self._endpoint, self._tls, local_hostname=self._local_hostname)
        # socket.getfqdn() can take seconds on a badly configured host: resolve it once.
        self._local_hostname = client.local_hostname
        return _Connection(client, self._generation)

    async def _send_on(self, conn: _Connection, envelope: _Envelope, *, reused: bool) -> SendResult:
        try:
            result = await _transact(conn.client, envelope, endpoint=self.key, reused=reused)
        except DeliveryError:
            await self._release(conn, reset=True)
            raise
        except BaseException:  # stale, cancelled or a bug: the session state is unknown
            conn.client.close()
            raise
        await self._release(conn, reset=result.code is None)
        log.debug(
            "%s: %d of %d recipients accepted, reply %s",
            self.key,
            len(result.accepted),
            len(result.recipients),
            result.code,
        )
        return result

    async def _release(self, conn: _Connection, *, reset: bool) -> None:
        """Return a connection to the pool only in a clean state (RFC 5321 s4.1.1.5 RSET)."""
        client = conn.client
        if reset and client.is_connected:
            try:
                with _smtp_errors("RSET"):
                    await client.rset()
            except DeliveryError:
                client.close()
        if not client.is_connected:
            return
        if conn.generation != self._generation:
            await _quit(client)
            return
        loop = asyncio.get_running_loop()
        conn.expiry = loop.call_later(self._endpoint.idle_timeout_seconds, self._expire, conn)
        self._idle.append(conn)

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.expiry is not None:
                conn.expiry.cancel()
            if conn.client.is_connected:
                return conn
        return None

    def _expire(self, conn: _Connection) -> None:
        if conn in self._idle:
            self._idle.remove(conn)
            task = asyncio.get_running_loop().create_task(_quit(conn.client))
            self._quitting.add(task)
            task.add_done_callback(self._quitting.discard)


def _build_tls_context(endpoint: SMTPEndpoint) -> ssl.SSLContext | None:
    """System CAs plus ``ca_file``; verification is off only when the endpoint says so."""
    if endpoint.tls is TLSMode.NONE:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if endpoint.ca_file is not None:
        try:
            context.load_verify_locations(cafile=endpoint.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"ca_file {endpoint.ca_file} cannot be loaded: {exc}") from exc
    if not endpoint.verify_certificate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _open(
    endpoint: SMTPEndpoint, tls: ssl.SSLContext | None, *, local_hostname: str | None
) -> aiosmtplib.SMTP:
    """Connect, secure and log in; the returned client is ready for MAIL."""
    client = aiosmtplib.SMTP(
        hostname=endpoint.host.strip("[]"),
        port=endpoint.port,
        local_hostname=local_hostname,
        timeout=endpoint.timeout_seconds,
        use_tls=endpoint.tls is TLSMode.IMPLICIT,
        start_tls=False,  # done by hand below, so a missing STARTTLS can never mean plain text
        tls_context=tls,
    )
    try:
        with _smtp_errors("connect"):
            await client.connect()
        if endpoint.tls is TLSMode.STARTTLS:
            await _start_tls(client)
        await _authenticate(client, endpoint)
        await _greet(client)  # MAIL's SIZE and BODY parameters depend on the EHLO reply
    except BaseException:
        client.close()
        raise
    log.debug("connected to %s", endpoint.key)
    return client


async def _greet(client: aiosmtplib.SMTP) -> None:
    """EHLO once a session (again after STARTTLS); HELO if EHLO is unknown (RFC 5321 s3.2)."""
    if not client.is_ehlo_or_helo_needed:
        return
    with _smtp_errors("EHLO"):
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError as exc:
            if exc.code not in (500, 502):
                raise
            await client.helo()


async def _start_tls(client: aiosmtplib.SMTP) -> None:
    await _greet(client)
    if not client.supports_extension("starttls"):
        # RFC 3207 s4: with TLS required, a server that does not offer it is not used at all.
        raise TransientDeliveryError(0, "server does not offer STARTTLS, which is required")
    with _smtp_errors("STARTTLS"):
        await client.starttls()


async def _authenticate(client: aiosmtplib.SMTP, endpoint: SMTPEndpoint) -> None:
    """AUTH with the secret read from the environment now, so it never sits in config or pool."""
    username = endpoint.username
    if username is None:
        return
    mechanism = endpoint.auth
    if mechanism == "auto" and endpoint.oauth_token_env is not None:
        mechanism = "xoauth2"
    secret = endpoint.oauth_token() if mechanism == "xoauth2" else endpoint.password()
    if secret is None:
        wanted = "oauth_token_env" if mechanism == "xoauth2" else "password_env"
        raise ConfigError(f"SMTP username is set for {endpoint.key} but {wanted} is not")
    await _greet(client)
    with _smtp_errors("AUTH"):
        if not client.supports_extension("auth"):
            raise PermanentDeliveryError(0, "server does not offer AUTH (does it need TLS first?)")
        if mechanism == "xoauth2":
            await client.auth_xoauth2(username, secret)
        elif mechanism == "plain":
            await client.auth_plain(username, secret)
        elif mechanism == "login":
            await client.auth_login(username, secret)
        else:
            await client.login(username, secret)


async def _transact(
    client: aiosmtplib.SMTP, envelope: _Envelope, *, endpoint: str, reused: bool
) -> SendResult:
    """MAIL, one RCPT per address, then DATA only if someone was accepted."""
    options, encoding = _mail_options(client, envelope)
    try:
        with _smtp_errors("MAIL"):
            await client.mail(envelope.sender, options=options, encoding=encoding)
    except TransientDeliveryError as exc:
        if reused and isinstance(exc.__cause__, ConnectionError):
            raise _StaleConnection from exc
        raise
    recipients = tuple([await _rcpt(client, a, encoding=encoding) for a in envelope.recipients])
    if not any(r.accepted for r in recipients):
        return SendResult(recipients, None, "", endpoint)
    with _smtp_errors("DATA"):
        reply = await client.data(envelope.data)
    return SendResult(recipients, reply.code, reply.message, endpoint)


def _mail_options(client: aiosmtplib.SMTP, envelope: _Envelope) -> tuple[list[str], str]:
    """MAIL FROM parameters: SIZE (RFC 1870), BODY=8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531)."""
    options: list[str] = []
    size = len(envelope.data)
    if client.supports_extension("size"):
        limit = client.esmtp_extensions["size"].strip()
        if limit.isdigit() and 0 < int(limit) < size:
            raise PermanentDeliveryError(
                552, f"5.3.4 message is {size} bytes; the server takes at most {limit}"
            )
        options.append(f"SIZE={size}")
    if not envelope.data.isascii() and client.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    if not envelope.needs_smtputf8:
        return options, "ascii"
    if not client.supports_extension("smtputf8"):
        raise PermanentDeliveryError(553, "5.6.7 non-ASCII address but the server lacks SMTPUTF8")
    return [*options, "SMTPUTF8"], "utf-8"


async def _rcpt(client: aiosmtplib.SMTP, address: str, *, encoding: str) -> RecipientResult:
    with _smtp_errors("RCPT"):
        try:
            reply = await client.rcpt(address, encoding=encoding)
        except aiosmtplib.SMTPRecipientRefused as exc:
            if exc.code == 421:  # the server is closing the channel: the whole transaction failed
                raise
            return RecipientResult(address, exc.code, exc.message)
    return RecipientResult(address, reply.code, reply.message)


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit(timeout=_QUIT_TIMEOUT)
    finally:
        client.close()


@contextlib.contextmanager
def _smtp_errors(stage: str) -> Iterator[None]:
    """Turn aiosmtplib's and the socket's exceptions into the two DeliveryError kinds."""
    try:
        yield
    except aiosmtplib.SMTPResponseException as exc:
        raise _reply_error(exc.code, exc.message, stage=stage) from exc
    except (aiosmtplib.SMTPException, OSError) as exc:  # OSError covers ssl and timeouts
        raise TransientDeliveryError(0, _failure_reason(exc, stage)) from exc


def _reply_error(code: int, message: str, *, stage: str) -> DeliveryError:
    if 500 <= code < 600:
        return PermanentDeliveryError(code, message)
    if 400 <= code < 500:
        return TransientDeliveryError(code, message)
    return TransientDeliveryError(0, f"unexpected reply {code} to {stage}: {message}")


def _failure_reason(exc: BaseException, stage: str) -> str:
    """A short reason without an SMTP reply; built from exception text, which holds no secret."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            detail = getattr(cause, "verify_message", None) or cause.reason or str(cause)
            return f"TLS handshake failed during {stage}: {detail}"
        cause = cause.__cause__
    if isinstance(exc, TimeoutError):
        return f"timed out during {stage}"
    if isinstance(exc, aiosmtplib.SMTPConnectError):
        return str(exc)
    if isinstance(exc, ConnectionError):
        return f"connection lost during {stage}"
    return f"{stage} failed: {exc}"
