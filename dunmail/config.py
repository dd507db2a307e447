"""The whole configuration file: composes each package's settings into one validated Config.

``load_config(path)`` reads TOML, applies ``DUNMAIL_<SECTION>__<KEY>`` environment overrides
(pydantic-settings' convention) and validates; with no file, the embedded demo defaults apply.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mailer.config import (
    DatabaseConfig,
    DeliveryConfig,
    InboundConfig,
    PDFConfig,
    RelayConfig,
    WebConfig,
    check_slug,
)
from mailer.errors import ConfigError
from mailer.tenant_config import TenantConfig

DEFAULT_PATH = Path("config.toml")
DEV_SECRET = "dev-only-secret-change-me"
# The master key signs VERP addresses and customers' links (HMAC-SHA256): anyone who guesses it
# can forge both. 32 bytes is SHA-256's own size (RFC 2104 s3: a key shorter than the hash's
# output weakens the MAC); `openssl rand -base64 32` gives 44 characters.
MIN_SECRET_BYTES = 32


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CaptureConfig(_Frozen):
    """The built-in capture SMTP server: stores what it receives in a Maildir (demo, dev)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 2525
    maildir: Path = Path("var/maildir")


class DemoConfig(_Frozen):
    """Seed a demo tenant's customers and invoices into an empty database."""

    seed: bool = False


class LogConfig(_Frozen):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"  # json: one object per line, for log shippers


class Config(BaseSettings):
    """The whole file. Unknown keys are errors, so a typo never silently does nothing."""

    model_config = SettingsConfigDict(
        env_prefix="DUNMAIL_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        case_sensitive=False,
    )

    env: Literal["dev", "production"] = "production"
    secret_key_env: str = "DUNMAIL_SECRET_KEY"  # env var with the master HMAC key (VERP, links)
    database: DatabaseConfig = DatabaseConfig()
    relay: RelayConfig = RelayConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    capture: CaptureConfig = CaptureConfig()
    inbound: InboundConfig = InboundConfig()
    web: WebConfig = WebConfig()
    pdf: PDFConfig = PDFConfig()
    demo: DemoConfig = DemoConfig()
    log: LogConfig = LogConfig()
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file: a deployment changes a port without editing it.
        return env_settings, init_settings

    @model_validator(mode="after")
    def _check(self) -> Config:
        for slug in self.tenants:
            check_slug(slug)
        if self.env != "dev":
            value = os.environ.get(self.secret_key_env)
            if not value:
                raise ValueError(
                    f"${self.secret_key_env} must hold the secret key outside env = 'dev'"
                )
            if value != DEV_SECRET:  # that one has its own error, from secret_key()
                self._check_secret_length(value)
        return self

    def _check_secret_length(self, value: str) -> None:
        size = len(value.encode("utf-8"))
        if size < MIN_SECRET_BYTES:
            raise ValueError(
                f"${self.secret_key_env} is {size} byte(s); outside env = 'dev' the secret key "
                f"needs at least {MIN_SECRET_BYTES} (e.g. `openssl rand -base64 32`)"
            )

    def secret_key(self) -> bytes:
        """The master HMAC key; a fixed development key only when ``env = "dev"``."""
        value = os.environ.get(self.secret_key_env)
        if value:
            if value == DEV_SECRET and self.env != "dev":
                raise ConfigError("the development secret key cannot be used outside env = 'dev'")
            if self.env != "dev":
                try:
                    self._check_secret_length(value)
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
            return value.encode()
        if self.env == "dev":
            return DEV_SECRET.encode()
        raise ConfigError(f"${self.secret_key_env} is not set")


def embedded_defaults() -> dict[str, Any]:
    """The demo configuration shipped inside the package."""
    text = resources.files("dunmail").joinpath("defaults.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def load_config(path: Path | None = None) -> Config:
    """Load ``path`` (or ./config.toml, or the embedded defaults) into a validated Config."""
    data: dict[str, Any]
    source: str
    if path is None and DEFAULT_PATH.exists():
        path = DEFAULT_PATH
    if path is None:
        data, source = embedded_defaults(), "embedded defaults"
    else:
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: no such configuration file") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
        source = str(path)
    try:
        return Config(**data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from exc


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)
