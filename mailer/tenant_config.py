"""Typed, frozen settings of one tenant: its sending, branding, kinds of email, payments, webhooks.

A ``[tenants.<slug>]`` table of the configuration file, with its sub-tables. The servers it
points at (SMTP, IMAP, DKIM keys) and the engine's own settings are in ``mailer/config.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mailer.address import parse_addr_spec
from mailer.bank_config import BankConfig
from mailer.checkout_config import CheckoutConfig
from mailer.config import DeliveryMode, DKIMConfig, IMAPConfig, SMTPEndpoint, is_loopback
from mailer.content.kinds import KINDS
from mailer.dunning_config import DunningConfig
from mailer.errors import AddressError

_HEX_COLOR = re.compile(r"#(?:[0-9a-fA-F]{3}){1,2}")
_NOT_IN_URL = re.compile(r"[\s\x00-\x1f\x7f\"'<>\\]")


class _Frozen(BaseModel):
    """Every settings table: immutable, and a misspelt key is an error rather than ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class BrandingConfig(_Frozen):
    """How a tenant's emails look: logo, colour, postal address and legal footer."""

    logo_url: str | None = None  # http(s) URL; the only remote resource an email may load
    brand_color: str | None = None  # "#0b5cad" or "#08c"
    address: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list)
    footer: Annotated[str, Field(max_length=1000)] | None = None  # company number, VAT id
    # The tenant's tax id (VAT number), printed on its documents beside ``address`` and in the
    # emails' footer: an invoice must name the seller's (EU VAT Directive art. 226).
    tax_id: Annotated[str, Field(max_length=50)] | None = None

    @field_validator("logo_url")
    @classmethod
    def _web_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if _NOT_IN_URL.search(value) or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"logo_url must be an http(s) URL, not {value[:80]!r}")
        return value

    @field_validator("brand_color")
    @classmethod
    def _hex_color(cls, value: str | None) -> str | None:
        if value is not None and not _HEX_COLOR.fullmatch(value):
            raise ValueError(f"brand_color must be a hex colour such as '#0b5cad', not {value!r}")
        return value

    @field_validator("address")
    @classmethod
    def _one_line_each(cls, value: list[str]) -> list[str]:
        if any("\n" in line or "\r" in line for line in value):
            raise ValueError("address takes one list item per line, without line breaks")
        return value

    def as_context(self) -> dict[str, Any]:
        """The ``tenant`` keys of the render context (``mailer.content.shapes.TenantData``)."""
        return {
            "logo_url": self.logo_url,
            "brand_color": self.brand_color,
            "address": list(self.address),
            "footer": self.footer,
            "tax_id": self.tax_id,
        }


def _copy_addresses(value: list[str] | None) -> list[str] | None:
    """``cc`` / ``bcc``: bare addresses, each checked as the outbox checks a recipient, so a
    typo stops the config from loading (naming the address) instead of failing every email."""
    if value is None:
        return None
    found: list[str] = []
    for address in value:
        try:
            found.append(parse_addr_spec(address))
        except AddressError as exc:
            raise ValueError(f"{address!r} is not a copy address: {exc}") from None
    return list(dict.fromkeys(found))


def _not_both(cc: list[str] | None, bcc: list[str] | None) -> None:
    both = sorted({a.lower() for a in cc or ()} & {a.lower() for a in bcc or ()})
    if both:
        raise ValueError(f"{both[0]!r} is in both cc and bcc; keep it in one")


class EmailKindConfig(_Frozen):
    """Whether a tenant sends one kind of email, and with its PDF attached."""

    enabled: bool
    attach_pdf: bool
    # The AR team's copies of this kind, instead of the tenant's ``cc`` / ``bcc`` (unset:
    # those; ``[]``: none for this kind).
    cc: list[str] | None = None
    bcc: list[str] | None = None
    # statement only: attach the PDF of each open invoice it lists, within the size budget
    attach_invoices: bool = False

    _addresses = field_validator("cc", "bcc")(_copy_addresses)

    @model_validator(mode="after")
    def _copy_once(self) -> EmailKindConfig:
        _not_both(self.cc, self.bcc)
        return self


def _kind_settings(value: object) -> object:
    """Every kind's settings: the tenant's table over the defaults from ``mailer.content.kinds``."""
    if not isinstance(value, Mapping):
        return value  # pydantic reports the wrong type
    unknown = sorted(str(name) for name in value if name not in KINDS)
    if unknown:
        raise ValueError(
            f"unknown email kind {unknown[0]!r}; known kinds: {', '.join(sorted(KINDS))}"
        )
    merged: dict[str, object] = {}
    for name, spec in KINDS.items():
        given = value.get(name, {})
        if not isinstance(given, Mapping):
            merged[name] = given
            continue
        if given.get("attach_pdf") and spec.pdf is None:
            raise ValueError(f"{name}.attach_pdf: a {name} email has no PDF to attach")
        if given.get("attach_invoices") and name != "statement":
            raise ValueError(f"{name}.attach_invoices: only a statement lists open invoices")
        merged[name] = {"enabled": spec.default_on, "attach_pdf": spec.pdf is not None, **given}
    return merged


