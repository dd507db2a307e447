"""The fast DKIM signer writes dkimpy's DKIM-Signature byte for byte, and it verifies.

A Hypothesis property signs random messages (folded headers, names in odd case, trailing
spaces and tabs, empty and blank-only bodies, 8-bit UTF-8 and Latin-1 bytes, long lines, bare
LF and CR inside a CRLF message, mixed line ends, LF-only messages) with ``dkim_fast`` and with
dkimpy for the same key, selector, domain, h= list and t=, and compares the headers; dkimpy
then verifies both signatures. OpenDKIM, an independent implementation, verifies a few more
(as tests/test_dkim_independent.py does: its ``TestPublicKeys`` file serves the keys).
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mailer.outbound.dkim as mailer_dkim
from mailer.clock import FixedClock
from mailer.config import DKIMAlgorithm, DKIMConfig
from mailer.errors import MailerError
from mailer.outbound.dkim import DKIMSigner, dns_record, generate_key
from mailer.outbound.dkim_fast import MessageFormatError as FastFormatError
from mailer.outbound.dkim_fast import (
    SigningKey,
    headers_to_sign,
    line_separator,
    signature_headers,
)

SIGNED = mailer_dkim._SIGNED
OPENDKIM = shutil.which("opendkim") or (
    "/usr/sbin/opendkim" if Path("/usr/sbin/opendkim").exists() else None
)


@dataclass(frozen=True)
class KeyPair:
    """One private key in both forms: dkimpy's (PEM or base64 seed) and the parsed one."""

    algorithm: bytes
    suffix: bytes  # added to the selector, so each key has its own DNS record
    secret: bytes
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    record: bytes  # the DNS TXT value


def _rsa_pair() -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(b"rsa-sha256", b"", pem, key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der))


def _ed25519_pair() -> KeyPair:
    key = ed25519.Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    seed = base64.b64encode(key.private_bytes_raw())
    record = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)
    return KeyPair(b"ed25519-sha256", b"-ed", seed, key, record)


PAIRS = (_rsa_pair(), _ed25519_pair())  # generated once: RSA-2048 generation is slow

# Selectors and domains of several lengths, so folding breaks in different places.
IDENTITIES = st.sampled_from(
    [
        (b"s1", b"example.com"),
        (b"rsa2026", b"mail.acme.example"),
        (b"x", b"a.example"),
        (b"selector-with-a-long-name", b"billing.subdomain.long-company-name.example"),
    ]
)

# --- the messages --------------------------------------------------------------------------------

_NAMES = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "X-Dunmail-Message",
    "X-Other",
    "Received",
    "Content-Transfer-Encoding",
]
_TEXT = st.sampled_from(
    [b"a", b"Z", b"0", b"<", b">", b"@", b";", b"=", b":", b",", b'"', b"b=", b"x", b" ", b"  "]
    + [b"\t", b" \t", "é".encode(), "€".encode(), "日本".encode(), b"\xe9", b"\xa0", b"\xff"]
)


def _case(name: str, flips: list[bool]) -> bytes:
    return "".join(c.swapcase() if f else c for c, f in zip(name, flips, strict=False)).encode()


@st.composite
def header_fields(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(_NAMES))
    spelt = _case(name, draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name))))
    segments = draw(st.lists(st.lists(_TEXT, max_size=30).map(b"".join), min_size=1, max_size=4))
    folds = [draw(st.sampled_from([b" ", b"\t", b"  ", b" \t "])) for _ in segments[1:]]
    value = segments[0] + b"".join(
        b"\r\n" + w + s for w, s in zip(folds, segments[1:], strict=True)
    )
    gap = draw(st.sampled_from([b"", b" ", b"\t", b"  "]))  # after the colon (none may go before)
    return spelt + b":" + gap + value + draw(st.sampled_from([b"", b" ", b"\t", b" \t"]))


