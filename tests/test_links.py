"""Signed, expiring, tenant-scoped links (``mailer/outbound/links.py``): what a forged or stale one
gets."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mailer.errors import LinkExpired, LinkInvalid
from mailer.outbound.links import DownloadLinks, issue_link, verify_link

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

KEY = b"k" * 32


def _token(**changes: Any) -> str:
    args: dict[str, Any] = {
        "purpose": "download",
        "tenant_id": 7,
        "document": "invoice:42",
        "version": 3,
        "key": KEY,
        "expires_at": NOW + timedelta(days=1),
    } | changes
    return issue_link(
        args["purpose"],
        args["tenant_id"],
        args["document"],
        args["version"],
        key=args["key"],
        expires_at=args["expires_at"],
    )


def test_link_round_trip() -> None:
    claims = verify_link(_token(), key=KEY, now=NOW)
    assert (claims.purpose, claims.tenant_id, claims.document, claims.version) == (
        "download",
        7,
        "invoice:42",
        3,
    )
    assert claims.expires_at == NOW + timedelta(days=1)


def test_link_expires() -> None:
    token = _token()
    verify_link(token, key=KEY, now=NOW + timedelta(hours=23))
    with pytest.raises(LinkExpired):
        verify_link(token, key=KEY, now=NOW + timedelta(days=1))


def test_link_with_another_key_is_invalid() -> None:
    with pytest.raises(LinkInvalid):
        verify_link(_token(), key=b"other", now=NOW)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: t[:-2], id="truncated-mac"),
        pytest.param(lambda t: t.replace(".", ""), id="no-separator"),
        pytest.param(lambda t: t + ".x", id="extra-part"),
        pytest.param(lambda t: "A" + t[1:] if t[0] != "A" else "B" + t[1:], id="payload-edited"),
        pytest.param(lambda t: "é" + t, id="non-ascii"),
        pytest.param(lambda t: t * 20, id="huge"),
        pytest.param(lambda t: "", id="empty"),
    ],
)
def test_tampered_links_are_invalid(mangle: Any) -> None:
    with pytest.raises(LinkInvalid):
        verify_link(mangle(_token()), key=KEY, now=NOW)


def test_a_payload_swapped_between_tokens_fails() -> None:
    mine, other = _token(), _token(version=4)
    forged = other.split(".")[0] + "." + mine.split(".")[1]
    with pytest.raises(LinkInvalid):
        verify_link(forged, key=KEY, now=NOW)


def test_signed_but_malformed_payload_is_invalid() -> None:

    payload = base64.urlsafe_b64encode(b'{"p":"download"}').rstrip(b"=").decode()
    mac = (
        base64.urlsafe_b64encode(hmac.new(KEY, payload.encode(), hashlib.sha256).digest())
        .rstrip(b"=")
        .decode()
    )
    with pytest.raises(LinkInvalid):
        verify_link(f"{payload}.{mac}", key=KEY, now=NOW)


def test_naive_expiry_is_refused() -> None:
    with pytest.raises(ValueError):
        _token(expires_at=datetime(2026, 3, 3))


def test_download_links_expire_after_their_lifetime() -> None:
    links = DownloadLinks(key=KEY, base_url="https://r.example/d/", lifetime=timedelta(days=2))
    url = links.url(7, "invoice:42", 3, now=NOW)
    token = url.removeprefix("https://r.example/d/")
    assert verify_link(token, key=KEY, now=NOW + timedelta(days=1)).version == 3
    with pytest.raises(LinkExpired):
        verify_link(token, key=KEY, now=NOW + timedelta(days=2))