class PaymentsConfig(_Frozen):
    """Where the tenant's payment provider takes the customer. ``{number}``, ``{document}`` and
    ``{customer}`` are filled in (URL-encoded); each must be an https URL (http on loopback)."""

    pay_url: str | None = None  # "https://pay.acme.example/invoice/{number}"
    update_payment_url: str | None = None  # "https://pay.acme.example/customer/{customer}/card"
    manage_url: str | None = None  # subscriptions: "https://billing.acme.example/{customer}"
    checkout: CheckoutConfig | None = None  # the account page's hand-off (checkout_config.py)

    @field_validator("pay_url", "update_payment_url", "manage_url")
    @classmethod
    def _web_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        loopback = parts.hostname is not None and is_loopback(parts.hostname)
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError(f"must be an https URL, not {value!r}")
        if not parts.hostname or "@" in parts.netloc:
            raise ValueError(f"must name a host and no credentials: {value!r}")
        for field_name in re.findall(r"{([^{}]*)}", value):
            if field_name not in ("number", "document", "customer"):
                raise ValueError(f"unknown placeholder {{{field_name}}} in {value!r}")
        return value


class WebhookConfig(_Frozen):
    """One endpoint that receives the tenant's events, signed with the secret in ``secret_env``."""

    url: str
    secret_env: str  # env var holding the signing secret, never the value
    events: list[str] = Field(default_factory=lambda: ["*"])  # "*" or event names

    @field_validator("url")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        parts = urlsplit(value)
        loopback = parts.hostname is not None and is_loopback(parts.hostname)
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError(f"a webhook endpoint must be https (http only on loopback): {value!r}")
        return value


class BounceConfig(_Frozen):
    """How soft bounces suppress: ``soft_limit`` of them within ``soft_window_days`` block the
    address for ``soft_suppress_days`` (hard bounces and complaints block until unblocked)."""

    soft_limit: Annotated[int, Field(ge=1, le=100)] = 3
    soft_window_days: Annotated[int, Field(ge=1, le=365)] = 7
    soft_suppress_days: Annotated[int, Field(ge=1, le=3650)] = 14


class RepliesConfig(_Frozen):
    """What a customer's reply may do without a clerk (bounce/proposals.py). Every action
    triage proposes waits for a clerk's click unless ``auto_promise_holds``: then a promise
    to pay holds the invoice until the promised day plus ``promise_grace_days`` by itself
    (still shown in the thread). A promise with no day holds ``promise_default_days``."""

    auto_promise_holds: bool = False
    promise_grace_days: Annotated[int, Field(ge=0, le=60)] = 3
    promise_default_days: Annotated[int, Field(ge=1, le=90)] = 7


class TenantConfig(_Frozen):
    """A business that sends its invoices through dunmail."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: str  # the tenant's own address: From in smtp mode, Reply-To in relay mode
    delivery: DeliveryMode = DeliveryMode.RELAY
    smtp: SMTPEndpoint | None = None
    dkim: list[DKIMConfig] = Field(default_factory=list)
    bounce_domain: str | None = None  # VERP domain; the relay's domain when unset
    reply_to: str | None = None  # an AR inbox address; ``email`` when unset
    time_zone: str = "UTC"
    locale: str = "en"
    rate_per_minute: Annotated[int, Field(ge=1)] = 6000
    branding: BrandingConfig = Field(default_factory=BrandingConfig)
    # One entry per kind in mailer.content.kinds.KINDS, defaults filled in:
    # [tenants.<slug>.emails.<kind>]
    emails: dict[str, EmailKindConfig] = Field(default_factory=dict, validate_default=True)
    # The AR team's copies of every customer email: cc in the Cc header, bcc only in the
    # envelope (never in a header). A kind's own emails.<kind>.cc / .bcc replace these.
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list)
    dunning: DunningConfig = Field(default_factory=DunningConfig)
    imap: IMAPConfig | None = None  # the tenant's own mailbox, polled for returned mail
    bounces: BounceConfig = Field(default_factory=lambda: BounceConfig())
    replies: RepliesConfig = Field(default_factory=lambda: RepliesConfig())
    payments: PaymentsConfig = Field(default_factory=lambda: PaymentsConfig())
    bank: BankConfig | None = None  # the account customers pay into (mailer/bank_config.py)
    webhooks: list[WebhookConfig] = Field(default_factory=list)

    @field_validator("emails", mode="before")
    @classmethod
    def _known_kinds(cls, value: object) -> object:
        return _kind_settings(value)

    def sends(self, kind: str) -> bool:
        """Whether this tenant sends ``kind`` emails at all."""
        return self.emails[kind].enabled

    def copies(self, kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(cc, bcc) of ``kind`` emails: the kind's own lists where set, else the tenant's."""
        spec = self.emails.get(kind)
        cc = spec.cc if spec is not None and spec.cc is not None else self.cc
        bcc = spec.bcc if spec is not None and spec.bcc is not None else self.bcc
        shown = {a.lower() for a in cc}
        return tuple(cc), tuple(a for a in bcc if a.lower() not in shown)

    def attaches_invoices(self, kind: str) -> bool:
        """Whether ``kind`` emails (statements) attach each open invoice's PDF."""
        spec = self.emails.get(kind)
        return spec is not None and spec.attach_invoices

    def attaches_pdf(self, kind: str) -> bool:
        """Whether ``kind`` emails carry their PDF (never for a kind that has none)."""
        return self.emails[kind].attach_pdf

    @field_validator("cc", "bcc")
    @classmethod
    def _copy_addresses(cls, value: list[str]) -> list[str]:
        return _copy_addresses(value) or []

    @field_validator("dkim", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, dict) else value

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _copy_once(self) -> TenantConfig:
        _not_both(self.cc, self.bcc)
        return self

    @model_validator(mode="after")
    def _smtp_mode_needs_a_server(self) -> TenantConfig:
        if self.delivery is DeliveryMode.SMTP and self.smtp is None:
            raise ValueError("delivery = 'smtp' needs a [tenants.<slug>.smtp] table")
        return self
