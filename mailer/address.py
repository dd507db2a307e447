"""PURE: the one parser of email addresses, for what we store and for what we send.

Imported contacts, tenant and relay addresses and outbox recipients all go through
:func:`parse_addr_spec`, so an address the ledger accepted is always one compose can send to.
"""

from __future__ import annotations

import re
from email.headerregistry import Address
from email.utils import parseaddr

from mailer.compose import safe_header
from mailer.errors import AddressError

_DOMAIN = re.compile(
    r"(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,63}|xn--[a-z0-9-]{1,59})"
)


# The common case, already canonical: dot-atoms of plain ASCII and a lower-case domain. Both
# stdlib parsers read such an address back unchanged, so it needs no round trip (the outbox
# checks every recipient of every email it queues; the full check costs ~60 us).
_PLAIN = re.compile(r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@" + _DOMAIN.pattern)


def parse_addr_spec(value: str) -> str:
    """A bare ``local@domain``, the domain lower-cased (IDNs as A-labels, "xn--...").

    Display names are not accepted. A-labels need no SMTPUTF8 (RFC 6531) from the relay. The
    domain needs a dot: a single label ("localhost") is not deliverable on the internet.

    Strict on purpose: CR/LF would be header injection (RFC 5322 s2.2) and spaces, commas or
    angle brackets mean someone pasted a list or a display name into the field.
    """
    if _PLAIN.fullmatch(value):
        return value
    if any(ch.isspace() or ord(ch) < 32 or ch in '<>,;"()[]\\' for ch in value):
        raise AddressError(f"not a single bare email address: {value!r}")
    local, at, domain = value.rpartition("@")
    if not at or not local or "@" in local:
        raise AddressError(f"not an email address (needs exactly one @): {value!r}")
    try:
        domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise AddressError(f"not an email address (bad domain {domain!r}): {value!r}") from None
    if not _DOMAIN.fullmatch(domain):
        raise AddressError(f"not an email address (bad domain {domain!r}): {value!r}")
    spec = f"{local}@{domain}"
    try:
        parsed = Address(addr_spec=spec)
    except (ValueError, IndexError):
        raise AddressError(f"not an email address: {value!r}") from None
    # Both stdlib parsers must read back exactly what we store, or the two would disagree
    # about who the recipient is once the address is in a header.
    if parsed.addr_spec != spec or parseaddr(spec)[1] != spec:
        raise AddressError(f"not an email address: {value!r}")
    return spec


def make_address(addr_spec: str, display_name: str = "") -> Address:
    """A header address: :func:`parse_addr_spec` of ``addr_spec``, with a display name.

    CR, LF and NUL in either part are a :class:`~mailer.errors.HeaderInjectionError` (checked
    first, so an injection attempt is reported as one); any other fault is an ``AddressError``.
    Specials in the display name are fine: the header policy quotes them.
    """
    safe_header(display_name, name="display name")
    safe_header(addr_spec, name="address")
    local, _, domain = parse_addr_spec(addr_spec).rpartition("@")
    try:
        return Address(display_name=display_name, username=local, domain=domain)
    except (ValueError, IndexError) as exc:
        raise AddressError(f"not an email address: {addr_spec!r} ({exc})") from exc
