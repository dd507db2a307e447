"""End to end through a real MTA: OpenDKIM, as Postfix's milter, passes both of our signatures.

The engine sends one email with its real SMTP transport to a private Postfix on loopback
(tests/postfix.py) whose ``smtpd_milters`` is a private, verify-only OpenDKIM
(tests/opendkim.py; ``TestPublicKeys`` serves the public keys, so no DNS). The tenant signs
with two keys, rsa-sha256 and ed25519-sha256 (RFC 8463 dual signing). Postfix delivers to a
Maildir, and the test reads the ``Authentication-Results`` header (RFC 8601) OpenDKIM added.

Debian 12's OpenDKIM 2.11.0~beta2 verifies ed25519-sha256 (``opendkim -V`` lists it among the
"Supported signing algorithms"), so both signatures are checked by it here; dkimpy's own
verifier is not involved, unlike tests/test_dkim.py. The negative control resends the
delivered message with one body byte changed, beside an unchanged copy, so a verifier that
said "pass" to anything could not make this file pass. Skips, saying why, without Postfix or
OpenDKIM, or when not root.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from dunmail.app import Services
from mailer.config import DKIMConfig
from mailer.outbound.dkim import dns_record, generate_key
from mailer.outbound.models import MessageStatus
from tests import opendkim, postfix
from tests.postfix import KNOWN_MAILBOX, PrivatePostfix

# Each test starts an MTA and a milter: seconds, not milliseconds. SQLite is enough; what is
# checked is the bytes on the wire.
pytestmark = pytest.mark.slow
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

AUTHSERV_ID = "opendkim.dunmail.test"  # ours alone, so the header cannot come from elsewhere
SIGNING_DOMAIN = "acme.example"
KEYS: tuple[tuple[str, str], ...] = (("rsa1", "rsa-sha256"), ("ed1", "ed25519-sha256"))
DOC: dict[str, Any] = {
    "customers": [
        {
            "id": "C-1",
            "name": "Globex",
            "locale": "en",
            "time_zone": "UTC",
            "contacts": [{"email": KNOWN_MAILBOX, "name": "Bill", "roles": ["billing", "ap"]}],
        }
    ],
    "invoices": [
        {
            "id": "i-1",
            "number": "INV-1",
            "customer": "C-1",
            "currency": "EUR",
            "issued_at": "2026-03-01",
            "due_at": "2026-03-31",
            "status": "open",
            "lines": [{"description": "Support", "quantity": "1", "unit_price": "120.00"}],
        }
    ],
}


@dataclass
class VerifyingMTA:
    """Postfix with OpenDKIM in front of its Maildirs, and the DKIM keys OpenDKIM knows."""

    postfix: PrivatePostfix
    keys: list[dict[str, str]]


@pytest.fixture(scope="module")
def mta(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VerifyingMTA]:
    """Fresh keys, an OpenDKIM that knows their public halves, and a Postfix that asks it.

    One pair for the module (starting and stopping them is most of its run time); tests tell
    their mail apart by Message-ID.
    """
    for reason in (postfix.unavailable_reason(), opendkim.unavailable_reason()):
        if reason:
            pytest.skip(reason)
    key_dir = tmp_path_factory.mktemp("keys")
    keys = [
        {
            "domain": SIGNING_DOMAIN,
            "selector": selector,
            "algorithm": algorithm,
            "key_file": str(key_dir / f"{selector}.key"),
        }
        for selector, algorithm in KEYS
    ]
    public: dict[str, str] = {}
    for key in map(DKIMConfig.model_validate, keys):
        # What `dunmail init` does in env = "dev", done first: the milter must know the keys
        # before Postfix starts, and the engine's config needs Postfix's port.
        generate_key(key.key_file, key.algorithm)
        # The record an operator publishes, derived from the key file as the CLI does.
        public[f"{key.selector}._domainkey.{key.domain}"] = dns_record(key)
    with ExitStack() as stack:
        try:
            milter = stack.enter_context(opendkim.private_opendkim(public, authserv_id=AUTHSERV_ID))
            server = stack.enter_context(postfix.private_postfix(milter=milter.milter))
        except (opendkim.OpenDKIMError, postfix.PostfixError) as exc:
            pytest.skip(f"private Postfix + OpenDKIM did not start: {exc}")
        yield VerifyingMTA(postfix=server, keys=keys)


@pytest.fixture
def transport() -> None:
    """This module's services send over SMTP: no transport given, the real SMTPTransport."""
    return None


