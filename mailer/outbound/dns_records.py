"""PURE: the DNS records a sending domain publishes, and the check of what DNS answers.

A tenant's mail passes DMARC (RFC 7489) when DKIM (RFC 6376) or SPF (RFC 7208) passes for a
domain aligned with From. ``DomainPlan`` says what that takes for one domain: a DKIM TXT per
key, SPF on the return-path (VERP) domain naming the hosts that send, a DMARC policy, and an
MX so bounces to the return path reach dunmail's inbound server. ``check`` compares DNS with
the plan through a ``Lookup`` it is given, so this module never opens a socket: the shell
(dunmail/services/domains.py) resolves, tests hand in answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import ip_address

from mailer.config import DKIMAlgorithm, is_loopback
from mailer.outbound.identity import aligned, organisational_domain

# RFC 1035 s3.3: a TXT record is a list of <character-string>s of at most 255 octets each.
MAX_TXT_STRING = 255
SPF_PLACEHOLDER = "ip4:<the relay's public IPv4 address>"


def split_txt(value: str) -> tuple[str, ...]:
    """``value`` as DNS character-strings of at most 255 bytes; receivers join them again
    without a separator (RFC 6376 s3.6.2.2, RFC 7208 s3.3). Our values are ASCII."""
    data = value.encode("ascii")
    return tuple(
        data[i : i + MAX_TXT_STRING].decode("ascii") for i in range(0, len(data), MAX_TXT_STRING)
    ) or ("",)


def parse_tags(value: str) -> dict[str, str]:
    """A ``tag=value; ...`` list (DKIM key records, DMARC), tags lower-cased, first one wins."""
    tags: dict[str, str] = {}
    for part in value.split(";"):
        name, sep, tag_value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), "".join(tag_value.split()))
    return tags


def sending_mechanism(host: str) -> str | None:
    """The SPF mechanism that names a sending host: ip4:/ip6: for an address, a: for a name;
    None for loopback, whose public address only the operator knows."""
    bare = host.strip("[]")
    if is_loopback(bare) or bare in {"", "localhost"}:
        return None
    try:
        address = ip_address(bare)
    except ValueError:
        return f"a:{bare.lower().rstrip('.')}"
    return f"ip{address.version}:{address}"


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"  # works, but weaker than it could be; does not fail the check
    FAIL = "fail"


@dataclass(frozen=True)
class DKIMKey:
    """One local key and the TXT value its public half needs."""

    selector: str
    algorithm: DKIMAlgorithm
    txt: str  # "v=DKIM1; k=...; p=..."
    key_file: str  # where it lives, for the fix line

    @property
    def k_tag(self) -> str:
        return "rsa" if self.algorithm is DKIMAlgorithm.RSA_SHA256 else "ed25519"


@dataclass(frozen=True)
class Record:
    """One record to publish. ``value`` is the whole TXT value (or ``"pref host."`` for MX)."""

    label: str  # "DKIM rsa", "SPF", "DMARC", "MX"
    name: str  # owner name, no trailing dot
    rtype: str  # "TXT" | "MX"
    value: str

    @property
    def strings(self) -> tuple[str, ...]:
        """TXT: the 255-byte character-strings; MX: the value as one item."""
        return split_txt(self.value) if self.rtype == "TXT" else (self.value,)

    def zone_line(self) -> str:
        """The record in zone-file (RFC 1035 s5) syntax, long TXT values split."""
        data = " ".join(f'"{s}"' for s in self.strings) if self.rtype == "TXT" else self.value
        return f"{self.name}. 3600 IN {self.rtype} {data}"

    def as_dict(self) -> dict[str, object]:
        return {
            "label": self.label,
            "name": self.name,
            "type": self.rtype,
            "value": self.value,
            "strings": list(self.strings),
        }


@dataclass(frozen=True)
class DomainPlan:
    """What one sending domain publishes. ``from_domain`` is the From mail says; ``domain``
    is d= of the keys; ``bounce_domain`` the return path (SPF's domain, and the MX's)."""

    domain: str
    from_domain: str
    bounce_domain: str
    keys: tuple[DKIMKey, ...]
    spf_mechanisms: tuple[str, ...]  # empty: the sending host is not known from config
    mx_host: str | None  # where [inbound] listens; None: not known from config
    rua: str

    def dkim_records(self) -> list[Record]:
        return [
            Record(f"DKIM {k.k_tag}", f"{k.selector}._domainkey.{self.domain}", "TXT", k.txt)
            for k in self.keys
        ]

    def spf_value(self) -> str:
        mechanisms = self.spf_mechanisms or (SPF_PLACEHOLDER,)
        return " ".join(("v=spf1", *mechanisms, "-all"))

    def dmarc_value(self) -> str:
        return f"v=DMARC1; p=quarantine; adkim=r; aspf=r; rua={self.rua}"

    def mx_value(self) -> str:
        return f"10 {self.mx_host or '<the host where [inbound] listens>'}."

    def records(self) -> list[Record]:
        return [
            *self.dkim_records(),
            Record("SPF", self.bounce_domain, "TXT", self.spf_value()),
            Record("DMARC", f"_dmarc.{self.from_domain}", "TXT", self.dmarc_value()),
            Record("MX", self.bounce_domain, "MX", self.mx_value()),
        ]


@dataclass(frozen=True)
class Answer:
    """What DNS said: the TXT values (strings joined) or MX ``"pref host."``, or the problem
    (NXDOMAIN, SERVFAIL, a timeout) in words. An empty answer is the name with no such type."""

    values: tuple[str, ...] = ()
    problem: str | None = None
    nxdomain: bool = False  # the name does not exist: absent, as opposed to unanswered


Lookup = Callable[[str, str], Answer]  # (name, "TXT" | "MX") -> Answer


@dataclass(frozen=True)
class Finding:
    """One line of ``dunmail domain check``: the record, the verdict, and what to do."""

    label: str
    status: Status
    detail: str

    @property
    def line(self) -> str:
        return f"{self.label}: {self.detail}"


def _publish(record: Record) -> str:
    # The zone-file line, so a long TXT value is already split into 255-byte strings.
    return f"publish {record.zone_line()}"


def _lookup(lookup: Lookup, record: Record) -> tuple[Answer, Finding | None]:
    answer = lookup(record.name, record.rtype)
    if answer.problem is not None:
        return answer, Finding(
            record.label, Status.FAIL, f"{record.name}: {answer.problem}: {_publish(record)}"
        )
    return answer, None


def check_dkim(key: DKIMKey, record: Record, lookup: Lookup) -> Finding:
    answer, failed = _lookup(lookup, record)
    if failed:
        return failed
    published = [parse_tags(v) for v in answer.values if "p=" in v.replace(" ", "")]
    if not published:
        return Finding(record.label, Status.FAIL, f"no key at {record.name}: {_publish(record)}")
    tags, want = published[0], parse_tags(key.txt)
    if len(published) > 1:
        detail = f"{len(published)} key records at {record.name} (one is allowed): keep only"
        return Finding(record.label, Status.FAIL, f"{detail} the one below; {_publish(record)}")
    if tags.get("k", "rsa") != want["k"]:
        detail = f"k={tags.get('k', 'rsa')!r} at {record.name}, but {key.key_file} is {want['k']}"
        return Finding(record.label, Status.FAIL, f"{detail}: {_publish(record)}")
    if tags.get("p") != want["p"]:
        what = "p= is empty (key revoked)" if not tags.get("p") else "p= differs"
        detail = f"{what} from {key.key_file} at {record.name}: {_publish(record)}"
        return Finding(record.label, Status.FAIL, detail)
    return Finding(record.label, Status.PASS, f"{record.name} matches {key.key_file}")


# RFC 7208 s4.6.4: evaluating a record may cost at most 10 DNS lookups (include:, a, mx, ...).
SPF_LOOKUP_LIMIT = 10


def _spf_records(values: Sequence[str]) -> list[str]:
    return [v for v in values if v.lower().split()[:1] == ["v=spf1"]]


def _spf_terms(value: str) -> list[str]:
    return [t.lower().lstrip("+") for t in value.split()[1:]]


def _named_terms(value: str, lookup: Lookup, budget: list[int]) -> list[str]:
    """The record's terms plus those of the records it ``include:``s (a provider's list of
    servers), within SPF's lookup limit; an include's ``all`` says nothing about ours."""
    terms = _spf_terms(value)
    named = list(terms)
    for term in terms:
        if term.startswith("include:") and budget[0] > 0:
            budget[0] -= 1
            for included in _spf_records(lookup(term.removeprefix("include:"), "TXT").values):
                named += [t for t in _named_terms(included, lookup, budget) if "all" not in t]
    return named


def check_spf(plan: DomainPlan, record: Record, lookup: Lookup) -> Finding:
    answer, failed = _lookup(lookup, record)
    if failed:
        return failed
    spf = _spf_records(answer.values)
    if not spf:
        return Finding("SPF", Status.FAIL, f"no v=spf1 record at {record.name}: {_publish(record)}")
    if len(spf) > 1:
        detail = f"{len(spf)} v=spf1 records at {record.name} (RFC 7208 s3.2: a permerror)"
        return Finding("SPF", Status.FAIL, f"{detail}: merge them; {_publish(record)}")
    terms = _spf_terms(spf[0])
    if "all" in terms or "?all" in terms:
        detail = f"{spf[0]!r} at {record.name} lets any host send as it: end with -all"
        return Finding("SPF", Status.FAIL, detail)
    named = _named_terms(spf[0], lookup, [SPF_LOOKUP_LIMIT])
    missing = [m for m in plan.spf_mechanisms if m.lower() not in named]
    if missing:
        detail = f"{record.name} does not name {' '.join(missing)} (a sending host in config)"
        return Finding("SPF", Status.FAIL, f"{detail}: {_publish(record)}")
    if not plan.spf_mechanisms:
        detail = (
            f"{record.name} has {spf[0]!r}; the relay's sending address is not in config "
            "(pass --spf ip4:ADDRESS to check that it is named)"
        )
        return Finding("SPF", Status.WARN, detail)
    return Finding("SPF", Status.PASS, f"{record.name} names {' '.join(plan.spf_mechanisms)}")


def _dmarc_tags(answer: Answer) -> list[dict[str, str]]:
    return [parse_tags(v) for v in answer.values if v.replace(" ", "").startswith("v=DMARC1")]


def check_dmarc(plan: DomainPlan, record: Record, lookup: Lookup) -> Finding:
    answer, failed = _lookup(lookup, record)
    where = record.name
    org = organisational_domain(plan.from_domain)
    absent = answer.nxdomain or (failed is None and not _dmarc_tags(answer))
    if absent and org and org != plan.from_domain:
        # RFC 7489 s6.6.3: no record at the From domain; the organisational domain's applies.
        inherited = lookup(f"_dmarc.{org}", "TXT")
        if inherited.problem is None and _dmarc_tags(inherited):
            answer, failed, where = inherited, None, f"_dmarc.{org} (inherited)"
    if failed:
        return failed
    dmarc = _dmarc_tags(answer)
    if len(dmarc) != 1:
        count = "no" if not dmarc else str(len(dmarc))
        detail = f"{count} v=DMARC1 record(s) at {where} (one is needed): {_publish(record)}"
        return Finding("DMARC", Status.FAIL, detail)
    policy = dmarc[0].get("p", "").lower()
    if policy not in {"none", "quarantine", "reject"}:
        detail = f"{where} has no valid p= (got {policy!r}): {_publish(record)}"
        return Finding("DMARC", Status.FAIL, detail)
    if policy == "none":
        detail = f"{where} has p=none: receivers only report; p=quarantine once reports are clean"
        return Finding("DMARC", Status.WARN, detail)
    return Finding("DMARC", Status.PASS, f"{where} has p={policy}")


def check_mx(plan: DomainPlan, record: Record, lookup: Lookup) -> Finding:
    answer, failed = _lookup(lookup, record)
    if failed:
        return failed
    hosts = [v.split()[-1].lower().rstrip(".") for v in answer.values if v.split()]
    if not hosts:
        return Finding("MX", Status.FAIL, f"no MX at {record.name}: {_publish(record)}")
    if plan.mx_host is None:
        detail = (
            f"{record.name} MX {', '.join(hosts)}; set [inbound] hostname to check it is "
            "where dunmail takes bounces"
        )
        return Finding("MX", Status.WARN, detail)
    if plan.mx_host.lower().rstrip(".") not in hosts:
        detail = f"{record.name} MX is {', '.join(hosts)}, not {plan.mx_host} ([inbound])"
        return Finding("MX", Status.FAIL, f"{detail}: {_publish(record)}")
    return Finding("MX", Status.PASS, f"{record.name} MX {plan.mx_host} takes the bounces")


def check_alignment(plan: DomainPlan) -> list[Finding]:
    """DMARC alignment, relaxed (RFC 7489 s3.1.1): From against d= and the return path."""
    sender = f"From @{plan.from_domain}"
    if aligned(plan.from_domain, plan.domain):
        dkim = Finding(
            "DMARC alignment (DKIM)", Status.PASS, f"d={plan.domain} aligns with {sender}"
        )
    else:
        detail = (
            f"d={plan.domain} does not align with {sender}: sign with a key for "
            f"{plan.from_domain} (dunmail domain add {plan.from_domain})"
        )
        dkim = Finding("DMARC alignment (DKIM)", Status.FAIL, detail)
    if aligned(plan.from_domain, plan.bounce_domain):
        detail = f"return path @{plan.bounce_domain} aligns with {sender}"
        spf = Finding("DMARC alignment (SPF)", Status.PASS, detail)
    else:
        detail = (
            f"return path @{plan.bounce_domain} does not align with {sender}: DMARC rests on "
            f"DKIM alone; set bounce_domain to a subdomain of {plan.from_domain} for both"
        )
        spf = Finding("DMARC alignment (SPF)", Status.WARN, detail)
    return [dkim, spf]


def check(plan: DomainPlan, lookup: Lookup) -> list[Finding]:
    """Every record of ``plan`` against DNS, then alignment; one finding each, in order."""
    findings = [
        check_dkim(key, record, lookup)
        for key, record in zip(plan.keys, plan.dkim_records(), strict=True)
    ]
    if not plan.keys:
        findings.append(
            Finding("DKIM", Status.FAIL, f"no local key for {plan.domain}: dunmail domain add")
        )
    by_label = {r.label: r for r in plan.records()}
    findings.append(check_spf(plan, by_label["SPF"], lookup))
    findings.append(check_dmarc(plan, by_label["DMARC"], lookup))
    findings.append(check_mx(plan, by_label["MX"], lookup))
    return [*findings, *check_alignment(plan)]


def passed(findings: Sequence[Finding]) -> bool:
    """Whether nothing failed (warnings pass)."""
    return all(f.status is not Status.FAIL for f in findings)
