"""Typed, frozen settings of the mailer layer: database, relay, SMTP, IMAP and DKIM, delivery.

The servers and the engine's own settings; what one tenant configures (its branding, kinds of
email, payments, webhooks) is ``mailer/tenant_config.py``, which points at these.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from mailer.errors import ConfigError

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_HOST = re.compile(r"^[A-Za-z0-9.-]+$|^\[[0-9A-Fa-f:.]+\]$")


def _host_name(value: str) -> str:
    if not _HOST.match(value):
        raise ValueError(f"not a host name or [address]: {value!r}")
    return value


# A server to connect to or listen on: a DNS name or a bracketed address literal.
HostName = Annotated[str, AfterValidator(_host_name)]


class _Frozen(BaseModel):
    """Every settings table: immutable, and a misspelt key is an error rather than ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TLSMode(StrEnum):
    """How a connection to an SMTP server is secured."""

    NONE = "none"  # plain text; only sensible on loopback or inside a private network
    STARTTLS = "starttls"  # RFC 3207 upgrade on port 587/25
    IMPLICIT = "implicit"  # TLS from the first byte, port 465 (RFC 8314)


class DeliveryMode(StrEnum):
    """Whose server carries a tenant's mail."""

    RELAY = "relay"
    SMTP = "smtp"


class DKIMAlgorithm(StrEnum):
    """Signature algorithms dunmail signs with (RFC 6376, RFC 8463)."""

    RSA_SHA256 = "rsa-sha256"
    ED25519_SHA256 = "ed25519-sha256"


class SMTPEndpoint(_Frozen):
    """One SMTP server: where it is, how to secure it, how to log in, how hard to push it."""

    host: HostName = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 25
    tls: TLSMode = TLSMode.NONE
    verify_certificate: bool = True  # own-SMTP tenants must opt out explicitly
    ca_file: Path | None = None  # extra CA bundle, e.g. a private CA
    username: str | None = None
    password_env: str | None = None  # name of the env var holding the password, never the value
    oauth_token_env: str | None = None  # XOAUTH2 bearer token's env var
    auth: Literal["auto", "plain", "login", "xoauth2"] = "auto"
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    max_connections: Annotated[int, Field(ge=1, le=256)] = 16
    idle_timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    max_message_bytes: Annotated[int, Field(ge=1024)] = 10 * 1024 * 1024
    local_hostname: str | None = None  # EHLO name; the machine's FQDN when unset
    allow_plaintext_auth: bool = False  # AUTH without TLS to a host beyond loopback

    @model_validator(mode="after")
    def _no_cleartext_credentials(self) -> SMTPEndpoint:
        # AUTH PLAIN/LOGIN over an unencrypted connection hands the password to anyone on the
        # path (RFC 4954 s4 asks for TLS first); only loopback or an explicit opt-in may do so.
        loopback = self.host in {"localhost", "[::1]"} or self.host.startswith("127.")
        if (
            self.username
            and self.tls is TLSMode.NONE
            and not loopback
            and not self.allow_plaintext_auth
        ):
            raise ValueError(
                f"username set with tls = 'none' for {self.host}: the password would travel in "
                "clear text; use tls = 'starttls' or 'implicit' (or allow_plaintext_auth = true)"
            )
        return self

    def password(self) -> str | None:
        """Read the password from the environment at the moment it is needed."""
        return _read_env(self.password_env, "password_env")

    def oauth_token(self) -> str | None:
        """Read the XOAUTH2 bearer token from the environment."""
        return _read_env(self.oauth_token_env, "oauth_token_env")

    @property
    def key(self) -> str:
        """Identity of the endpoint for pooling and concurrency caps (never holds a secret)."""
        return f"{self.host}:{self.port}/{self.tls.value}/{self.username or ''}"


