"""DKIM keys and signing (RFC 6376, RFC 8463); dkimpy is the reference the fast path matches.

``DKIMSigner`` signs through ``dkim_fast`` (relaxed/relaxed canonicalisation with compiled byte
regexes, keys parsed once, OpenSSL signing), which writes byte for byte the header dkimpy
writes; tests/test_dkim_fast.py proves it against dkimpy and OpenDKIM. This is the only module
that imports ``dkim``: dkimpy stays the reference signer and the verifier. Under dkimpy we
swap out its RSA private-key operation: it is pure Python (``pow`` on 2048-bit ints, about
10 ms a message), ten times slower than OpenSSL. RSASSA-PKCS1-v1_5 is deterministic (RFC 8017
s8.2), so the signature bytes are identical either way.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Protocol

import dkim
import dkim.crypto
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from mailer.clock import Clock, SystemClock
from mailer.config import DKIMAlgorithm, DKIMConfig
from mailer.errors import ConfigError, MailerError
from mailer.outbound.dkim_fast import (
    MessageFormatError,
    SigningKey,
    load_pem_key,
    signature_headers,
)

log = logging.getLogger(__name__)

# Header fields we sign when present (RFC 6376 s5.4.1 lists the ones that matter to a reader,
# plus our own thread marker and the RFC 8058 one-click unsubscribe pair, which RFC 8058 s4
# requires to be covered by the signature). DKIM-Signature itself is never signed, so each
# key's signature stands on its own, as RFC 8463 s3 dual signing expects.
SIGNED_HEADERS: Final = (
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "Auto-Submitted",
    "X-Dunmail-Message",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "In-Reply-To",
    "References",
)
_SIGNED: Final = frozenset(name.lower().encode("ascii") for name in SIGNED_HEADERS)
_MIN_RSA_BITS: Final = 1024  # RFC 8301 s3.2: signers MUST use at least 1024 bits
_NEW_RSA_BITS: Final = 2048  # ... and SHOULD use at least 2048
_ED25519_SEED_BYTES: Final = 32


# --- OpenSSL RSA under dkimpy ------------------------------------------------------------------
#
# ``dkim.DKIM.gen_header`` calls the module-level name ``dkim.RSASSA_PKCS1_v1_5_sign(h, pk)``,
# and ``dkim.DKIM.sign`` calls ``dkim.parse_pem_private_key(privkey)`` on every message, because
# dkimpy's API takes the key as PEM bytes and offers no way to pass a parsed key. Rebinding those
# two names in the ``dkim`` namespace is the smallest change that reaches both: no copy of
# dkimpy's signing code to drift from upstream, and ``dkim.crypto`` keeps the originals, which we
# fall back to for anything we do not recognise. Both replacements return what the originals
# return, so the swap is invisible apart from speed; tests/test_dkim.py checks that
# ``gen_header`` really resolves to ours and that the signature bytes match the pure path.

_PURE_RSASSA_SIGN: Final[Callable[..., Any]] = dkim.crypto.RSASSA_PKCS1_v1_5_sign
_PURE_PARSE_PEM: Final[Callable[..., Any]] = dkim.crypto.parse_pem_private_key

# The names dkimpy gives the RFC 8017 RSAPrivateKey fields, in RSAPrivateNumbers order.
_RSA_FIELDS: Final = (
    "prime1",
    "prime2",
    "privateExponent",
    "exponent1",
    "exponent2",
    "coefficient",
    "publicExponent",
    "modulus",
)
_KEY_CACHE_SIZE: Final = 256  # keys, not messages: a miss only costs a re-parse


class _Digest(Protocol):
    """What dkimpy hands the signer: its ``HashThrough`` wrapper around a hashlib object."""

    @property
    def name(self) -> str: ...

    def digest(self) -> bytes: ...


@functools.lru_cache(maxsize=_KEY_CACHE_SIZE)
def _parse_pem_cached(data: bytes) -> Mapping[str, int]:
    # Read-only, because every message signed with this key now shares the one mapping.
    return MappingProxyType(_PURE_PARSE_PEM(data))


def _parse_pem_private_key(data: Any) -> Any:
    """dkimpy's ``parse_pem_private_key``, memoised: the ASN.1 parse is ~0.3 ms a message."""
    if isinstance(data, bytes):
        return _parse_pem_cached(data)
    return _PURE_PARSE_PEM(data)


@functools.lru_cache(maxsize=_KEY_CACHE_SIZE)
def _openssl_key(numbers: tuple[int, ...]) -> rsa.RSAPrivateKey | None:
    """Build (once per key) the OpenSSL key for dkimpy's numbers; None if OpenSSL refuses it."""
    p, q, d, dmp1, dmq1, iqmp, e, n = numbers
    try:
        public = rsa.RSAPublicNumbers(e, n)
        return rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, public).private_key()
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # Never the numbers themselves in the log: they are the private key.
        log.warning("OpenSSL rejected a DKIM RSA key (%s); using dkimpy's pure RSA", exc)
        return None