@pytest.fixture
def services_config(mta: VerifyingMTA) -> dict[str, Any]:
    """This module's shared ``services``: relaying to the private Postfix, for a tenant that
    signs with both keys."""
    tenant = {"name": "Acme Supplies", "email": f"ar@{SIGNING_DOMAIN}", "dkim": mta.keys}
    return {"relay": {"port": mta.postfix.port, "timeout_seconds": 10}, "tenants": {"acme": tenant}}


@pytest.fixture
def services(services: Services) -> Services:
    """conftest's ``services`` on this module's settings, with DOC imported."""
    assert services.ledger.import_document(DOC, tenant="acme").errors == []
    return services


def _headers(raw: bytes) -> email.message.Message:
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    return parser.parsebytes(raw)


def dkim_results(raw: bytes) -> dict[tuple[str, str], str]:
    """(header.s, header.a) -> result for each dkim= entry of our verifier's header.

    There must be exactly one Authentication-Results from ``AUTHSERV_ID`` (RFC 8601 s2.2),
    and one entry per signature: a missing or repeated one is itself a failure.
    """
    ours = [
        " ".join(str(value).split())  # unfolded
        for value in _headers(raw).get_all("Authentication-Results", [])
        if str(value).split(";", 1)[0].split()[0] == AUTHSERV_ID
    ]
    assert len(ours) == 1, f"expected one Authentication-Results from {AUTHSERV_ID}: {ours}"
    found: dict[tuple[str, str], str] = {}
    for entry in ours[0].split(";")[1:]:
        method = re.match(r"\s*dkim=(\w+)", entry)
        if method is None:
            continue  # dkim-atps=, or another method
        algorithm = re.search(r"\bheader\.a=(\S+)", entry)
        selector = re.search(r"\bheader\.s=(\S+)", entry)
        assert algorithm and selector, entry
        signature = (selector.group(1), algorithm.group(1))
        assert signature not in found, ours[0]
        found[signature] = method.group(1)
    return found


def _expect(result: str) -> dict[tuple[str, str], str]:
    return dict.fromkeys(KEYS, result)


def _algorithms(raw: bytes) -> list[str]:
    """The a= tag of each DKIM-Signature, in header order."""
    return [
        match.group(1)
        for value in _headers(raw).get_all("DKIM-Signature", [])
        if (match := re.search(r"\ba=([\w-]+)", str(value)))
    ]


def _delivered(mta: VerifyingMTA, message_id: str, *, count: int) -> list[bytes]:
    """Poll until ``count`` copies of ``message_id`` are in the mailbox; fail with the log."""
    server = mta.postfix
    deadline = time.monotonic() + 15
    while True:
        found = [
            raw
            for raw in map(Path.read_bytes, server.mail_for(server.customer, KNOWN_MAILBOX))
            if _headers(raw)["Message-ID"] == message_id
        ]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(found)} of {count} copies of {message_id} delivered\n"
                f"--- postqueue -p ---\n{server.queue()}--- maillog ---\n{server.log_tail()}"
            )
        time.sleep(0.1)


