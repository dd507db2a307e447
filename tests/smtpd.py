"""A scriptable, recording aiosmtpd server on loopback: a pytest plugin and a standalone process.

The server runs in the test's own event loop (``loop.create_server``, as aiosmtplib's tests do)
rather than in aiosmtpd's threaded ``Controller``: the handler's records and ``script()`` changes
are then plain attribute updates with no locks, a failing hook shows up in the test's loop, and
start-up costs no thread or self-probe. A blocking client would deadlock it, but ours is async.

Behaviour per test: ``@pytest.mark.smtpd_options(**SMTPDOptions fields)``; mid-test:
``smtpd.script(**changes)``. Standalone (crash tests, benchmarks)::

    python -m tests.smtpd --port 0 --print-port --record ids.txt
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import signal
import ssl
import sys
import warnings
from base64 import b64decode
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from email.message import EmailMessage
from pathlib import Path
from typing import IO, Any, Literal, cast

import pytest
import trustme
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

Stage = Literal["greeting", "ehlo", "mail", "rcpt", "data", "data_end"]
_FOREVER = 3600.0  # "silent" and "dropped" handlers park here until the connection goes
_MECHANISMS = ("PLAIN", "LOGIN", "XOAUTH2")


@dataclass(frozen=True)
class SMTPDOptions:
    """How the server behaves; every field is a keyword of ``smtpd_options`` and ``script``.

    Replies are full reply lines such as ``"421 4.7.0 Try again later"``.
    Stages: greeting, ehlo, mail, rcpt, data (after the 354, mid-body) and data_end (after the
    final dot, before the reply).
    """

    greeting: str | None = None  # reply to the connection instead of 220, then hang up
    ehlo: str | None = None  # reply to EHLO/HELO
    mail: str | None = None  # reply to every MAIL FROM
    rcpt: str | Mapping[str, str] | None = None  # to every RCPT, or per address
    data: str | None = None  # reply after end of DATA; the message is then not recorded
    drop: Stage | None = None  # close the connection without a reply at that stage
    silent: Stage | None = None  # never answer at that stage, so the client times out
    once: bool = False  # ``drop``/``silent`` fire for one connection only, then clear
    data_delay: float = 0.0  # seconds to wait before accepting DATA (overlaps clients)
    tls: Literal["none", "starttls", "implicit"] = "none"  # fixed when the server starts
    auth: Mapping[str, str] | None = None  # username -> password for AUTH PLAIN/LOGIN
    oauth: Mapping[str, str] | None = None  # username -> bearer token for AUTH XOAUTH2
    auth_mechanisms: Sequence[str] | None = None  # advertised subset, e.g. ("LOGIN",)
    size_limit: int | None = 33_554_432  # advertised SIZE (RFC 1870); None: no SIZE at all
    # RCPTs taken per transaction; the rest get 452 4.5.3 (RFC 5321 s4.5.3.1.10)
    max_recipients: int | None = None
    tls_broken: bool = False  # STARTTLS: say 220, then answer the handshake in plain text

    def rcpt_reply(self, address: str) -> str | None:
        if isinstance(self.rcpt, Mapping):
            return self.rcpt.get(address)
        return self.rcpt


@dataclass(frozen=True)
class ReceivedEnvelope:
    """One accepted transaction, with the DATA octets as received (dot-unstuffed)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    mail_options: tuple[str, ...]


