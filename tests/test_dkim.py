"""DKIM signing: real keys in tmp_path, verified by dkimpy against an injected DNS function."""

from __future__ import annotations

import base64
import hashlib
import stat
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import dkim
import dkim.crypto
import pytest

import mailer.outbound.dkim as mailer_dkim
from mailer.config import DKIMAlgorithm, DKIMConfig
from mailer.errors import ConfigError
from mailer.outbound.dkim import DKIMSigner, dns_record, generate_key

RSA = DKIMAlgorithm.RSA_SHA256
ED25519 = DKIMAlgorithm.ED25519_SHA256
DOMAIN = "example.com"

DNSFunc = Callable[..., bytes | None]


def build_message(*, subject: str = "Invoice INV-1042 is overdue", size: int = 600) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Acme Billing <billing@example.com>"
    msg["To"] = "Customer <ap@customer.example>"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 02 Mar 2026 09:00:00 +0000"
    msg["Message-ID"] = "<inv-1042.1@example.com>"
    msg["Reply-To"] = "ar@example.com"
    msg["Auto-Submitted"] = "auto-generated"
    msg["List-Unsubscribe"] = "<https://example.com/u/abc>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["X-Mailer-Debug"] = "not signed"
    line = "Your invoice INV-1042 for EUR 1,250.00 was due on 1 March 2026.\n"
    msg.set_content(line * max(1, size // len(line)))
    return msg.as_bytes(policy=SMTP)


def make_config(tmp_path: Path, algorithm: DKIMAlgorithm, selector: str) -> DKIMConfig:
    key_file = tmp_path / "keys" / f"{selector}.key"
    generate_key(key_file, algorithm)
    return DKIMConfig(domain=DOMAIN, selector=selector, key_file=key_file, algorithm=algorithm)


def make_dns(configs: Sequence[DKIMConfig]) -> DNSFunc:
    """A DNS function serving exactly the TXT records of ``configs`` (the rest is NXDOMAIN)."""
    records = {
        f"{c.selector}._domainkey.{c.domain}.".encode(): dns_record(c).encode() for c in configs
    }

    def txt(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return txt


def signature_count(signed: bytes) -> int:
    return len([h for h in dkim.DKIM(signed).headers if h[0].lower() == b"dkim-signature"])


def verify_all(signed: bytes, dns: DNSFunc) -> list[bool]:
    return [
        bool(dkim.DKIM(signed).verify(idx=i, dnsfunc=dns)) for i in range(signature_count(signed))
    ]


def tags(signed: bytes, idx: int = 0) -> dict[bytes, bytes]:
    headers = [v for n, v in dkim.DKIM(signed).headers if n.lower() == b"dkim-signature"]
    parsed: dict[bytes, bytes] = dkim.util.parse_tag_value(headers[idx])
    return parsed


@pytest.fixture(params=[RSA, ED25519], ids=["rsa", "ed25519"])
def single(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[DKIMSigner, DNSFunc]:
    config = make_config(tmp_path, request.param, "s1")
    return DKIMSigner([config]), make_dns([config])


# --- signatures verify ---------------------------------------------------------------------------


def test_single_key_signature_verifies(single: tuple[DKIMSigner, DNSFunc]) -> None:
    signer, dns = single
    signed = signer.sign(build_message())
    assert signature_count(signed) == 1
    assert dkim.verify(signed, dnsfunc=dns)


def test_dual_signing_every_signature_verifies(tmp_path: Path) -> None:
    configs = [make_config(tmp_path, RSA, "rsa1"), make_config(tmp_path, ED25519, "ed1")]
    signed = DKIMSigner(configs).sign(build_message())
    assert verify_all(signed, make_dns(configs)) == [True, True]
    assert [tags(signed, i)[b"a"] for i in range(2)] == [b"rsa-sha256", b"ed25519-sha256"]


def test_each_dual_signature_stands_alone(tmp_path: Path) -> None:
    # With only the RSA record published, the RSA signature still verifies on its own.
    configs = [make_config(tmp_path, RSA, "rsa1"), make_config(tmp_path, ED25519, "ed1")]
    signed = DKIMSigner(configs).sign(build_message())
    assert verify_all(signed, make_dns(configs[:1])) == [True, False]


def test_signature_tags(single: tuple[DKIMSigner, DNSFunc]) -> None:
    signer, _ = single
    fields = tags(signer.sign(build_message()))
    assert fields[b"c"] == b"relaxed/relaxed"
    assert fields[b"d"] == DOMAIN.encode()
    assert fields[b"s"] == b"s1"
    signed_headers = [h.strip() for h in fields[b"h"].split(b":")]
    assert signed_headers == [
        b"from",
        b"to",
        b"subject",
        b"date",
        b"message-id",
        b"reply-to",
        b"auto-submitted",
        b"list-unsubscribe",
        b"list-unsubscribe-post",
        b"content-type",
        b"mime-version",
        b"from",  # over-signed: no From can be added later
    ]


# --- tampering fails -----------------------------------------------------------------------------


def test_tampered_body_fails(single: tuple[DKIMSigner, DNSFunc]) -> None:
    signer, dns = single
    signed = signer.sign(build_message())
    tampered = signed.replace(b"EUR 1,250.00", b"EUR 9,250.00", 1)
    assert tampered != signed
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_changed_subject_fails(single: tuple[DKIMSigner, DNSFunc]) -> None:
    signer, dns = single
    signed = signer.sign(build_message())
    tampered = signed.replace(b"Subject: Invoice INV-1042", b"Subject: Invoice INV-9999", 1)
    assert tampered != signed
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_prepended_from_fails(single: tuple[DKIMSigner, DNSFunc]) -> None:
    # dkimpy's verifier also counts one extra From by itself (its bug #644046), so this attack
    # fails there either way; the trailing "from" in test_signature_tags is what protects us
    # at receivers that verify h= literally.
    signer, dns = single
    signed = signer.sign(build_message())
    sig_end = signed.index(b"\r\nFrom:") + 2
    attacked = signed[:sig_end] + b"From: Mallory <pay@mallory.example>\r\n" + signed[sig_end:]
    assert not dkim.verify(attacked, dnsfunc=dns)


def test_unsigned_header_may_change(single: tuple[DKIMSigner, DNSFunc]) -> None:
    # The control for the tests above: only signed fields are protected.
    signer, dns = single
    signed = signer.sign(build_message())
    changed = signed.replace(b"X-Mailer-Debug: not signed", b"X-Mailer-Debug: rewritten", 1)
    assert changed != signed
    assert dkim.verify(changed, dnsfunc=dns)


# --- the message itself is untouched -------------------------------------------------------------


def test_message_is_not_otherwise_altered(tmp_path: Path) -> None:
    configs = [make_config(tmp_path, RSA, "rsa1"), make_config(tmp_path, ED25519, "ed1")]
    message = build_message()
    signed = DKIMSigner(configs).sign(message)
    assert signed.endswith(message)
    prefix = signed[: -len(message)]
    assert prefix.startswith(b"DKIM-Signature: ")
    assert prefix.count(b"DKIM-Signature: ") == 2
    assert prefix.endswith(b"\r\n")
    assert b"\n" not in prefix.replace(b"\r\n", b"")  # CRLF only, no bare LF


def test_lf_only_message_gets_lf_headers(tmp_path: Path) -> None:
    config = make_config(tmp_path, RSA, "rsa1")
    message = build_message().replace(b"\r\n", b"\n")
    signed = DKIMSigner([config]).sign(message)
    assert signed.endswith(message)
    assert b"\r" not in signed
    assert dkim.verify(signed, dnsfunc=make_dns([config]))


def test_no_keys_returns_message_unchanged() -> None:
    signer = DKIMSigner([])
    message = build_message()
    assert signer.sign(message) == message
    assert signer.domains == ()


def test_domains_are_listed_once_in_order(tmp_path: Path) -> None:
    configs = [
        make_config(tmp_path, RSA, "a"),
        make_config(tmp_path, ED25519, "b"),
        make_config(tmp_path, RSA, "c").model_copy(update={"domain": "mail.example.org"}),
    ]
    assert DKIMSigner(configs).domains == (DOMAIN, "mail.example.org")


# --- OpenSSL RSA is dkimpy's RSA, only faster ----------------------------------------------------


def rsa_key_dict(tmp_path: Path) -> dict[str, int]:
    config = make_config(tmp_path, RSA, "cmp")
    parsed: dict[str, int] = dkim.crypto.parse_pem_private_key(config.key_file.read_bytes())
    return parsed


def test_dkimpy_signs_through_openssl() -> None:
    # gen_header and sign resolve these names in their module globals at call time; if a
    # dkimpy release moves them, this fails instead of silently losing the speed-up.
    assert dkim.DKIM.gen_header.__globals__["RSASSA_PKCS1_v1_5_sign"] is (
        mailer_dkim._rsassa_pkcs1_v1_5_sign
    )
    assert dkim.DKIM.sign.__globals__["parse_pem_private_key"] is (
        mailer_dkim._parse_pem_private_key
    )
    assert mailer_dkim._PURE_RSASSA_SIGN is not mailer_dkim._rsassa_pkcs1_v1_5_sign


@pytest.mark.parametrize("payload", [b"", b"header hash", b"x" * 4096])
def test_openssl_signature_is_byte_identical_to_pure(tmp_path: Path, payload: bytes) -> None:
    key = rsa_key_dict(tmp_path)
    fast = mailer_dkim._rsassa_pkcs1_v1_5_sign(hashlib.sha256(payload), key)
    pure = bytes(mailer_dkim._PURE_RSASSA_SIGN(hashlib.sha256(payload), key))
    assert len(fast) == 256
    assert fast == pure


def test_unusable_numbers_fall_back_to_pure(tmp_path: Path) -> None:
    # A wrong CRT coefficient: OpenSSL refuses the key, dkimpy's arithmetic still runs.
    key = rsa_key_dict(tmp_path)
    key["coefficient"] += 1
    digest = hashlib.sha256(b"fallback")
    assert mailer_dkim._rsassa_pkcs1_v1_5_sign(digest, key) == bytes(
        mailer_dkim._PURE_RSASSA_SIGN(digest, key)
    )


def test_pem_parse_is_memoised_and_read_only(tmp_path: Path) -> None:
    pem = make_config(tmp_path, RSA, "memo").key_file.read_bytes()
    first = mailer_dkim._parse_pem_private_key(pem)
    assert mailer_dkim._parse_pem_private_key(pem) is first
    assert dict(first) == dkim.crypto.parse_pem_private_key(pem)
    with pytest.raises(TypeError):
        first["modulus"] = 1


# --- keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", [RSA, ED25519], ids=["rsa", "ed25519"])
def test_generate_key_writes_private_file_and_returns_record(
    tmp_path: Path, algorithm: DKIMAlgorithm
) -> None:
    key_file = tmp_path / "deep" / "er" / "dkim.key"
    record = generate_key(key_file, algorithm)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    k_tag = "rsa" if algorithm is RSA else "ed25519"
    assert record.startswith(f"v=DKIM1; k={k_tag}; p=")
    public = base64.b64decode(record.split("p=", 1)[1], validate=True)
    assert len(public) == (294 if algorithm is RSA else 32)  # SPKI of RSA 2048 / raw point
    config = DKIMConfig(domain=DOMAIN, selector="s", key_file=key_file, algorithm=algorithm)
    assert dns_record(config) == record


def test_generate_key_refuses_to_overwrite(tmp_path: Path) -> None:
    key_file = tmp_path / "dkim.key"
    first = generate_key(key_file, ED25519)
    with pytest.raises(ConfigError, match="already exists"):
        generate_key(key_file, ED25519)
    config = DKIMConfig(domain=DOMAIN, selector="s", key_file=key_file, algorithm=ED25519)
    assert dns_record(config) == first


def test_pkcs8_crlf_rsa_key_is_accepted(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_file = tmp_path / "pkcs8.pem"
    key_file.write_bytes(pem.replace(b"\n", b"\r\n"))
    config = DKIMConfig(domain=DOMAIN, selector="p8", key_file=key_file, algorithm=RSA)
    signed = DKIMSigner([config]).sign(build_message())
    assert dkim.verify(signed, dnsfunc=make_dns([config]))


def test_missing_key_file_names_the_file(tmp_path: Path) -> None:
    key_file = tmp_path / "nowhere" / "missing.key"
    config = DKIMConfig(domain=DOMAIN, selector="s", key_file=key_file)
    with pytest.raises(ConfigError) as caught:
        DKIMSigner([config])
    assert str(key_file) in str(caught.value)
    assert "No such file" in str(caught.value)


GARBAGE = b"SECRET-GARBAGE-0123456789-not-a-key\n"


@pytest.mark.parametrize("algorithm", [RSA, ED25519], ids=["rsa", "ed25519"])
def test_garbage_key_file_names_file_not_content(tmp_path: Path, algorithm: DKIMAlgorithm) -> None:
    key_file = tmp_path / "garbage.key"
    key_file.write_bytes(GARBAGE)
    config = DKIMConfig(domain=DOMAIN, selector="s", key_file=key_file, algorithm=algorithm)
    with pytest.raises(ConfigError) as caught:
        DKIMSigner([config])
    text = str(caught.value)
    assert str(key_file) in text
    assert "SECRET" not in text and "0123456789" not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_truncated_rsa_key_leaks_no_key_lines(tmp_path: Path) -> None:
    generate_key(tmp_path / "whole.key", RSA)
    whole = (tmp_path / "whole.key").read_bytes()
    key_file = tmp_path / "truncated.key"
    key_file.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ConfigError) as caught:
        DKIMSigner([DKIMConfig(domain=DOMAIN, selector="s", key_file=key_file)])
    text = str(caught.value)
    assert str(key_file) in text
    for line in whole.splitlines()[1:-1]:
        assert line[:16].decode() not in text


@pytest.mark.parametrize(
    ("made_as", "configured_as"), [(RSA, ED25519), (ED25519, RSA)], ids=["rsa-as-ed", "ed-as-rsa"]
)
def test_key_of_the_wrong_algorithm_is_rejected(
    tmp_path: Path, made_as: DKIMAlgorithm, configured_as: DKIMAlgorithm
) -> None:
    key_file = tmp_path / "other.key"
    generate_key(key_file, made_as)
    config = DKIMConfig(domain=DOMAIN, selector="s", key_file=key_file, algorithm=configured_as)
    with pytest.raises(ConfigError, match="other.key"):
        DKIMSigner([config])


def test_repr_shows_no_key_material(tmp_path: Path) -> None:
    config = make_config(tmp_path, ED25519, "ed1")
    seed = config.key_file.read_text().strip()
    signer = DKIMSigner([config])
    assert "ed1._domainkey.example.com" in repr(signer)
    assert seed not in repr(signer) and seed not in repr(signer._keys)
