"""PURE: the one parser of email addresses, for what we store and for what we send.

Imported contacts, tenant and relay addresses and outbox recipients all go through
:func:`parse_addr_spec`, so an address the ledger accepted is always one compose can send to.
Sign-in names go through :func:`canonical_login`, the one spelling the login throttle counts
under and the user lookup searches for.
"""

from __future__ import annotations

import re
import unicodedata
from email.headerregistry import Address
from email.utils import parseaddr

import idna

from mailer.errors import AddressError
from mailer.outbound.compose import safe_header

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


# Default_Ignorable_Code_Point (Unicode 14.0, the version of Python 3.11's unicodedata), from
# DerivedCoreProperties.txt: invisible in every rendering (soft hyphen, zero-width space and
# joiners, bidi marks and isolates, variation selectors, tag characters, fillers), so a name with
# them looks exactly like one without. Python has no lookup of this property; hence the table.
_IGNORABLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)
# UTS #46 section 2.3: the ideographic full stop and its fullwidth and halfwidth forms separate
# labels like "." does. (NFKC already turns U+FF0E into "." and U+FF61 into U+3002.)
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def canonical_login(value: str) -> str:
    """The one spelling of a sign-in name: what users are stored under, looked up by and
    throttled by. Total: any text has one (a malformed name is throttled all the same).

    Invisible (default-ignorable) code points are removed, then NFKC (fullwidth and other
    compatibility forms become their plain letters), lower case, dot variants as ".", and the
    domain as IDNA A-labels (UTS #46, the ``idna`` package). A name that differs only in what a
    reader cannot see, or in what sign-in treats as equal, has the same spelling: the throttle
    must never count apart two names that reach the same account.
    """
    text = value.strip()
    for _ in range(3):  # NFKC and lower case can each undo the other's work, in rare letters
        mapped = _IGNORABLE.sub("", text)
        mapped = unicodedata.normalize("NFKC", mapped).lower()
        mapped = unicodedata.normalize("NFKC", mapped).translate(_DOTS).strip()
        if mapped == text:
            break
        text = mapped
    local, at, domain = text.rpartition("@")
    if not at or domain.isascii():
        return text
    try:
        domain = idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        pass  # not a valid IDN: no account has it, but its guesses still count under this text
    return f"{local}@{domain}"