_BODY_TEXT = st.one_of(
    st.lists(_TEXT, max_size=40).map(b"".join),
    st.integers(min_value=990, max_value=1200).map(lambda n: b"long " * (n // 5)),
    st.sampled_from([b"", b" ", b"\t", b"  \t ", b"line\n bare", b"cr\rinside", b".", b"--b"]),
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    fields = draw(st.lists(header_fields(), max_size=10))
    if draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), b"From: Acme <ar@acme.example>")
    lines = draw(st.lists(_BODY_TEXT, max_size=25))
    body = b"\r\n".join(lines) + draw(st.sampled_from([b"", b"\r\n", b"\r\n\r\n", b" \r\n\t\r\n"]))
    message = b"\r\n".join(fields) + b"\r\n\r\n" + body
    shape = draw(st.integers(0, 9))
    if shape == 0:  # an LF-only message is signed with LF-ended headers
        message = message.replace(b"\r\n", b"\n")
    elif shape == 1:  # mixed line ends, the header/body boundary included
        lines = message.split(b"\r\n")
        ends = draw(st.lists(st.sampled_from([b"\r\n", b"\n"]), min_size=len(lines)))
        message = b"".join(line + end for line, end in zip(lines[:-1], ends, strict=False))
        message += lines[-1]
    return message


# --- the reference -------------------------------------------------------------------------------


def dkimpy_header(message: bytes, pair: KeyPair, selector: bytes, domain: bytes, t: int) -> bytes:
    """What dkimpy writes, with the same h= list as DKIMSigner and its clock showing ``t``."""
    parsed = dkim.DKIM(message, linesep=line_separator(message))
    include = headers_to_sign((name for name, _ in parsed.headers), SIGNED)
    with mock.patch.object(dkim, "time", SimpleNamespace(time=lambda: t + 0.75)):
        signed: bytes = parsed.sign(
            selector,
            domain,
            pair.secret,
            signature_algorithm=pair.algorithm,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
        )
    return signed


def dns_for(selector: bytes, domain: bytes) -> Callable[..., bytes | None]:
    records = {selector + p.suffix + b"._domainkey." + domain + b".": p.record for p in PAIRS}
    return lambda name, timeout=5: records.get(name)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(message=messages(), identity=IDENTITIES, t=st.integers(1_000_000_000, 4_000_000_000))
def test_signature_equals_dkimpy_and_verifies(
    message: bytes, identity: tuple[bytes, bytes], t: int
) -> None:
    selector, domain = identity
    keys = [SigningKey(domain, selector + p.suffix, p.private) for p in PAIRS]
    fast = signature_headers(message, keys, SIGNED, t)
    assert fast == [dkimpy_header(message, p, selector + p.suffix, domain, t) for p in PAIRS]
    # Stamped the way DKIMSigner stamps them: the ed25519 signature ends up first.
    signed = b"".join(fast) + message
    with mock.patch.object(dkim, "time", SimpleNamespace(time=lambda: t + 1.0)):
        for idx in range(len(PAIRS)):
            assert dkim.DKIM(signed).verify(idx=idx, dnsfunc=dns_for(selector, domain))


# --- the signer class ----------------------------------------------------------------------------


def composed(size: int = 8000) -> bytes:
    """A message as the engine sends it: CRLF, 8-bit UTF-8 quoted-printable, a long body."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "Acme Billing <billing@example.com>"
    msg["To"] = "Müller GmbH <ap@customer.example>"
    msg["Subject"] = "Rechnung INV-1042 ist überfällig: bitte zahlen Sie bis zum 15. März 2026"
    msg["Date"] = "Mon, 02 Mar 2026 09:00:00 +0000"
    msg["Message-ID"] = "<inv-1042.1@example.com>"
    msg["X-Not-Signed"] = "free to change"
    line = "Ihre Rechnung INV-1042 über 1.250,00 € war am 1. März fällig.  \n"
    msg.set_content(line * (size // len(line)), cte="quoted-printable")
    return msg.as_bytes()


@pytest.fixture
def key_files(tmp_path: Path) -> list[DKIMConfig]:
    configs = []
    for selector, algorithm in (
        ("rsa1", DKIMAlgorithm.RSA_SHA256),
        ("ed1", DKIMAlgorithm.ED25519_SHA256),
    ):
        path = tmp_path / "k" / f"{selector}.key"
        generate_key(path, algorithm)
        configs.append(
            DKIMConfig(domain="acme.example", selector=selector, key_file=path, algorithm=algorithm)
        )
    return configs


def test_signer_uses_its_clock_and_matches_dkimpy(key_files: list[DKIMConfig]) -> None:
    at = datetime(2026, 3, 2, 9, 0, 7, 900000, tzinfo=UTC)
    message = composed()
    signed = DKIMSigner(key_files, clock=FixedClock(at)).sign(message)
    expected = []
    for config in key_files:
        key = mailer_dkim._load_key(config)
        pair = KeyPair(key.algorithm, b"", key.secret, key.signing.private_key, b"")
        expected.append(dkimpy_header(message, pair, key.selector, key.domain, int(at.timestamp())))
    assert signed == b"".join(expected) + message
    assert f"t={int(at.timestamp())};".encode() in signed


@pytest.mark.parametrize(
    "message",
    [b" starts folded\r\nFrom: a@example.com\r\n\r\nx\r\n", b"no colon here\r\n\r\nx\r\n"],
    ids=["continuation-first", "no-colon"],
)
def test_malformed_header_fails_like_dkimpy(message: bytes, key_files: list[DKIMConfig]) -> None:
    with pytest.raises(FastFormatError):
        signature_headers(message, [], SIGNED, 0)
    with pytest.raises(MailerError, match="DKIM signing failed"):
        DKIMSigner(key_files).sign(message)
    with pytest.raises((dkim.MessageFormatError, IndexError)):
        dkim.DKIM(message)


# --- an independent verifier ---------------------------------------------------------------------


@pytest.fixture
def opendkim() -> Iterator[str]:
    if OPENDKIM is None:
        pytest.skip("OpenDKIM not installed (Debian package opendkim): no independent verifier")
    yield OPENDKIM


OPENDKIM_SAMPLES = [
    composed(),
    composed(300),
    b"FROM:  Acme   <ar@acme.example> \t\r\nsUbJeCt: folded\r\n\tover\r\n  three lines \r\n"
    b"To: =?utf-8?q?M=C3=BCller?= <ap@customer.example>\r\n\r\n",
    b"From: ar@acme.example\r\nSubject: caf\xc3\xa9 \xe9t\xe9\r\n\r\n\r\n \t\r\n\r\n",
    b"From: ar@acme.example\r\nTo: x@y.example\r\n\r\ntrailing  \t\r\n\tlead  mid\t\ttabs\r\n"
    + b"\xe9\xa0latin-1 " * 200
    + b"\r\n\r\n\r\n",
]


@pytest.mark.parametrize("index", range(len(OPENDKIM_SAMPLES)))
def test_opendkim_verifies_fast_signatures(
    index: int, key_files: list[DKIMConfig], tmp_path: Path, opendkim: str
) -> None:
    signed = DKIMSigner(key_files).sign(OPENDKIM_SAMPLES[index])
    message = tmp_path / "signed.eml"
    message.write_bytes(signed)
    table = tmp_path / "keys.txt"
    table.write_text(
        "".join(f"{c.selector}._domainkey.{c.domain} {dns_record(c)}\n" for c in key_files)
    )
    conf = tmp_path / "opendkim.conf"
    conf.write_text(f"Mode v\nTestPublicKeys {table}\nSyslog no\nAlwaysAddARHeader yes\n")
    result = subprocess.run(
        [opendkim, "-x", str(conf), "-t", str(message), "-vvv"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert "dkim=pass (2048-bit key) header.d=acme.example" in report
    assert "header.a=rsa-sha256 header.s=rsa1" in report
    assert "header.a=ed25519-sha256 header.s=ed1" in report
    assert "dkim=fail" not in report
