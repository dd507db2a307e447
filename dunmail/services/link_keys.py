"""The keys that prove a token is ours: the link keys (a download or payment link in an email)
and the VERP key (the address a bounce comes back to).

One part of :class:`dunmail.app.Services`, derived from the secret key when the services are
wired (mailer/outbound/verp.py ``derive_key``); the web app verifies links with it and tests
forge tokens with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LinkKeys:
    """The link keys, the signing one first (then old ones, during a rotation), and the VERP key."""

    # Keys that verify a link token; a list so a test can add an old key to a running app.
    keys: list[bytes] = field(repr=False)
    verp_key: bytes = field(repr=False)  # checks the VERP token of returned mail

    @property
    def signing(self) -> bytes:
        """The key new link tokens are signed with."""
        return self.keys[0]
