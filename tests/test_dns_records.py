"""The pure record checks of mailer/outbound/dns_records.py, with DNS answers handed in.

tests/test_domain.py asks a real name server; here the answers a real server rarely gives on
cue: SPF through a provider's include:, DMARC inherited from the organisational domain under
the Public Suffix List, several records where one is allowed, a policy that only monitors.
"""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given
from hypothesis import strategies as st

from mailer.config import DKIMAlgorithm
from mailer.outbound.dns_records import (
    Answer,
    DKIMKey,
    DomainPlan,
    Lookup,
    Status,
    check,
    sending_mechanism,
)

RSA_TXT = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAzz"


def plan(**changes: object) -> DomainPlan:
    from_domain = "mail.acme.co.uk"
    fields: dict[str, object] = {
        "domain": from_domain,
        "from_domain": from_domain,
        "bounce_domain": f"bounces.{from_domain}",
        "keys": (DKIMKey("s1", DKIMAlgorithm.RSA_SHA256, RSA_TXT, "keys/s1.pem"),),
        "spf_mechanisms": ("ip4:203.0.113.7",),
        "mx_host": "mx.acme.co.uk",
        "rua": "mailto:dmarc@acme.co.uk",
        **changes,
    }
    return DomainPlan(**fields)  # type: ignore[arg-type]


def dns(records: Mapping[tuple[str, str], list[str]]) -> Lookup:
    """Answers from ``records``; a name with no record of any type is NXDOMAIN."""

    def lookup(name: str, rtype: str) -> Answer:
        if not any(n == name for n, _ in records):
            return Answer(problem="NXDOMAIN (no such name)", nxdomain=True)
        return Answer(values=tuple(records.get((name, rtype), [])))

    return lookup


GOOD: dict[tuple[str, str], list[str]] = {
    ("s1._domainkey.mail.acme.co.uk", "TXT"): [RSA_TXT],
    ("bounces.mail.acme.co.uk", "TXT"): ["v=spf1 include:_spf.provider.example -all"],
    ("bounces.mail.acme.co.uk", "MX"): ["10 mx.acme.co.uk."],
    ("_spf.provider.example", "TXT"): ["v=spf1 ip4:198.51.100.0/24 ip4:203.0.113.7 ~all"],
    ("_dmarc.acme.co.uk", "TXT"): ["v=DMARC1; p=reject; rua=mailto:d@acme.co.uk"],
}


def lines(records: Mapping[tuple[str, str], list[str]], **changes: object) -> dict[str, str]:
    return {f.label: f"{f.status.value} {f.detail}" for f in check(plan(**changes), dns(records))}


def test_spf_through_an_include_and_dmarc_from_the_organisational_domain() -> None:
    found = lines(GOOD)
    assert found["SPF"] == "pass bounces.mail.acme.co.uk names ip4:203.0.113.7"
    # mail.acme.co.uk publishes no policy; acme.co.uk's applies (co.uk is a public suffix).
    assert found["DMARC"] == "pass _dmarc.acme.co.uk (inherited) has p=reject"
    assert all(v.startswith("pass") for v in found.values()), found


def test_an_include_that_does_not_name_the_sender_fails() -> None:
    records = {**GOOD, ("_spf.provider.example", "TXT"): ["v=spf1 ip4:198.51.100.0/24 -all"]}
    assert lines(records)["SPF"].startswith(
        "fail bounces.mail.acme.co.uk does not name ip4:203.0.113.7 (a sending host in config)"
    )


def test_includes_that_loop_stop_at_spfs_lookup_limit() -> None:
    records = {**GOOD, ("_spf.provider.example", "TXT"): ["v=spf1 include:_spf.provider.example"]}
    assert lines(records)["SPF"].startswith("fail bounces.mail.acme.co.uk does not name")


def test_two_spf_records_or_two_keys_are_errors() -> None:
    spf = ["v=spf1 ip4:203.0.113.7 -all", "v=spf1 a -all"]
    assert lines({**GOOD, ("bounces.mail.acme.co.uk", "TXT"): spf})["SPF"].startswith(
        "fail 2 v=spf1 records at bounces.mail.acme.co.uk (RFC 7208 s3.2: a permerror)"
    )
    keys = [RSA_TXT, "v=DKIM1; k=rsa; p=MIIB"]
    assert lines({**GOOD, ("s1._domainkey.mail.acme.co.uk", "TXT"): keys})["DKIM rsa"].startswith(
        "fail 2 key records at s1._domainkey.mail.acme.co.uk"
    )