@SQLITE_ONLY
async def test_opendkim_milter_passes_rsa_and_ed25519(
    services: Services, mta: VerifyingMTA
) -> None:
    message = await services.sending.send_invoice("INV-1", kind="new_invoice", tenant="acme")
    # With milter_default_action = tempfail, a milter that failed would be a 4xx here.
    assert message.status is MessageStatus.SENT, message.last_error

    (raw,) = _delivered(mta, f"<{message.uid}@{SIGNING_DOMAIN}>", count=1)
    headers = _headers(raw)
    assert _algorithms(raw) == [algorithm for _, algorithm in KEYS]
    assert dkim_results(raw) == _expect("pass"), headers["Authentication-Results"]


def _resendable(delivered: bytes, *, control: str) -> bytes:
    """The delivered message as the engine sent it, with CRLF, marked with an unsigned header.

    Postfix and OpenDKIM prepend Return-Path, X-Original-To, Delivered-To, Authentication-
    Results and Received; all of them precede the first DKIM-Signature, which the engine puts
    first. Delivered-To must go in any case, or Postfix would refuse a mail loop.
    """
    crlf = delivered.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    start = crlf.index(b"\r\nDKIM-Signature:") + 2
    return f"X-Control: {control}\r\n".encode("ascii") + crlf[start:]


def _tamper(message: bytes) -> bytes:
    """Change one byte of the body: the invoice number in the text part, INV-1 -> INV-7.

    Not whitespace, which relaxed body canonicalization (RFC 6376 s3.4.4) would forgive.
    """
    head, sep, body = message.partition(b"\r\n\r\n")
    where = body.index(b"INV-1")
    return head + sep + body[: where + 4] + b"7" + body[where + 5 :]


@SQLITE_ONLY
async def test_a_body_byte_changed_after_signing_fails_both(
    services: Services, mta: VerifyingMTA
) -> None:
    message = await services.sending.send_invoice("INV-1", kind="new_invoice", tenant="acme")
    assert message.status is MessageStatus.SENT, message.last_error
    message_id = f"<{message.uid}@{SIGNING_DOMAIN}>"
    (sent,) = _delivered(mta, message_id, count=1)

    intact = _resendable(sent, control="intact")
    tampered = _tamper(_resendable(sent, control="tampered"))
    # One byte differs in the body (1 -> 7); the X-Control value is two bytes longer.
    assert len(tampered) == len(intact) + 2
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=mta.postfix.port, timeout=10) as client:
        for data in (intact, tampered):
            await client.sendmail(f"ar@{SIGNING_DOMAIN}", [KNOWN_MAILBOX], data)

    delivered = _delivered(mta, message_id, count=3)
    copies = {str(_headers(raw)["X-Control"]): raw for raw in delivered if b"X-Control" in raw}
    assert set(copies) == {"intact", "tampered"}
    # The unchanged copy still passes, so the failure below is the one byte and nothing else.
    assert dkim_results(copies["intact"]) == _expect("pass")
    assert dkim_results(copies["tampered"]) == _expect("fail")


async def test_an_unreachable_milter_is_a_tempfail_not_unchecked_mail() -> None:
    """The harness itself: with the verifier gone, Postfix refuses instead of delivering."""
    reason = postfix.unavailable_reason()
    if reason:
        pytest.skip(reason)
    nothing_listens = f"inet:127.0.0.1:{postfix.free_port()}"
    with postfix.private_postfix(milter=nothing_listens) as server:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, timeout=10) as client:
            with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
                await client.sendmail(
                    f"ar@{SIGNING_DOMAIN}",
                    [KNOWN_MAILBOX],
                    b"From: ar@acme.example\r\nSubject: unchecked\r\n\r\nbody\r\n",
                )
        # "451 4.7.1 Service unavailable - try again later", from milter_default_action.
        assert (refused.value.code, refused.value.message[:5]) == (451, "4.7.1"), refused.value
        # Postfix refuses at whichever stage first asks the milter (CONNECT, EHLO or MAIL).
        assert re.search(r"milter-reject: (?:CONNECT|EHLO|MAIL) from", server.log()), (
            server.log_tail()
        )
        assert server.mail_for(server.customer, KNOWN_MAILBOX) == []
