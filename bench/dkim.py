"""DKIM signing: CPU per signed message, dkimpy (before) against the fast signer (now).

    PYTHONPATH=. python -m bench.dkim [--signatures 2000]

Run it as a module from the repository root: run by path, ``bench/`` comes first on
``sys.path`` and ``import dkim`` would find this file instead of dkimpy.

The message is pipeline-sized (about 8 KB: a multipart/alternative reminder, CRLF, 8-bit text
as quoted-printable, the headers DKIMSigner signs). Each case signs it ``--signatures`` times
with freshly generated keys; figures are CPU time of this process (``time.process_time``) per
signed message, best of three rounds:

* dkimpy: what DKIMSigner did before: one ``dkim.DKIM`` parse, then ``sign`` per key, with
  mailer/outbound/dkim.py's OpenSSL RSA and memoised PEM parse under it (not pure-Python RSA);
* fast: ``DKIMSigner.sign`` through mailer/outbound/dkim_fast.py, the same h= list and bytes;
* the private-key operation alone (OpenSSL over a SHA-256 digest), the floor for either.

Results go to stdout and ``bench/results/dkim.json`` (a ``table`` for bench/run_all.py).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

import mailer.outbound.dkim as mailer_dkim
from mailer.clock import FixedClock
from mailer.config import DKIMAlgorithm, DKIMConfig
from mailer.outbound.dkim_fast import headers_to_sign, line_separator

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CASES = {
    "RSA-2048": [DKIMAlgorithm.RSA_SHA256],
    "Ed25519": [DKIMAlgorithm.ED25519_SHA256],
    "RSA-2048 + Ed25519": [DKIMAlgorithm.RSA_SHA256, DKIMAlgorithm.ED25519_SHA256],
}


def pipeline_message() -> bytes:
    """A reminder the size the pipeline sends: about 8 KB, text and HTML, CRLF."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = "Acme Supplies <ar@acme.example>"
    msg["To"] = "Müller GmbH <ap@customer.example>"
    msg["Subject"] = "Reminder: invoice INV-1042 (EUR 1,250.00) is 14 days overdue"
    msg["Date"] = "Mon, 02 Mar 2026 09:00:00 +0000"
    msg["Message-ID"] = "<r1.inv-1042.8f3a@acme.example>"
    msg["Reply-To"] = "ar@acme.example"
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Dunmail-Message"] = "8f3a2c1e-0b7d-4d7e-9a51-1f0c2e9b7a10"
    msg["List-Unsubscribe"] = "<https://acme.example/u/8f3a2c1e>, <mailto:u+8f3a@acme.example>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    line = "Ihre Rechnung INV-1042 über 1.250,00 € war am 16. Februar 2026 fällig. "
    text = (line * 3 + "\n") * 14
    msg.set_content(text, cte="quoted-printable")
    html = "".join(f'<p style="margin:0 0 12px;color:#222">{line * 3}</p>\n' for _ in range(14))
    msg.add_alternative(f"<html><body>{html}</body></html>", subtype="html", cte="quoted-printable")
    return msg.as_bytes()


def dkimpy_signer(keys: list[Any]) -> Callable[[bytes], bytes]:
    """DKIMSigner.sign as it was: dkimpy for everything but the RSA arithmetic."""

    def sign(message: bytes) -> bytes:
        parsed = dkim.DKIM(message, linesep=line_separator(message))
        include = headers_to_sign((name for name, _ in parsed.headers), mailer_dkim._SIGNED)
        signatures = [
            parsed.sign(
                key.selector,
                key.domain,
                key.secret,
                signature_algorithm=key.algorithm,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=include,
            )
            for key in keys
        ]
        return b"".join(signatures) + message

    return sign


def per_call_us(work: Callable[[], object], calls: int) -> float:
    """Microseconds of CPU per call of ``work``, best of three rounds."""
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(calls):
            work()
        best = min(best, (time.process_time() - start) / calls * 1e6)
    return best


def measure(calls: int) -> dict[str, Any]:
    message = pipeline_message()
    figures: dict[str, Any] = {"message_bytes": len(message)}
    with tempfile.TemporaryDirectory() as tmp:
        configs = {
            algorithm: DKIMConfig(
                domain="acme.example",
                selector=algorithm.value.split("-")[0],
                key_file=Path(tmp) / f"{algorithm.value}.key",
                algorithm=algorithm,
            )
            for algorithm in DKIMAlgorithm
        }
        for config in configs.values():
            mailer_dkim.generate_key(config.key_file, config.algorithm)
        for case, algorithms in CASES.items():
            chosen = [configs[a] for a in algorithms]
            fast = mailer_dkim.DKIMSigner(chosen, clock=FixedClock(NOW))
            reference = dkimpy_signer([mailer_dkim._load_key(c) for c in chosen])
            figures[case] = {
                "dkimpy_us": per_call_us(functools.partial(reference, message), calls),
                "fast_us": per_call_us(functools.partial(fast.sign, message), calls),
            }
    digest = hashlib.sha256(message).digest()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    pkcs1, prehashed = padding.PKCS1v15(), Prehashed(hashes.SHA256())
    figures["rsa_op_us"] = per_call_us(lambda: rsa_key.sign(digest, pkcs1, prehashed), calls)
    figures["ed25519_op_us"] = per_call_us(lambda: ed_key.sign(digest), calls)
    return figures


def build_table(r: dict[str, Any]) -> list[dict[str, str]]:
    rows = []
    for case in CASES:
        f = r[case]
        rows.append(
            {
                "what": f"DKIM sign, {case}, dkimpy (before)",
                "measured": f"{f['dkimpy_us']:.0f} µs CPU/msg",
                "target": "-",
                "notes": f"{r['message_bytes']} B message; "
                + ("dkimpy, pynacl" if case == "Ed25519" else "dkimpy with OpenSSL RSA under it"),
            }
        )
        rows.append(
            {
                "what": f"DKIM sign, {case}, fast signer",
                "measured": f"{f['fast_us']:.0f} µs CPU/msg",
                "target": "< dkimpy",
                "notes": f"{f['dkimpy_us'] / f['fast_us']:.1f}x less CPU; same header bytes; "
                f"best of 3 x {r['signatures']}",
            }
        )
    rows.append(
        {
            "what": "DKIM private-key operation alone",
            "measured": f"RSA-2048 {r['rsa_op_us']:.0f} µs, Ed25519 {r['ed25519_op_us']:.0f} µs",
            "target": "-",
            "notes": "OpenSSL over a SHA-256 digest: the floor for any signer",
        }
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--signatures", type=int, default=2000)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"dkim.py: ignoring {' '.join(unknown)}")
    result: dict[str, Any] = {"python": platform.python_version(), "signatures": args.signatures}
    result.update(measure(args.signatures))
    result["table"] = build_table(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dkim.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print("| what | measured | target | notes |\n|---|---|---|---|")
    for row in result["table"]:
        print("| " + " | ".join(row.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
