"""Address clean-up for decoded reports; the one module allowed to use flanker (none needed yet)."""

from __future__ import annotations

from email.utils import parseaddr

from bounce.detectors.base import ADDRESS


def normalize_address(value: str) -> str | None:
    """``"Name" <User@Example.COM>`` -> ``user@example.com``; None when no address is there.

    Local parts are case-sensitive in theory (RFC 5321 s2.4) but never in practice, and bounce
    matching needs one spelling.
    """
    _, address = parseaddr(value)
    found = ADDRESS.search(address or value)
    return found.group(0).lower().strip(".") if found else None
