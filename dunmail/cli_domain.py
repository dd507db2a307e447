"""``dunmail domain add`` / ``check``: a sending domain's keys, the DNS records to publish,
and whether DNS now says what it should. Thin: one call each on dunmail/services/domains.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from dunmail.cli_common import (
    ConfigOpt,
    JsonOpt,
    app,
    cli_errors,
    console,
    one_line,
    plain,
    print_json,
)
from dunmail.config import load_config
from dunmail.services.domains import DEFAULT_KEYS_DIR, Domains, DomainSetup
from mailer.clock import SystemClock
from mailer.outbound.dns_records import Status

domain_app = typer.Typer(help="Set up a sending domain: DKIM keys, DNS records, and a check.")
app.add_typer(domain_app, name="domain")

DomainArg = Annotated[str, typer.Argument(help="the domain mail is signed for (DKIM d=)")]
SelectorOpt = Annotated[
    str | None,
    typer.Option(
        "--selector", help="selector base S: keys S-rsa and S-ed25519 (default dunmailYYYYMM)"
    ),
]
KeysDirOpt = Annotated[
    Path, typer.Option("--keys-dir", help="where key files live (default ./keys)")
]
DomainTenantOpt = Annotated[
    str | None,
    typer.Option("--tenant", help="the tenant whose mail it carries (default: found in config)"),
]
SpfOpt = Annotated[
    list[str] | None,
    typer.Option("--spf", help="an SPF mechanism naming a sending host, e.g. ip4:203.0.113.7"),
]


@domain_app.command("add")
def domain_add(
    domain: DomainArg,
    selector: SelectorOpt = None,
    keys_dir: KeysDirOpt = DEFAULT_KEYS_DIR,
    force: Annotated[
        bool, typer.Option("--force", help="replace existing keys (breaks mail until DNS follows)")
    ] = False,
    tenant: DomainTenantOpt = None,
    spf: SpfOpt = None,
    rua: Annotated[
        str | None, typer.Option("--rua", help="DMARC report address (default mailto:dmarc@...)")
    ] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make an RSA-2048 and an Ed25519 DKIM key (mode 0600; an existing key is kept unless
    --force) and print the DNS records to publish and the config that signs with them."""
    with cli_errors():
        setup = Domains(load_config(config), clock=SystemClock()).add(
            domain,
            selector=selector,
            keys_dir=keys_dir,
            force=force,
            tenant=tenant,
            spf=spf or (),
            rua=rua,
        )
    if as_json:
        print_json(setup.as_dict())
        return
    _print_setup(setup)


def _print_setup(setup: DomainSetup) -> None:
    for key in setup.keys:
        made = "created" if key.created else "kept existing"
        plain(f"{made} {key.algorithm.value} key {key.path} (selector {key.selector})")
    console.print("\n[bold]Publish these DNS records[/bold] (zone-file syntax):")
    for record in setup.records:
        plain(f"; {record.label}")
        plain(record.zone_line())
    console.print("\n[bold]Add to config.toml[/bold]:")
    plain(setup.snippet)
    for warning in setup.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    plain(f"Then: dunmail domain check {setup.plan.domain}")


@domain_app.command("check")
def domain_check(
    domain: DomainArg,
    selector: SelectorOpt = None,
    keys_dir: KeysDirOpt = DEFAULT_KEYS_DIR,
    tenant: DomainTenantOpt = None,
    spf: SpfOpt = None,
    nameserver: Annotated[
        str | None,
        typer.Option("--nameserver", help="ask this server (IP or IP:PORT), not the system's"),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="seconds per DNS question")
    ] = 3.0,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resolve DKIM, SPF, DMARC and the bounce MX, compare them with the local keys and config,
    and check DMARC alignment. Exit 0 when every record passes (warnings pass), 1 otherwise."""
    with cli_errors():
        report = Domains(load_config(config), clock=SystemClock()).check(
            domain,
            selector=selector,
            keys_dir=keys_dir,
            tenant=tenant,
            spf=spf or (),
            nameserver=nameserver,
            timeout=timeout,
        )
    if as_json:
        print_json(report.as_dict())
    else:
        colour = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "red"}
        for finding in report.findings:
            tag = f"[{colour[finding.status]}]{finding.status.value.upper()}[/]"
            console.print(f"{tag} {escape(one_line(finding.line))}", highlight=False)
    raise typer.Exit(0 if report.ok else 1)