class RecordingServer:
    """The running server: where it listens, what it accepted, and its script."""

    def __init__(
        self,
        options: SMTPDOptions,
        *,
        tls_context: ssl.SSLContext | None = None,
        ca_file: Path | None = None,
        record: IO[str] | None = None,
    ) -> None:
        self.options = options
        self.host = "127.0.0.1"
        self.port = 0
        self.ca_file = ca_file  # the CA PEM clients must trust (SMTPEndpoint.ca_file)
        self.messages: list[EmailMessage] = []
        self.envelopes: list[ReceivedEnvelope] = []
        self.commands: list[str] = []  # verbs in arrival order, across all connections
        self.logins: list[str] = []  # usernames that authenticated
        self.connections = 0  # opened so far
        self.peak_connections = 0  # most open at the same time
        self.handler = _Handler(self)
        self._tls = tls_context
        self._record = record
        self._open: set[_ScriptedSMTP] = set()
        self._server: asyncio.Server | None = None

    @property
    def active_connections(self) -> int:
        return len(self._open)

    def script(self, **changes: Any) -> None:
        """Change behaviour for what happens next (``tls`` cannot change once started)."""
        self.options = replace(self.options, **changes)

    def drop_connections(self) -> None:
        """Hang up on every client, as a server does to idle connections."""
        for proto in list(self._open):
            if proto.transport is not None:
                proto.transport.close()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        implicit = self._tls if self.options.tls == "implicit" else None
        self._server = await loop.create_server(self._new_protocol, host, port, ssl=implicit)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        handlers = [p.handler_task for p in self._open if p.handler_task is not None]
        self.drop_connections()
        if handlers:
            await asyncio.wait(handlers, timeout=2)
        if self._server is not None:
            await self._server.wait_closed()

    def _new_protocol(self) -> _ScriptedSMTP:
        opts = self.options
        has_auth = bool(opts.auth or opts.oauth)
        wanted = opts.auth_mechanisms
        if wanted is None and has_auth:
            wanted = ["PLAIN", "LOGIN"] if opts.auth else []
            wanted += ["XOAUTH2"] if opts.oauth else []
        with warnings.catch_warnings():
            # aiosmtpd warns about AUTH without TLS; on loopback in tests that is the point.
            warnings.simplefilter("ignore")
            return _ScriptedSMTP(
                self,
                hostname="smtpd.test",  # else aiosmtpd calls getfqdn() per connection
                tls_context=self._tls if opts.tls == "starttls" else None,
                data_size_limit=opts.size_limit,
                auth_required=has_auth,
                # Without credentials configured, AUTH is only offered after STARTTLS, as usual.
                auth_require_tls=opts.tls == "starttls" or not has_auth,
                auth_exclude_mechanism=[m for m in _MECHANISMS if wanted and m not in wanted],
                authenticator=self._check_password,
                loop=asyncio.get_running_loop(),
            )

    def _check_password(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            user, password = data.login.decode(), data.password.decode()
            if (self.options.auth or {}).get(user) == password:
                self.logins.append(user)
                return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False)

    def _accept(self, envelope: Envelope) -> None:
        content = cast(bytes, envelope.original_content)
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        self.messages.append(cast(EmailMessage, parsed))
        self.envelopes.append(
            ReceivedEnvelope(
                mail_from=cast(str, envelope.mail_from),
                rcpt_tos=tuple(envelope.rcpt_tos),
                content=content,
                mail_options=tuple(envelope.mail_options),
            )
        )
        if self._record is not None:  # written and flushed before the 250 goes out
            self._record.write(f"{str(parsed.get('Message-ID', '-')).strip()}\n")
            self._record.flush()

    def _opened(self, proto: _ScriptedSMTP) -> None:
        self._open.add(proto)
        self.connections += 1
        self.peak_connections = max(self.peak_connections, len(self._open))

    def _closed(self, proto: _ScriptedSMTP) -> None:
        self._open.discard(proto)


class _Handler:
    """aiosmtpd hooks (``handle_*``, ``auth_*``); nothing else here may use those prefixes."""

    def __init__(self, server: RecordingServer) -> None:
        self._server = server

    async def handle_MAIL(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self._server.options.mail:
            return self._server.options.mail
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        opts = self._server.options
        reply = opts.rcpt_reply(address)
        if reply:
            return reply
        if opts.max_recipients is not None and len(envelope.rcpt_tos) >= opts.max_recipients:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        await cast(_ScriptedSMTP, smtp).act("data_end")
        opts = self._server.options
        if opts.data_delay:
            await asyncio.sleep(opts.data_delay)
        if opts.data:
            return opts.data
        self._server._accept(envelope)
        return f"250 2.0.0 OK queued as {len(self._server.envelopes)}"

    async def auth_XOAUTH2(self, smtp: SMTP, args: list[str]) -> AuthResult:
        """Google's XOAUTH2: base64("user=U\\x01auth=Bearer T\\x01\\x01")."""
        if len(args) > 1:
            blob: bytes = b64decode(args[1])
        else:
            answer = await smtp.challenge_auth("")
            if answer is MISSING:
                return AuthResult(success=False, handled=True)
            blob = cast(bytes, answer)
        fields = dict(f.split("=", 1) for f in blob.decode().split("\x01") if "=" in f)
        user, token = fields.get("user"), fields.get("auth", "").removeprefix("Bearer ")
        if user is not None and (self._server.options.oauth or {}).get(user) == token:
            self._server.logins.append(user)
            return AuthResult(success=True, auth_data=user)
        # On failure the server sends a JSON error as a 334 challenge; the client answers empty.
        await smtp.challenge_auth('{"status":"401","schemes":"bearer"}')
        return AuthResult(success=False, handled=False)


class _ScriptedSMTP(SMTP):
    """aiosmtpd's SMTP with every command recorded and the script applied before it runs."""

    def __init__(self, server: RecordingServer, **kwargs: Any) -> None:
        self._server = server
        self._counted = False
        super().__init__(server.handler, **kwargs)

    @property
    def handler_task(self) -> asyncio.Task[None] | None:
        return self._handler_coroutine

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._counted:  # STARTTLS calls this again for the same connection
            self._counted = True
            self._server._opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self._server._closed(self)

    async def act(self, stage: Stage) -> None:
        """Apply ``drop``/``silent`` for ``stage``; when one fires, this never returns."""
        opts = self._server.options
        if stage not in (opts.drop, opts.silent):
            return
        dropping = opts.drop == stage
        if opts.once:
            self._server.script(**({"drop": None} if dropping else {"silent": None}))
        if dropping:
            if stage == "data":  # hang up part-way through the message
                await self.push("354 End data with <CR><LF>.<CR><LF>")
                await self._reader.readline()
            if self.transport is not None:
                self.transport.close()
        await asyncio.sleep(_FOREVER)  # cancelled by connection_lost()

    async def _handle_client(self) -> None:
        await self.act("greeting")
        if self._server.options.greeting:
            await self.push(self._server.options.greeting)
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    async def _command(self, verb: str, stage: Stage | None = None) -> bool:
        """Record ``verb``, apply the script; True when a scripted EHLO reply was sent."""
        self._server.commands.append(verb)
        if stage is not None:
            await self.act(stage)
        if stage == "ehlo" and self._server.options.ehlo:
            await self.push(self._server.options.ehlo)
            return True
        return False

    async def smtp_EHLO(self, hostname: str) -> None:
        if not await self._command("EHLO", "ehlo"):
            await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname: str) -> None:
        if not await self._command("HELO", "ehlo"):
            await super().smtp_HELO(hostname)

    async def smtp_STARTTLS(self, arg: str) -> None:
        await self._command("STARTTLS")
        if self._server.options.tls_broken and self.tls_context is not None:
            # A broken TLS stack: the client's ClientHello gets a text line, not a ServerHello.
            await self.push("220 Ready to start TLS")
            await self.push("421 4.7.0 this is not a TLS handshake")
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_AUTH(self, arg: str) -> None:
        await self._command("AUTH")
        await super().smtp_AUTH(arg)

    async def smtp_MAIL(self, arg: str | None) -> None:
        await self._command("MAIL", "mail")
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        await self._command("RCPT", "rcpt")
        await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg: str) -> None:
        await self._command("DATA", "data")
        await super().smtp_DATA(arg)

    async def smtp_RSET(self, arg: str) -> None:
        await self._command("RSET")
        await super().smtp_RSET(arg)

    async def smtp_NOOP(self, arg: str) -> None:
        await self._command("NOOP")
        await super().smtp_NOOP(arg)

    async def smtp_QUIT(self, arg: str) -> None:
        await self._command("QUIT")
        await super().smtp_QUIT(arg)