class DKIMConfig(_Frozen):
    """One DKIM signing key (RFC 6376), read from a file so the key never sits in config."""

    domain: str
    selector: str
    key_file: Path
    algorithm: DKIMAlgorithm = DKIMAlgorithm.RSA_SHA256

    @field_validator("selector")
    @classmethod
    def _selector_is_a_label(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError(f"not a DNS label: {value!r}")
        return value


class RelayConfig(SMTPEndpoint):
    """The engine's own relay: sends as ``noreply-invoice@<domain>`` for tenants in relay mode."""

    domain: str = "dunmail.localhost"
    sender_local_part: str = "noreply-invoice"
    # The relay's own keys (d= its domain): relay-mode mail says From: noreply-invoice@<domain>,
    # so only a signature for that domain aligns with From for DMARC (RFC 7489 s3.1.1).
    dkim: list[DKIMConfig] = Field(default_factory=list)

    @field_validator("dkim", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, dict) else value

    @property
    def sender(self) -> str:
        return f"{self.sender_local_part}@{self.domain}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine: the one place a secret may travel without TLS."""
    return host in {"localhost", "[::1]", "::1"} or host.startswith("127.")


class IMAPAfter(StrEnum):
    """What happens on the server to a message once dunmail has stored it."""

    FLAG = "flag"  # \Seen plus the $DunmailStored keyword: the mailbox keeps its history
    DELETE = "delete"  # \Deleted and expunged


class IMAPConfig(_Frozen):
    """A tenant's own mailbox, where its SMTP server returns bounces, polled over IMAP."""

    host: HostName
    port: Annotated[int, Field(ge=1, le=65535)] | None = None  # 993 implicit TLS, else 143
    tls: TLSMode = TLSMode.IMPLICIT
    verify_certificate: bool = True
    ca_file: Path | None = None  # extra CA bundle, e.g. a private CA
    username: Annotated[str, Field(min_length=1, max_length=320)]
    password_env: str  # name of the env var holding the password, never the value
    mailbox: Annotated[str, Field(min_length=1, max_length=200)] = "INBOX"
    poll_seconds: Annotated[float, Field(gt=0)] = 60.0
    after: IMAPAfter = IMAPAfter.FLAG
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    allow_plaintext_auth: bool = False  # LOGIN without TLS to a host beyond loopback

    @field_validator("mailbox")
    @classmethod
    def _printable_mailbox(cls, value: str) -> str:
        # Non-ASCII names need RFC 3501 s5.1.3 modified UTF-7, which imaplib does not do.
        if not all(" " <= ch <= "~" for ch in value):
            raise ValueError(f"mailbox must be printable ASCII, not {value!r}")
        return value

    @model_validator(mode="after")
    def _no_cleartext_login(self) -> IMAPConfig:
        # LOGIN over an unencrypted connection hands the password to anyone on the path
        # (RFC 9051 s11.1 requires TLS for it); only loopback or an explicit opt-in may do so.
        if (
            self.tls is TLSMode.NONE
            and not is_loopback(self.host)
            and not self.allow_plaintext_auth
        ):
            raise ValueError(
                f"imap.tls = 'none' for {self.host}: the password would travel in clear text; "
                "use tls = 'implicit' or 'starttls' (or imap.allow_plaintext_auth = true)"
            )
        return self

    @property
    def server_port(self) -> int:
        """The configured port, else IMAP's standard one for the TLS mode (RFC 8314)."""
        if self.port is not None:
            return self.port
        return 993 if self.tls is TLSMode.IMPLICIT else 143

    def password(self) -> str | None:
        """Read the password from the environment at the moment it is needed."""
        return _read_env(self.password_env, "imap.password_env")


class DeliveryConfig(_Frozen):
    """How the outbox claims, retries and paces messages."""

    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 200
    lease_seconds: Annotated[int, Field(ge=5)] = 300
    max_age: timedelta = timedelta(days=5)  # Postfix's maximal_queue_lifetime
    first_retry_after: timedelta = timedelta(minutes=5)
    max_retry_after: timedelta = timedelta(hours=4)
    poll_seconds: Annotated[float, Field(gt=0)] = 2.0
    domain_rate_per_minute: Annotated[int, Field(ge=1)] = 600
    domain_backoff: timedelta = timedelta(minutes=5)  # after a 421 / 4.7.x from a domain


class PDFConfig(_Frozen):
    """Limits that keep one tenant's documents from starving everyone else's mail.

    A document with more than ``max_lines`` lines is refused at import (the PDF would run to
    hundreds of pages); a PDF laid out to more than ``max_pages`` pages, or still rendering
    after ``render_seconds`` (its worker process is killed), is not attached: the email goes
    without it, its View link shows the document, and the message's last_error says why.
    A delivery pass waits at most ``pass_wait_seconds`` for a PDF; a slower one finishes off
    the pass and its email goes at a later pass. ``workers`` render processes (default: one
    per CPU); one tenant renders in at most ``workers - 1`` of them at once.
    """

    max_lines: Annotated[int, Field(ge=1, le=100_000)] = 1000
    max_pages: Annotated[int, Field(ge=1, le=10_000)] = 50
    render_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    pass_wait_seconds: Annotated[float, Field(ge=0, le=3600)] = 2.0
    workers: Annotated[int, Field(ge=0, le=64)] | None = None
    max_worker_mb: Annotated[int, Field(ge=64)] = 512


class InboundConfig(_Frozen):
    """The inbound SMTP server: bounces at the VERP addresses, replies at the AR inboxes."""

    enabled: bool = False
    host: HostName = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 2526
    hostname: str | None = None  # greeting and EHLO name; the machine's FQDN when unset
    max_message_bytes: Annotated[int, Field(ge=1024)] = 25 * 1024 * 1024  # SIZE (RFC 1870)
    # Abuse limits (bounce/smtp_limits.py), after Postfix's smtpd settings in postconf(5).
    # Recipients per transaction (smtpd_recipient_limit, 1000 there): a bounce or a reply names
    # one; RFC 5321 s4.5.3.1.8 asks a server to take at least 100. More get 452 4.5.3.
    max_recipients: Annotated[int, Field(ge=1, le=100_000)] = 100
    # Open connections overall and per client (smtpd_client_connection_count_limit, 50 there);
    # past either, 421 4.7.0 and closed. IPv6 clients count per network of this many bits.
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 200
    max_connections_per_client: Annotated[int, Field(ge=1, le=100_000)] = 20
    client_ipv6_prefix: Annotated[int, Field(ge=1, le=128)] = 64
    # Idle time between commands (smtpd_timeout, RFC 5321 s4.5.3.2.7's 5 minutes) and a whole
    # session's time, however busy: past either, 421 4.4.2 and closed.
    idle_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 300.0
    session_timeout_seconds: Annotated[float, Field(gt=0, le=86_400)] = 600.0
    max_errors_per_session: Annotated[int, Field(ge=1, le=10_000)] = 20  # smtpd_hard_error_limit
    log_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 5.0  # one line per kind

    @model_validator(mode="after")
    def _limits_fit(self) -> InboundConfig:
        if self.max_connections_per_client > self.max_connections:
            raise ValueError(
                f"max_connections_per_client ({self.max_connections_per_client}) is more than "
                f"max_connections ({self.max_connections})"
            )
        if self.idle_timeout_seconds > self.session_timeout_seconds:
            raise ValueError(
                f"idle_timeout_seconds ({self.idle_timeout_seconds:g}) is more than "
                f"session_timeout_seconds ({self.session_timeout_seconds:g})"
            )
        return self


class LoginConfig(_Frozen):
    """The sign-in throttle ([web.login], dunmail/web/throttle.py): attempts per fixed window.

    Each attempt counts against four limits before its password is checked; one already spent
    answers 429 with Retry-After (the right password too). A sign-in that succeeds is taken back.
    """

    window_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 15
    per_address_and_client: Annotated[int, Field(ge=1, le=100_000)] = 5  # one name, one client
    per_address: Annotated[int, Field(ge=1, le=100_000)] = 20  # one name, every client
    per_client: Annotated[int, Field(ge=1, le=1_000_000)] = 50  # one client, every name
    overall: Annotated[int, Field(ge=1, le=10_000_000)] = 1000  # every name, every client


class WebConfig(_Frozen):
    """The web app: customers' links and hosted pages, the AR inbox UI, the JSON API."""

    enabled: bool = True
    host: HostName = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8025
    # Where customers reach it: the links in emails start with this.
    public_url: str = "http://127.0.0.1:8025"
    link_days_after_due: Annotated[int, Field(ge=1, le=3650)] = 90  # View/Pay links expire
    link_days: Annotated[int, Field(ge=1, le=3650)] = 90  # documents without a due date
    # Old link keys' env vars: links they signed still verify while listed (key rotation).
    previous_link_keys_env: list[str] = Field(default_factory=list)
    session_hours: Annotated[int, Field(ge=1, le=24 * 30)] = 12
    fresh_links_per_day: Annotated[int, Field(ge=1, le=100)] = 3  # per document
    login: LoginConfig = Field(default_factory=lambda: LoginConfig())  # [web.login]
    # Request bodies (dunmail/web/limits.py), refused with 413 while being read: the API's
    # record upserts (an invoice with all its lines) may carry max_body_bytes; everything else
    # (HTML forms, API actions) is what a person types or a few fields: max_form_bytes.
    max_body_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    max_form_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024

    @field_validator("public_url")
    @classmethod
    def _public(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ValueError(f"public_url must be an http(s) URL without a query: {value!r}")
        return value.rstrip("/")

    @property
    def secure_cookies(self) -> bool:
        """Cookies carry the Secure flag whenever the public URL is https."""
        return self.public_url.startswith("https://")


class DatabaseConfig(_Frozen):
    """Where the ledger lives, and how a long ``dunmail import`` shares it (importlock.py)."""

    url: str = "sqlite:///var/dunmail.db"
    # An import commits every import_batch_records records or import_batch_seconds, whichever
    # comes first, so the engine's own writes wait at most about one batch.
    import_batch_records: Annotated[int, Field(ge=1, le=100_000)] = 200
    import_batch_seconds: Annotated[float, Field(gt=0, le=60)] = 0.1
    # SQLite only: after each batch the import pauses this times the batch's duration (at most
    # 1 s), so writers waiting on SQLite's busy back-off find the lock free.
    import_pause_ratio: Annotated[float, Field(ge=0, le=10)] = 1.0
    # One import per tenant: the lock's lease, renewed by every batch; the lock of an import
    # that died is taken over after it (at once when it ran on this host).
    import_lock_lease_seconds: Annotated[int, Field(ge=10, le=86_400)] = 300


def check_slug(slug: str) -> str:
    """Tenant slugs name config tables and URL paths, so keep them to a safe alphabet."""
    if not _SLUG.match(slug):
        raise ConfigError(f"tenant slug {slug!r} must be lowercase letters, digits, '-' or '_'")
    return slug


def _read_env(name: str | None, key: str) -> str | None:
    if name is None:
        return None
    value = os.environ.get(name)
    if value is None:
        raise ConfigError(f"{key} names ${name}, which is not set")
    return value
