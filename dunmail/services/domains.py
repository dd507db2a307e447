"""Onboarding a sending domain: make its DKIM keys, say what to publish, check what DNS says.

``dunmail domain add`` and ``dunmail domain check`` each make one call here. This is the edge:
key files (through mailer/outbound/dkim.py, which owns the key format) and DNS (through
dunmail/services/dns_lookup.py) happen here; what the records are and whether an answer is
right is the pure mailer/outbound/dns_records.py. Needs only the config, not the database:
a domain is set up before the engine's first run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dunmail.config import Config
from dunmail.services.dns_lookup import dns_lookup
from mailer.clock import Clock
from mailer.config import DeliveryMode, DKIMAlgorithm, DKIMConfig, check_slug
from mailer.errors import ConfigError
from mailer.outbound import identity
from mailer.outbound.dkim import dns_record, generate_key
from mailer.outbound.dns_records import (
    DKIMKey,
    DomainPlan,
    Finding,
    Lookup,
    Record,
    Status,
    check,
    check_alignment,
    passed,
    sending_mechanism,
)
from mailer.tenant_config import TenantConfig

DEFAULT_KEYS_DIR = Path("keys")
# Key files: <dir>/<domain>.<selector>.pem (RSA, PKCS#1 PEM) or .key (ed25519, the base64 seed
# dkimpy reads); one selector per algorithm, as a DKIM key record holds one key (RFC 6376 s3.6.1).
_SUFFIX = {DKIMAlgorithm.RSA_SHA256: ".pem", DKIMAlgorithm.ED25519_SHA256: ".key"}
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_ALGORITHM_NAME = {DKIMAlgorithm.RSA_SHA256: "rsa", DKIMAlgorithm.ED25519_SHA256: "ed25519"}


@dataclass(frozen=True)
class Target:
    """Whose mail the domain carries: the relay's or one tenant's (maybe not configured yet)."""

    section: str  # "relay" or "tenants.<slug>", where its [[...dkim]] tables go
    from_domain: str
    bounce_domain: str
    sending_hosts: tuple[str, ...]  # servers that hand the mail to the internet, from config


@dataclass(frozen=True)
class KeyFile:
    path: Path
    selector: str
    algorithm: DKIMAlgorithm
    created: bool  # False: an existing key was kept


@dataclass(frozen=True)
class DomainSetup:
    """What ``domain add`` made and what the tenant now publishes and configures."""

    plan: DomainPlan
    keys: tuple[KeyFile, ...]
    snippet: str  # TOML for config.toml

    @property
    def warnings(self) -> list[str]:
        """What will keep the mail from aligning for DMARC, said before any DNS is touched."""
        return [f.line for f in check_alignment(self.plan) if f.status is not Status.PASS]

    @property
    def records(self) -> list[Record]:
        return self.plan.records()

    def as_dict(self) -> dict[str, object]:
        return {
            "domain": self.plan.domain,
            "from_domain": self.plan.from_domain,
            "bounce_domain": self.plan.bounce_domain,
            "keys": [
                {
                    "file": str(k.path),
                    "selector": k.selector,
                    "algorithm": k.algorithm.value,
                    "created": k.created,
                }
                for k in self.keys
            ],
            "records": [r.as_dict() for r in self.records],
            "config": self.snippet,
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class DomainReport:
    """What ``domain check`` found: one finding per record, then alignment."""

    domain: str
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return passed(self.findings)

    def as_dict(self) -> dict[str, object]:
        return {
            "domain": self.domain,
            "ok": self.ok,
            "findings": [
                {"label": f.label, "status": f.status.value, "detail": f.detail}
                for f in self.findings
            ],
        }


class Domains:
    """Sets up and checks sending domains against one configuration."""

    def __init__(self, config: Config, *, clock: Clock) -> None:
        self.config = config
        self.clock = clock

    def add(
        self,
        domain: str,
        *,
        selector: str | None = None,
        keys_dir: Path = DEFAULT_KEYS_DIR,
        force: bool = False,
        tenant: str | None = None,
        spf: Sequence[str] = (),
        rua: str | None = None,
    ) -> DomainSetup:
        """Make (or keep) an RSA-2048 and an Ed25519 key for ``domain`` under ``keys_dir`` and
        return the records to publish and the config that signs with them."""
        domain = _domain(domain)
        target = self._target(domain, tenant)
        base = selector or f"dunmail{self.clock.now():%Y%m}"
        made = tuple(
            _make_key(domain, _paired(base, alg), alg, keys_dir, force=force)
            for alg in (DKIMAlgorithm.RSA_SHA256, DKIMAlgorithm.ED25519_SHA256)
        )
        configs = [_key_config(domain, key.path, key.selector, key.algorithm) for key in made]
        plan = self._plan(domain, target, configs, spf=spf, rua=rua)
        return DomainSetup(plan=plan, keys=made, snippet=_snippet(target.section, configs))

    def check(
        self,
        domain: str,
        *,
        selector: str | None = None,
        keys_dir: Path = DEFAULT_KEYS_DIR,
        tenant: str | None = None,
        spf: Sequence[str] = (),
        nameserver: str | None = None,
        timeout: float = 3.0,
        lookup: Lookup | None = None,
    ) -> DomainReport:
        """Resolve each record ``domain`` needs and compare it with the local keys and config."""
        domain = _domain(domain)
        target = self._target(domain, tenant)
        keys = self._local_keys(domain, selector, keys_dir)
        plan = self._plan(domain, target, keys, spf=spf, rua=None)
        resolve = lookup or dns_lookup(nameserver, timeout=timeout)
        return DomainReport(domain=domain, findings=tuple(check(plan, resolve)))

    # --- what the config says ------------------------------------------------------------------

    def _target(self, domain: str, slug: str | None) -> Target:
        relay = self.config.relay
        relay_hosts = (relay.host, *([relay.local_hostname] if relay.local_hostname else []))
        tenants = self.config.tenants
        if slug is not None:
            check_slug(slug)
        if slug is None and domain == relay.domain.lower():
            return Target("relay", domain, domain, relay_hosts)
        if slug is None:
            mine = [s for s, t in tenants.items() if domain in _tenant_domains(t)]
            if len(mine) > 1:
                raise ConfigError(f"tenants {', '.join(mine)} all send as {domain}: pass --tenant")
            slug = mine[0] if mine else None
        found = tenants.get(slug) if slug else None
        section = f"tenants.{slug or '<slug>'}"
        if found is None:
            return Target(section, domain, relay.domain.lower(), relay_hosts)
        hosts = relay_hosts
        if found.delivery is DeliveryMode.SMTP and found.smtp is not None:
            hosts = (
                found.smtp.host,
                *([found.smtp.local_hostname] if found.smtp.local_hostname else []),
            )
        return Target(
            section,
            identity.from_domain(found, relay),
            identity.bounce_domain(found, relay).lower(),
            hosts,
        )

    def _plan(
        self,
        domain: str,
        target: Target,
        configs: Sequence[DKIMConfig],
        *,
        spf: Sequence[str],
        rua: str | None,
    ) -> DomainPlan:
        mechanisms = [sending_mechanism(h) for h in target.sending_hosts]
        wanted = [m for m in mechanisms if m] + [_spf_term(s) for s in spf]
        keys = tuple(
            DKIMKey(c.selector, c.algorithm, dns_record(c), str(c.key_file)) for c in configs
        )
        return DomainPlan(
            domain=domain,
            from_domain=target.from_domain,
            bounce_domain=target.bounce_domain,
            keys=keys,
            spf_mechanisms=tuple(dict.fromkeys(wanted)),
            mx_host=self.config.inbound.hostname,
            rua=rua or f"mailto:dmarc@{target.from_domain}",
        )

    def _local_keys(self, domain: str, selector: str | None, keys_dir: Path) -> list[DKIMConfig]:
        """The keys config signs ``domain`` with; without any, those ``domain add`` left in
        ``keys_dir`` (a rotation's new selector is checked before config names it).
        ``selector`` S keeps S itself and the S-rsa / S-ed25519 pair."""

        def chosen(keys: Sequence[DKIMConfig]) -> list[DKIMConfig]:
            wanted = {
                (k.selector, k.algorithm): k
                for k in keys
                if k.domain.lower() == domain
                and (selector is None or k.selector in (selector, _paired(selector, k.algorithm)))
            }
            return list(wanted.values())

        configured = [
            *self.config.relay.dkim,
            *(k for t in self.config.tenants.values() for k in t.dkim),
        ]
        return chosen(configured) or chosen(
            [
                _key_config(domain, path, path.name[len(domain) + 1 : -len(suffix)], alg)
                for alg, suffix in _SUFFIX.items()
                for path in sorted(keys_dir.glob(f"{domain}.*{suffix}"))
            ]
        )


def _paired(selector: str, algorithm: DKIMAlgorithm) -> str:
    """The selector ``domain add --selector S`` gives a key of ``algorithm``: S-rsa, S-ed25519."""
    return f"{selector}-{_ALGORITHM_NAME[algorithm]}"


def _tenant_domains(tenant: TenantConfig) -> set[str]:
    return {tenant.email.rpartition("@")[2].lower(), *(k.domain.lower() for k in tenant.dkim)}


def _domain(value: str) -> str:
    name = value.strip().rstrip(".").lower()
    labels = name.split(".")
    if len(labels) < 2 or not all(labels) or any(len(label) > 63 for label in labels):
        raise ConfigError(f"{value!r} is not a domain name (e.g. invoices.acme.com)")
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise ConfigError(f"{value!r} is not a valid domain name") from None
    if not all(_LABEL.fullmatch(label) for label in ascii_name.split(".")):
        raise ConfigError(f"{value!r} is not a valid domain name (letters, digits, hyphens)")
    return ascii_name


def _spf_term(value: str) -> str:
    term = value.strip().lower()
    if not term or " " in term or term.endswith("all"):
        raise ConfigError(
            f"--spf {value!r}: one SPF mechanism, e.g. ip4:203.0.113.7 or a:out.example.com"
        )
    return term


def _key_config(domain: str, path: Path, selector: str, alg: DKIMAlgorithm) -> DKIMConfig:
    try:
        return DKIMConfig(domain=domain, selector=selector, key_file=path, algorithm=alg)
    except ValueError as exc:
        raise ConfigError(f"selector {selector!r}: not a DNS label") from exc


def _make_key(
    domain: str, selector: str, alg: DKIMAlgorithm, keys_dir: Path, *, force: bool
) -> KeyFile:
    """The key at its conventional path: kept if there, else made (mode 0600). ``force``
    makes a new one beside it and renames it into place, so the path never holds half a key."""
    _key_config(domain, keys_dir / "x", selector, alg)  # the selector is checked first
    path = keys_dir / f"{domain}.{selector}{_SUFFIX[alg]}"
    if path.exists() and not force:
        return KeyFile(path, selector, alg, created=False)
    if not path.exists():
        generate_key(path, alg)
        return KeyFile(path, selector, alg, created=True)
    fresh = path.with_name(f".{path.name}.new")
    fresh.unlink(missing_ok=True)  # left by an interrupted --force
    generate_key(fresh, alg)
    os.replace(fresh, path)
    return KeyFile(path, selector, alg, created=True)


def _snippet(section: str, configs: Sequence[DKIMConfig]) -> str:
    """The ``[[<section>.dkim]]`` tables; json.dumps quotes a string as TOML's basic strings do."""
    blocks = []
    for c in configs:
        blocks.append(
            f"[[{section}.dkim]]\n"
            f"domain = {json.dumps(c.domain)}\n"
            f"selector = {json.dumps(c.selector)}\n"
            f"key_file = {json.dumps(str(c.key_file))}\n"
            f"algorithm = {json.dumps(c.algorithm.value)}\n"
        )
    return "\n".join(blocks)
