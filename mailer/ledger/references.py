"""PURE: ISO 11649 structured creditor references (``RF…``) for invoices and customers.

A customer who pays by bank transfer copies the reference into the transfer; the bank hands it
back in the statement (camt ``CdtrRefInf/Ref`` or free text), and the import maps it back to the
document it names without guessing. The check digits and the validation are python-stdnum's
(``stdnum.iso11649``, ISO 7064 MOD 97-10); this module only decides what the 21 characters after
``RF`` + check digits say:

    kind (``I`` invoice, ``C`` customer) + length of the tenant id (one base-36 digit)
    + the tenant id + the invoice's or customer's id, both base 36

Both ids are the ledger's own integer keys, which never change and never repeat in one engine,
so a reference is stable for the life of the document and two tenants (or an invoice and a
customer) can never share one. ``RF18 I1 3 2X`` reads as "invoice 105 of tenant 3".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from stdnum import iso11649
from stdnum.exceptions import ValidationError
from stdnum.iso7064 import mod_97_10

_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_BODY_MAX = 21  # ISO 11649: at most 21 characters after "RF" and the two check digits
# An RF reference in free text, as banks and people write it: any case, grouped by spaces,
# dashes or nothing ("RF18 5390 0754 7034", "rf18-5390-0754-7034", "RF18539007547034").
# A group that starts "RF" and two digits after a space is the next reference, not this one's.
_IN_TEXT = re.compile(
    r"(?<![0-9A-Z])RF[0-9]{2}(?:(?:[ \-](?!RF[0-9]{2}))?[0-9A-Z]){1,21}(?![0-9A-Z])", re.I
)


class ReferenceKind(StrEnum):
    """What a reference names: one invoice, or a customer (a batch payment of its invoices)."""

    INVOICE = "I"
    CUSTOMER = "C"


@dataclass(frozen=True)
class Reference:
    """A reference read back: whose (tenant id), what kind, and the ledger id it names."""

    tenant_id: int
    kind: ReferenceKind
    id: int

    @property
    def text(self) -> str:
        """The compact form, as the bank compares it (``RF18I132X``)."""
        return build_reference(self.tenant_id, self.kind, self.id)


class ReferenceError(ValueError):
    """Not one of our references: a bad check digit, a foreign creditor's RF, or no RF at all."""


def _base36(number: int) -> str:
    if number < 1:
        raise ValueError(f"ids are positive integers, not {number}")
    out = ""
    while number:
        number, digit = divmod(number, 36)
        out = _DIGITS[digit] + out
    return out


def build_reference(tenant_id: int, kind: ReferenceKind, entity_id: int) -> str:
    """The compact ISO 11649 reference of ``kind`` ``entity_id`` of ``tenant_id``."""
    tenant = _base36(tenant_id)
    body = f"{kind.value}{_DIGITS[len(tenant)]}{tenant}{_base36(entity_id)}"
    if len(body) > _BODY_MAX:
        raise ValueError(f"ids too large for an ISO 11649 reference: {body!r}")
    return f"RF{mod_97_10.calc_check_digits(body + 'RF')}{body}"


def invoice_reference(tenant_id: int, invoice_id: int) -> str:
    """The reference printed on an invoice: pays exactly that invoice."""
    return build_reference(tenant_id, ReferenceKind.INVOICE, invoice_id)


def customer_reference(tenant_id: int, customer_id: int) -> str:
    """The customer's own reference: a batch payment of its open invoices, oldest first."""
    return build_reference(tenant_id, ReferenceKind.CUSTOMER, customer_id)


def format_reference(reference: str) -> str:
    """In groups of four for print (``RF18 I132 X``), as ISO 11649 recommends."""
    return str(iso11649.format(reference))


def parse_reference(text: str) -> Reference:
    """Map a reference as received (spaces, dashes, lower case) back to what it names.

    Raises :class:`ReferenceError` saying why when it is not a valid RF reference or not one
    this engine issued.
    """
    try:
        compact = str(iso11649.validate(text))
    except ValidationError as exc:
        raise ReferenceError(
            f"{text.strip()[:40]!r} is not an ISO 11649 reference: {exc}"
        ) from None
    body = compact[4:]
    try:
        kind = ReferenceKind(body[:1])
        width = _DIGITS.index(body[1:2]) if len(body) > 1 else 0
        tenant, entity = body[2 : 2 + width], body[2 + width :]
        if not width or len(tenant) != width or not entity or "0" in (tenant[0], entity[0]):
            raise ValueError
        return Reference(int(tenant, 36), kind, int(entity, 36))
    except ValueError:
        raise ReferenceError(f"{compact} is a valid RF reference, but not one of ours") from None


def find_references(text: str) -> Iterator[Reference]:
    """Every reference of ours in free text (a transfer's unstructured remittance), in order."""
    yield from scan_references(text)[0]


def scan_references(text: str) -> tuple[list[Reference], list[str]]:
    """Our references in free text, and each RF-looking string that is not one (a mistyped
    check digit, another creditor's reference), so the clerk is told why nothing matched."""
    found: list[Reference] = []
    unreadable: list[str] = []
    for match in _IN_TEXT.finditer(text):
        groups = re.split(r"[ \-]", match.group(0))
        cuts = _cuts(groups)
        for end in cuts:
            try:
                found.append(parse_reference("".join(groups[:end])))
                break
            except ReferenceError:
                continue
        else:
            unreadable.append(" ".join(groups[: cuts[0]]))
    return found, unreadable


def _cuts(groups: list[str]) -> list[int]:
    """Where a reference printed in groups of four may end, most likely first.

    A match may run on into the next words ("RF18 I132 X INV 7"). A group longer than four
    is a word after the reference; a shorter one is its last group, unless it is a word
    ("INV"). Shorter cuts than these are never tried: a mistyped reference cut short can pass
    the check digits (one time in 97) as a *prefix* of itself, naming another document of the
    same tenant.
    """
    if len(groups[0]) > 4:
        return [1]  # written without spaces: the first group is the whole reference
    for i, group in enumerate(groups[1:], start=1):
        if len(group) > 4:
            return [i]
        if len(group) < 4:
            return [i + 1, i] if group.isalpha() and len(group) > 1 else [i + 1]
    return [len(groups)]