async def start_server(
    options: SMTPDOptions | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls_cert: trustme.LeafCert | None = None,
    ca_file: Path | None = None,
    record: IO[str] | None = None,
) -> RecordingServer:
    """Start a recording server in the running loop; ``await server.close()`` when done."""
    options = options or SMTPDOptions()
    tls: ssl.SSLContext | None = None
    if options.tls != "none":
        if tls_cert is None:
            raise ValueError(f"tls={options.tls!r} needs tls_cert")
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # no client certificates asked for
        tls_cert.configure_cert(tls)
    server = RecordingServer(options, tls_context=tls, ca_file=ca_file, record=record)
    await server.start(host, port)
    return server


# --- pytest plugin -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A throwaway certificate authority; only clients given ``tls_ca_file`` trust it."""
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_ca_file(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CA's PEM file, for ``SMTPEndpoint(ca_file=...)``."""
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def tls_server_cert(tls_ca: trustme.CA) -> trustme.LeafCert:
    return tls_ca.issue_cert("127.0.0.1", "localhost")


@pytest.fixture
async def smtpd(
    request: pytest.FixtureRequest, tls_server_cert: trustme.LeafCert, tls_ca_file: Path
) -> AsyncIterator[RecordingServer]:
    """A fresh server per test, shaped by ``@pytest.mark.smtpd_options(...)``."""
    marker = request.node.get_closest_marker("smtpd_options")
    options = SMTPDOptions(**(marker.kwargs if marker else {}))
    server = await start_server(options, tls_cert=tls_server_cert, ca_file=tls_ca_file)
    try:
        yield server
    finally:
        await server.close()


# --- standalone --------------------------------------------------------------------------------


async def serve(argv: Sequence[str] | None = None) -> None:
    """Run until SIGINT/SIGTERM; see ``--help``."""
    parser = argparse.ArgumentParser(prog="python -m tests.smtpd", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--print-port", action="store_true", help="print the bound port first")
    parser.add_argument("--record", type=Path, help="append each accepted Message-ID here")
    parser.add_argument("--data-delay", type=float, default=0.0, help="seconds before 250")
    args = parser.parse_args(argv)
    record = args.record.open("a", encoding="utf-8") if args.record else None
    try:
        server = await start_server(
            SMTPDOptions(data_delay=args.data_delay), host=args.host, port=args.port, record=record
        )
        if args.print_port:
            print(server.port, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.close()
    finally:
        if record is not None:
            record.close()


def main(argv: Sequence[str] | None = None) -> int:
    asyncio.run(serve(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