def test_a_key_of_the_wrong_type_and_a_monitoring_policy() -> None:
    ed = ["v=DKIM1; k=ed25519; p=nu2Xf1J1NOpoUcgaThYayV+xFLA+CXZ6sNP5kWRQPoM="]
    found = lines(
        {
            **GOOD,
            ("s1._domainkey.mail.acme.co.uk", "TXT"): ed,
            ("_dmarc.mail.acme.co.uk", "TXT"): ["v=DMARC1; p=none"],
        }
    )
    assert found["DKIM rsa"].startswith(
        "fail k='ed25519' at s1._domainkey.mail.acme.co.uk, but keys/s1.pem is rsa"
    )
    # The From domain's own record wins over the organisational domain's p=reject.
    assert found["DMARC"].startswith("warn _dmarc.mail.acme.co.uk has p=none")
    assert all(f.status is not Status.FAIL for f in check(plan(), dns(GOOD)))


def test_no_dmarc_anywhere_says_where_to_publish() -> None:
    records = {k: v for k, v in GOOD.items() if k[0] != "_dmarc.acme.co.uk"}
    assert lines(records)["DMARC"] == (
        "fail _dmarc.mail.acme.co.uk: NXDOMAIN (no such name): publish _dmarc.mail.acme.co.uk. "
        '3600 IN TXT "v=DMARC1; p=quarantine; adkim=r; aspf=r; rua=mailto:dmarc@acme.co.uk"'
    )


def test_unknown_sending_host_and_mx_warn_rather_than_guess() -> None:
    found = lines(GOOD, spf_mechanisms=(), mx_host=None)
    assert found["SPF"].startswith("warn") and "--spf ip4:ADDRESS" in found["SPF"]
    assert found["MX"].startswith("warn bounces.mail.acme.co.uk MX mx.acme.co.uk; set [inbound]")
    assert plan(spf_mechanisms=()).spf_value() == (
        "v=spf1 ip4:<the relay's public IPv4 address> -all"
    )


def test_sending_hosts_become_spf_mechanisms() -> None:
    assert sending_mechanism("203.0.113.7") == "ip4:203.0.113.7"
    assert sending_mechanism("[2001:db8::1]") == "ip6:2001:db8::1"
    assert sending_mechanism("Out.Relay.Example.") == "a:out.relay.example"
    assert sending_mechanism("127.0.0.1") is None and sending_mechanism("localhost") is None


NAMES = sorted({name for name, _ in GOOD} | {"_dmarc.mail.acme.co.uk"})
STRANGER = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=80)
ANSWERS = st.one_of(
    st.lists(STRANGER, max_size=3),
    st.lists(st.builds(lambda v: f"v=spf1 {v}", STRANGER), max_size=2),
    st.lists(st.builds(lambda v: f"v=DMARC1; {v}", STRANGER), max_size=2),
    st.lists(st.builds(lambda v: f"v=DKIM1; k=rsa; p={v}", STRANGER), max_size=2),
)


@given(st.dictionaries(st.sampled_from(NAMES), ANSWERS), st.sampled_from(["TXT", "MX"]))
def test_whatever_dns_answers_the_check_gives_one_finding_per_record(
    answers: dict[str, list[str]], rtype: str
) -> None:
    """A zone is strangers' text: no answer makes the check raise or lose a record's line."""
    records = {**GOOD, **{(name, rtype): values for name, values in answers.items()}}
    findings = check(plan(), dns(records))
    assert [f.label for f in findings] == [
        "DKIM rsa",
        "SPF",
        "DMARC",
        "MX",
        "DMARC alignment (DKIM)",
        "DMARC alignment (SPF)",
    ]
    # Text from DNS is quoted: a TXT value cannot start a line of its own ("PASS ...").
    assert all("\n" not in f.line and "\r" not in f.line for f in findings)
