"""VERP tokens: they name the message and the one recipient, and a forged one is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.errors import LinkInvalid
from mailer.outbound.verp import VerpMatch, derive_key, issue_verp, verify_verp, verp_uid

KEY = derive_key(b"master", "verp")
UID = "0123456789abcdef0123"
SENT_TO = ["ap@globex.example", "billing@globex.example"]


def test_round_trip() -> None:
    address = issue_verp(UID, key=KEY, domain="bounce.example", recipient="ap@globex.example")
    assert address.startswith(f"bounces+{UID}-")
    assert address.endswith("@bounce.example")
    assert "globex" not in address  # the recipient is proved, not written in the return path
    assert len(address.partition("@")[0]) <= 64  # RFC 5321 s4.5.3.1.1 local-part limit
    assert verify_verp(address, key=KEY, recipients=SENT_TO) == VerpMatch(UID, SENT_TO[0])
    assert verp_uid(address) == UID


def test_each_recipient_has_its_own_token() -> None:
    tokens = [issue_verp(UID, key=KEY, domain="b.example", recipient=r) for r in SENT_TO]
    assert len(set(tokens)) == 2
    for token, recipient in zip(tokens, SENT_TO, strict=True):
        assert verify_verp(token, key=KEY, recipients=SENT_TO).recipient == recipient
        # Checked against the other recipient alone, a token proves nothing.
        other = [r for r in SENT_TO if r != recipient]
        with pytest.raises(LinkInvalid):
            verify_verp(token, key=KEY, recipients=other)


def test_a_token_from_before_the_upgrade_names_the_message_only() -> None:
    legacy = issue_verp(UID, key=KEY, domain="b.example")  # the MAC over the uid alone
    assert verify_verp(legacy, key=KEY, recipients=SENT_TO) == VerpMatch(UID, None)
    assert verify_verp(legacy, key=KEY) == VerpMatch(UID, None)


def test_case_and_brackets_are_tolerated() -> None:
    address = issue_verp("abcdef0123456789abcd", key=KEY, domain="b.example", recipient="A@x.test")
    match = verify_verp(f"<{address.upper()}>", key=KEY, recipients=["a@x.test"])
    assert match == VerpMatch("abcdef0123456789abcd", "a@x.test")


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
    address = issue_verp(UID, key=KEY, domain="b.example", recipient=SENT_TO[0])
    with pytest.raises(LinkInvalid):
        verify_verp(mutate(address), key=KEY, recipients=SENT_TO)  # type: ignore[operator]


def test_other_key_refused() -> None:
    address = issue_verp(UID, key=KEY, domain="b.example", recipient=SENT_TO[0])
    with pytest.raises(LinkInvalid):
        verify_verp(address, key=derive_key(b"master", "links"), recipients=SENT_TO)


@given(st.emails(), st.emails())
def test_a_token_binds_exactly_its_recipient(mine: str, other: str) -> None:
    address = issue_verp(UID, key=KEY, domain="b.example", recipient=mine)
    assert verify_verp(address, key=KEY, recipients=[other, mine]).recipient in (
        mine.lower(),
        other.lower(),  # only when the two are the same address in another case
    )
    if mine.lower() != other.lower():
        with pytest.raises(LinkInvalid):
            verify_verp(address, key=KEY, recipients=[other])
