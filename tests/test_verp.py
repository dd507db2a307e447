"""VERP tokens: they name the message and a forged one is refused."""

from __future__ import annotations

import pytest

from mailer.errors import LinkInvalid
from mailer.verp import derive_key, issue_verp, verify_verp

KEY = derive_key(b"master", "verp")


def test_round_trip() -> None:
    address = issue_verp("0123456789abcdef0123", key=KEY, domain="bounce.example")
    assert address.startswith("bounces+0123456789abcdef0123-")
    assert address.endswith("@bounce.example")
    assert len(address.partition("@")[0]) <= 64  # RFC 5321 s4.5.3.1.1 local-part limit
    assert verify_verp(address, key=KEY) == "0123456789abcdef0123"


def test_case_and_brackets_are_tolerated() -> None:
    address = issue_verp("abcdef0123456789abcd", key=KEY, domain="b.example")
    assert verify_verp(f"<{address.upper()}>", key=KEY) == "abcdef0123456789abcd"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda a: a.replace("bounces+0123", "bounces+1123"),  # another message's uid
        lambda a: a[:-20] + ("a" if a[-20] != "a" else "b") + a[-19:],  # flipped MAC char
        lambda a: "bounces+0123456789abcdef0123@b.example",  # no MAC at all
        lambda a: "someone@b.example",
    ],
)
def test_forgeries_refused(mutate: object) -> None:
    address = issue_verp("0123456789abcdef0123", key=KEY, domain="b.example")
    with pytest.raises(LinkInvalid):
        verify_verp(mutate(address), key=KEY)  # type: ignore[operator]


def test_other_key_refused() -> None:
    address = issue_verp("0123456789abcdef0123", key=KEY, domain="b.example")
    with pytest.raises(LinkInvalid):
        verify_verp(address, key=derive_key(b"master", "links"))
