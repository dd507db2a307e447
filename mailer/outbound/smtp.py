"""SMTPTransport: a pool of aiosmtplib connections to one endpoint (the only aiosmtplib import)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import aiosmtplib

from mailer.config import SMTPEndpoint, TLSMode
from mailer.errors import (
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from mailer.outbound.transport import Envelope, RecipientResult, SendResult, build_envelope

log = logging.getLogger(__name__)

_QUIT_TIMEOUT = 5.0  # QUIT is a courtesy; never let a silent server hold up close()


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
        envelope = build_envelope(
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

    async def _send_on(self, conn: _Connection, envelope: Envelope, *, reused: bool) -> SendResult:
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
    client: aiosmtplib.SMTP, envelope: Envelope, *, endpoint: str, reused: bool
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


def _mail_options(client: aiosmtplib.SMTP, envelope: Envelope) -> tuple[list[str], str]:
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
