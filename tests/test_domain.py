"""``dunmail domain add`` / ``check`` against a real authoritative DNS server on loopback.

The zone served is what ``domain add`` printed; ``check`` passes on it, and each broken record
gives its own failure line with the fix. The keys are private files the engine's signer loads,
and mail signed with them verifies in dkimpy against the TXT records served over DNS.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import dkim
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.config import DKIMConfig
from mailer.outbound.dkim import DKIMSigner
from mailer.outbound.dns_records import MAX_TXT_STRING, split_txt
from tests.dns_server import Zone, dkim_dns, serve
from tests.test_cli import dunmail

CONFIG = """
env = "dev"
[database]
url = "sqlite:///db.sqlite"
[relay]
host = "127.0.0.1"
port = 2525
domain = "relay.example"
local_hostname = "out.relay.example"
[inbound]
hostname = "mx.relay.example"
[tenants.acme]
name = "Acme Supplies"
email = "{email}"
delivery = "smtp"
bounce_domain = "bounces.acme.example"
[tenants.acme.smtp]
host = "smtp.acme.example"
tls = "starttls"
"""
RSA_NAME = "s1-rsa._domainkey.acme.example"
ED_NAME = "s1-ed25519._domainkey.acme.example"


def write_config(tmp_path: Path, email: str = "ar@acme.example") -> Path:
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(email=email))
    return path


def add(config: Path, *args: str) -> dict[str, Any]:
    result = dunmail(config, "domain", "add", "acme.example", "--selector", "s1", "--json", *args)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def added(config: Path) -> dict[str, Any]:
    return add(config)


@pytest.fixture
def zone(added: dict[str, Any]) -> Zone:
    served = Zone()
    served.publish(added["records"])
    return served


@pytest.fixture
def nameserver(zone: Zone) -> Iterator[str]:
    with serve(zone) as address:
        yield address


def check(config: Path, nameserver: str, *args: str) -> tuple[int, list[str]]:
    result = dunmail(config, "domain", "check", "acme.example", "--nameserver", nameserver, *args)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout.splitlines()


def test_add_prints_every_record_split_for_dns_and_the_config(added: dict[str, Any]) -> None:
    records = {(r["label"], r["name"], r["type"]): r for r in added["records"]}
    assert set(records) == {
        ("DKIM rsa", RSA_NAME, "TXT"),
        ("DKIM ed25519", ED_NAME, "TXT"),
        ("SPF", "bounces.acme.example", "TXT"),
        ("DMARC", "_dmarc.acme.example", "TXT"),
        ("MX", "bounces.acme.example", "MX"),
    }
    rsa = records[("DKIM rsa", RSA_NAME, "TXT")]
    assert rsa["value"].startswith("v=DKIM1; k=rsa; p=MII")
    assert len(rsa["strings"]) == 2 and "".join(rsa["strings"]) == rsa["value"]
    assert all(len(s.encode()) <= MAX_TXT_STRING for r in added["records"] for s in r["strings"])
    assert records[("DKIM ed25519", ED_NAME, "TXT")]["value"].startswith("v=DKIM1; k=ed25519; p=")
    # The tenant's own server sends (own-SMTP mode): SPF names it, on the return-path domain.
    assert records[("SPF", "bounces.acme.example", "TXT")]["value"] == (
        "v=spf1 a:smtp.acme.example -all"
    )
    dmarc = records[("DMARC", "_dmarc.acme.example", "TXT")]["value"]
    assert dmarc.startswith("v=DMARC1; p=quarantine;") and "rua=mailto:dmarc@acme.example" in dmarc
    assert records[("MX", "bounces.acme.example", "MX")]["value"] == "10 mx.relay.example."
    assert "[[tenants.acme.dkim]]" in added["config"] and added["warnings"] == []
    assert 'key_file = "keys/acme.example.s1-rsa.pem"' in added["config"]


def test_add_prints_zone_lines_and_the_snippet(config: Path) -> None:
    result = dunmail(config, "domain", "add", "acme.example", "--selector", "s1")
    assert result.returncode == 0, result.stderr
    assert f'{RSA_NAME}. 3600 IN TXT "v=DKIM1; k=rsa; p=' in result.stdout
    assert "_dmarc.acme.example. 3600 IN TXT" in result.stdout
    assert 'algorithm = "ed25519-sha256"' in result.stdout


def test_keys_are_private_load_in_the_signer_and_verify_over_dns(
    tmp_path: Path, added: dict[str, Any], nameserver: str
) -> None:
    configs = []
    for key in added["keys"]:
        path = tmp_path / key["file"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        configs.append(
            DKIMConfig(
                domain="acme.example",
                selector=key["selector"],
                key_file=path,
                algorithm=key["algorithm"],
            )
        )
    signer = DKIMSigner(configs)
    msg = EmailMessage()
    msg["From"] = "Acme Supplies <ar@acme.example>"
    msg["To"] = "ap@customer.example"
    msg["Subject"] = "Invoice INV-1"
    msg["Date"] = "Fri, 04 Dec 2026 10:00:00 +0000"
    msg["Message-ID"] = "<1@acme.example>"
    msg.set_content("Your invoice.\n")
    signed = signer.sign(msg.as_bytes(policy=SMTP))
    verifier = dkim.DKIM(signed)
    dns = dkim_dns(nameserver)
    assert [verifier.verify(idx=i, dnsfunc=dns) for i in range(2)] == [True, True]
    # ... and not against another key published under the same name.
    other = add(write_config(tmp_path / "other"))
    swapped = Zone()
    swapped.publish(other["records"])
    with serve(swapped) as elsewhere:
        assert dkim.DKIM(signed).verify(idx=0, dnsfunc=dkim_dns(elsewhere)) is False


def test_check_passes_on_what_add_printed(config: Path, nameserver: str) -> None:
    code, lines = check(config, nameserver)
    assert code == 0, lines
    assert lines == [
        f"PASS DKIM rsa: {RSA_NAME} matches keys/acme.example.s1-rsa.pem",
        f"PASS DKIM ed25519: {ED_NAME} matches keys/acme.example.s1-ed25519.key",
        "PASS SPF: bounces.acme.example names a:smtp.acme.example",
        "PASS DMARC: _dmarc.acme.example has p=quarantine",
        "PASS MX: bounces.acme.example MX mx.relay.example takes the bounces",
        "PASS DMARC alignment (DKIM): d=acme.example aligns with From @acme.example",
        "PASS DMARC alignment (SPF): return path @bounces.acme.example aligns with From "
        "@acme.example",
    ]
    as_json = dunmail(
        config, "domain", "check", "acme.example", "--nameserver", nameserver, "--json"
    )
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["ok"] is True


def _drop(zone: Zone, name: str, rtype: str) -> None:
    del zone.records[(name, rtype)]


BREAKS: dict[str, tuple[Callable[[Zone], object], str]] = {
    "missing DKIM": (
        lambda z: _drop(z, RSA_NAME, "TXT"),
        f"FAIL DKIM rsa: {RSA_NAME}: NXDOMAIN (no such name): publish {RSA_NAME}. 3600 IN TXT "
        '"v=DKIM1; k=rsa; p=',
    ),
    "wrong p=": (
        lambda z: z.records.update({(RSA_NAME, "TXT"): [["v=DKIM1; k=rsa; p=MIIBIjANBgkq"]]}),
        f"FAIL DKIM rsa: p= differs from keys/acme.example.s1-rsa.pem at {RSA_NAME}: publish",
    ),
    "revoked key": (
        lambda z: z.records.update({(ED_NAME, "TXT"): [["v=DKIM1; k=ed25519; p="]]}),
        "FAIL DKIM ed25519: p= is empty (key revoked) from keys/acme.example.s1-ed25519.key",
    ),
    "SPF missing the sender": (
        lambda z: z.records.update(
            {("bounces.acme.example", "TXT"): [["v=spf1 ip4:198.51.100.7 -all"]]}
        ),
        "FAIL SPF: bounces.acme.example does not name a:smtp.acme.example (a sending host in "
        'config): publish bounces.acme.example. 3600 IN TXT "v=spf1 a:smtp.acme.example -all"',
    ),
    "SPF +all": (
        lambda z: z.records.update({("bounces.acme.example", "TXT"): [["v=spf1 +all"]]}),
        "FAIL SPF: 'v=spf1 +all' at bounces.acme.example lets any host send as it: end with -all",
    ),
    "no DMARC": (
        lambda z: _drop(z, "_dmarc.acme.example", "TXT"),
        "FAIL DMARC: _dmarc.acme.example: NXDOMAIN (no such name): publish _dmarc.acme.example. "
        '3600 IN TXT "v=DMARC1; p=quarantine;',
    ),
    "MX missing": (
        lambda z: _drop(z, "bounces.acme.example", "MX"),
        "FAIL MX: no MX at bounces.acme.example: publish bounces.acme.example. 3600 IN MX 10 "
        "mx.relay.example.",
    ),
    "MX elsewhere": (
        lambda z: z.records.update({("bounces.acme.example", "MX"): ["10 mail.acme.example."]}),
        "FAIL MX: bounces.acme.example MX is mail.acme.example, not mx.relay.example ([inbound])",
    ),
    "SERVFAIL": (
        lambda z: z.servfail.add("_dmarc.acme.example"),
        "FAIL DMARC: _dmarc.acme.example: SERVFAIL (no name server answered): publish",
    ),
}


@pytest.mark.parametrize("broken", sorted(BREAKS))
def test_check_names_each_broken_record_and_its_fix(
    config: Path, zone: Zone, nameserver: str, broken: str
) -> None:
    breaking, expected = BREAKS[broken]
    breaking(zone)
    code, lines = check(config, nameserver)
    assert code == 1
    failed = [line for line in lines if line.startswith("FAIL")]
    assert len(failed) == 1 and failed[0].startswith(expected), lines


def test_check_says_when_from_does_not_align(
    tmp_path: Path, added: dict[str, Any], zone: Zone
) -> None:
    # The tenant's From moved to another domain; its keys still sign for acme.example.
    config = write_config(tmp_path, email="ar@billing-acme.example")
    with serve(zone) as nameserver:
        code, lines = check(config, nameserver, "--tenant", "acme")
    assert code == 1
    assert (
        "FAIL DMARC alignment (DKIM): d=acme.example does not align with From "
        "@billing-acme.example: sign with a key for billing-acme.example (dunmail domain add "
        "billing-acme.example)"
    ) in lines
    assert any(line.startswith("WARN DMARC alignment (SPF): return path") for line in lines)


def test_an_unreachable_name_server_is_a_clear_line_per_record(config: Path, added: Any) -> None:
    code, lines = check(config, "127.0.0.1:9", "--timeout", "0.2")
    assert code == 1
    assert f"FAIL DKIM rsa: {RSA_NAME}: no answer within 0.2 s: publish" in lines[0]


def test_add_keeps_existing_keys_unless_forced(tmp_path: Path, config: Path, added: Any) -> None:
    rsa = tmp_path / "keys" / "acme.example.s1-rsa.pem"
    before = rsa.read_bytes()
    again = add(config)
    assert rsa.read_bytes() == before and [k["created"] for k in again["keys"]] == [False] * 2
    assert again["records"] == added["records"]
    forced = add(config, "--force")
    assert rsa.read_bytes() != before and [k["created"] for k in forced["keys"]] == [True] * 2
    assert stat.S_IMODE(rsa.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path / "keys")) == [
        "acme.example.s1-ed25519.key",
        "acme.example.s1-rsa.pem",
    ]


def test_add_warns_when_the_keys_cannot_align_with_from(tmp_path: Path) -> None:
    # A relay-mode tenant's mail says From: noreply-invoice@relay.example; its own key adds
    # reputation but no DMARC alignment, and add says so before anything is published.
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace('delivery = "smtp"', 'delivery = "relay"'))
    result = dunmail(config, "domain", "add", "acme.example", "--selector", "s1")
    assert result.returncode == 0, result.stderr
    assert (
        "warning: DMARC alignment (DKIM): d=acme.example does not align with From @relay.example"
    ) in result.stdout


def test_rotation_checks_the_new_selector_before_config_names_it(
    config: Path, added: dict[str, Any], zone: Zone
) -> None:
    config.write_text(config.read_text() + "\n" + added["config"])  # signing with s1
    rotated = add(config, "--selector", "s2")
    assert [k["selector"] for k in rotated["keys"]] == ["s2-rsa", "s2-ed25519"]
    with serve(zone) as nameserver:  # only s1 is published yet
        code, lines = check(config, nameserver, "--selector", "s2")
        assert code == 1 and lines[0].startswith("FAIL DKIM rsa: s2-rsa._domainkey.acme.example")
        zone.publish(r for r in rotated["records"] if r["label"].startswith("DKIM"))
        code, lines = check(config, nameserver, "--selector", "s2")
        assert code == 0, lines
        assert lines[:2] == [
            "PASS DKIM rsa: s2-rsa._domainkey.acme.example matches keys/acme.example.s2-rsa.pem",
            "PASS DKIM ed25519: s2-ed25519._domainkey.acme.example matches "
            "keys/acme.example.s2-ed25519.key",
        ]
        # Without --selector, config's keys (s1) are the ones checked.
        code, lines = check(config, nameserver)
        assert code == 0 and "s1-rsa._domainkey" in lines[0]


def test_the_relays_own_domain_gets_relay_tables(config: Path) -> None:
    result = dunmail(config, "domain", "add", "relay.example", "--selector", "r1", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["config"].startswith("[[relay.dkim]]\n")
    spf = next(r for r in data["records"] if r["label"] == "SPF")
    assert (spf["name"], spf["value"]) == ("relay.example", "v=spf1 a:out.relay.example -all")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "not a domain"], "'not a domain' is not a domain name"),
        (["add", "acme.example", "--tenant", "Acme Co"], "tenant slug 'Acme Co' must be"),
        (["add", "acme.example", "--selector", "bad sel"], "selector 'bad sel-rsa': not a DNS"),
        (["add", "acme.example", "--spf", "+all"], "--spf '+all': one SPF mechanism"),
        (["check", "acme.example", "--nameserver", "dns.example"], "--nameserver 'dns.example'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(config: Path, args: list[str], message: str) -> None:
    result = dunmail(config, "domain", *args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=2000))
def test_txt_values_split_into_255_byte_strings_that_join_back(value: str) -> None:
    strings = split_txt(value)
    assert "".join(strings) == value
    assert all(len(s) <= MAX_TXT_STRING for s in strings)
    assert all(len(s) == MAX_TXT_STRING for s in strings[:-1])