def _rsassa_pkcs1_v1_5_sign(digest: _Digest, private_key: Mapping[str, int]) -> bytes:
    """``dkim.crypto.RSASSA_PKCS1_v1_5_sign`` with the private-key operation done by OpenSSL.

    The digest is already computed by dkimpy, hence ``Prehashed``. Anything unexpected (another
    hash, a key OpenSSL will not load, a key too short for the digest) goes to the original,
    so dkimpy's own errors, such as ``DigestTooLargeError``, still come from dkimpy.
    """
    if digest.name.lower() != "sha256":  # rsa-sha1 is obsolete (RFC 8301 s3.1); not ours
        return bytes(_PURE_RSASSA_SIGN(digest, private_key))
    try:
        numbers = tuple(int(private_key[name]) for name in _RSA_FIELDS)
    except (KeyError, TypeError, ValueError):
        return bytes(_PURE_RSASSA_SIGN(digest, private_key))
    key = _openssl_key(numbers)
    if key is None:
        return bytes(_PURE_RSASSA_SIGN(digest, private_key))
    try:
        return key.sign(digest.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    except ValueError:
        return bytes(_PURE_RSASSA_SIGN(digest, private_key))


def _install_openssl_rsa() -> None:
    # Idempotent (the originals are read from dkim.crypto, which we never touch), so a module
    # reload cannot stack wrappers. Only this module imports dkim, so nothing else is surprised.
    dkim.parse_pem_private_key = _parse_pem_private_key
    dkim.RSASSA_PKCS1_v1_5_sign = _rsassa_pkcs1_v1_5_sign


_install_openssl_rsa()


# --- keys --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Key:
    """One loaded signing key, in the form dkimpy takes it and parsed, plus its DNS record."""

    config: DKIMConfig
    domain: bytes  # A-label form: d= is ASCII (RFC 6376 s3.5)
    selector: bytes
    algorithm: bytes
    secret: bytes = field(repr=False)  # canonical PEM, or the base64 ed25519 seed
    dns_record: str
    signing: SigningKey = field(repr=False)  # what the hot path signs with


def _key_error(path: Path, problem: str) -> ConfigError:
    # One wording everywhere. Never the key's content: not even a "got ..." excerpt.
    return ConfigError(f"DKIM key file {path}: {problem}")


def _read_key_file(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _key_error(path, f"cannot read it ({exc.strerror or type(exc).__name__})") from exc
    if not data.strip():
        raise _key_error(path, "is empty")
    return data


def _load_rsa(path: Path, data: bytes) -> tuple[bytes, bytes, rsa.RSAPrivateKey]:
    """Return (PEM dkimpy can parse, DER public key, the key) for an RSA private key in PEM."""
    try:
        key = load_pem_key(data)
    except TypeError:
        raise _key_error(path, "is encrypted; DKIM keys must be stored unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        # ``from None``: the parser's context is about the bytes, and they stay out of reports.
        raise _key_error(path, "is not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise _key_error(path, "holds a PEM key that is not RSA, but the algorithm is rsa-sha256")
    if key.key_size < _MIN_RSA_BITS:
        raise _key_error(path, f"RSA key has {key.key_size} bits; RFC 8301 needs >= 1024")
    # Re-encode as PKCS#1 PEM with LF line ends: dkimpy's PEM reader is a regex that wants
    # exactly that, while operators' files may be PKCS#8, CRLF or carry text around the block.
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    try:
        _parse_pem_private_key(pem)  # fail now rather than on the first message
    except dkim.crypto.UnparsableKeyError:
        raise _key_error(path, "RSA key is not in a form dkimpy can read") from None
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, public, key


def _load_ed25519(path: Path, data: bytes) -> tuple[bytes, bytes, ed25519.Ed25519PrivateKey]:
    """Return (base64 seed as dkimpy/pynacl take it, raw public key, the key) for ed25519."""
    if data.lstrip().startswith(b"-----BEGIN"):
        # Also accept ``openssl genpkey -algorithm ed25519`` output; dkimpy wants the bare seed.
        try:
            pem_key = serialization.load_pem_private_key(data, password=None)
        except (TypeError, ValueError, UnsupportedAlgorithm):
            raise _key_error(path, "is not a readable, unencrypted PEM private key") from None
        if not isinstance(pem_key, ed25519.Ed25519PrivateKey):
            raise _key_error(
                path, "holds a PEM key that is not Ed25519, but the algorithm is ed25519"
            )
        seed = pem_key.private_bytes_raw()
    else:
        try:
            seed = base64.b64decode(b"".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            raise _key_error(path, "is not a base64 ed25519 seed") from None
        if len(seed) != _ED25519_SEED_BYTES:
            raise _key_error(path, f"ed25519 seed must be 32 bytes, not {len(seed)}")
    key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(seed), public, key


def _load_key(config: DKIMConfig) -> _Key:
    path = config.key_file
    data = _read_key_file(path)
    loaded: tuple[bytes, bytes, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey]
    if config.algorithm is DKIMAlgorithm.RSA_SHA256:
        loaded = _load_rsa(path, data)
    else:
        loaded = _load_ed25519(path, data)
    secret, public, private_key = loaded
    try:
        domain = config.domain.encode("idna")
    except UnicodeError:
        raise ConfigError(f"DKIM domain {config.domain!r} is not a valid domain name") from None
    selector = config.selector.encode("ascii")
    return _Key(
        config=config,
        domain=domain,
        selector=selector,
        algorithm=config.algorithm.value.encode("ascii"),
        secret=secret,
        dns_record=_txt_value(config.algorithm, public),
        signing=SigningKey(domain, selector, private_key),
    )


def _txt_value(algorithm: DKIMAlgorithm, public: bytes) -> str:
    # k= per RFC 6376 s3.6.1 and RFC 8463 s4.2; p= is SubjectPublicKeyInfo DER for RSA and the
    # raw 32-byte point for ed25519.
    k_tag = "rsa" if algorithm is DKIMAlgorithm.RSA_SHA256 else "ed25519"
    return f"v=DKIM1; k={k_tag}; p={base64.b64encode(public).decode('ascii')}"


def dns_record(config: DKIMConfig) -> str:
    """The TXT value to publish at ``<selector>._domainkey.<domain>`` for an existing key.

    Longer than 255 bytes for RSA 2048, so zone files must split it into several quoted
    strings; resolvers join them again (RFC 6376 s3.6.2.2).
    """
    return _load_key(config).dns_record


def generate_key(path: Path, algorithm: DKIMAlgorithm) -> str:
    """Create a new private key file (mode 0600) and return its DNS TXT record value.

    RSA keys are 2048-bit PKCS#1 PEM; ed25519 keys are the base64 32-byte seed that dkimpy
    reads (RFC 8463). An existing file is never overwritten: its public half may already be
    in DNS, and replacing it would break every signature until DNS catches up.
    """
    if algorithm is DKIMAlgorithm.RSA_SHA256:
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=_NEW_RSA_BITS)
        content = rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public = rsa_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        ed_key = ed25519.Ed25519PrivateKey.generate()
        content = base64.b64encode(ed_key.private_bytes_raw()) + b"\n"
        public = ed_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # O_EXCL and the mode at creation: the key is never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise _key_error(path, "already exists; refusing to replace a key") from None
    except OSError as exc:
        raise _key_error(path, f"cannot create it ({exc.strerror or type(exc).__name__})") from exc
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)  # exact, whatever the umask
        out.write(content)
    return _txt_value(algorithm, public)


# --- signing -----------------------------------------------------------------------------------


class DKIMSigner:
    """Signs outgoing messages with each of a tenant's DKIM keys.

    One DKIM-Signature header per key, so a tenant can sign with RSA and ed25519 at once
    (RFC 8463 s3) and receivers that do not know ed25519 still find a signature they can check.
    Key files are read, checked and parsed here, once, so a bad key fails at start-up, not
    mid-batch. t= is ``clock``'s time in whole seconds (dkimpy's choice: the wall clock).
    Thread-safe: ``sign`` keeps no state between calls, so ``asyncio.to_thread`` may share it.
    """

    def __init__(self, configs: Sequence[DKIMConfig], clock: Clock | None = None) -> None:
        self._keys = tuple(_load_key(config) for config in configs)
        self._signing = tuple(key.signing for key in self._keys)
        self._clock: Clock = clock or SystemClock()

    def __repr__(self) -> str:
        keys = ", ".join(f"{k.config.selector}._domainkey.{k.config.domain}" for k in self._keys)
        return f"DKIMSigner([{keys}])"

    @property
    def domains(self) -> tuple[str, ...]:
        """The signing domains (d=), each once, in configuration order."""
        return tuple(dict.fromkeys(key.config.domain for key in self._keys))

    def sign(self, message: bytes) -> bytes:
        """Return ``message`` with one DKIM-Signature header per key prepended.

        Nothing after the new headers changes. ``message`` is expected to use CRLF line ends
        (``as_bytes(policy=email.policy.SMTP)``); an LF-only message gets LF-ended headers.
        """
        if not self._keys:
            return message
        timestamp = int(self._clock.now().timestamp())
        try:
            # One parse, body hash and header hash prefix serve every key.
            signatures = signature_headers(message, self._signing, _SIGNED, timestamp)
        except MessageFormatError as exc:
            # The text may quote a header line, never the key: keys were validated above.
            raise MailerError(f"DKIM signing failed: {exc}") from exc
        return b"".join(signatures) + message
