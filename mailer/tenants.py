"""The configured tenants: slug <-> ledger id, and each tenant's ``[tenants.<slug>]`` table.

One directory every part of the engine asks (the CLI names a tenant by slug, the web app and
the ledger by id, the scheduler reads a tenant's dunning settings), built once when the
services are wired; the ids are the ledger's ``tenant`` rows the config was mirrored into.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from mailer.errors import ConfigError, NotFoundError
from mailer.tenant_config import TenantConfig


@dataclass(frozen=True)
class Tenants:
    """The tenants the engine serves, by slug and by id."""

    configs: Mapping[str, TenantConfig]
    ids: Mapping[str, int]

    def id(self, slug: str | None) -> int:
        """The id of tenant ``slug``; with one tenant configured the slug may be omitted."""
        if slug is None:
            if len(self.ids) == 1:
                return next(iter(self.ids.values()))
            raise ConfigError(
                f"several tenants are configured ({', '.join(sorted(self.ids))}): "
                "say which with --tenant"
            )
        try:
            return self.ids[slug]
        except KeyError:
            raise ConfigError(f"no tenant {slug!r} in the configuration") from None

    def slug(self, tenant_id: int) -> str:
        """The configured slug of tenant ``tenant_id`` (the web app signs users in by id)."""
        for slug, found in self.ids.items():
            if found == tenant_id:
                return slug
        raise NotFoundError(f"no tenant {tenant_id}")

    def config(self, tenant_id: int) -> tuple[str, TenantConfig]:
        """The slug and ``[tenants.<slug>]`` table of the tenant with ``tenant_id``."""
        for slug, known in self.ids.items():
            if known == tenant_id:
                return slug, self.configs[slug]
        raise NotFoundError(f"no configured tenant has id {tenant_id}")

    def __iter__(self) -> Iterator[int]:
        """The tenants' ids, for the passes that visit every tenant."""
        return iter(self.ids.values())
