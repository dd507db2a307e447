"""PURE: one bank statement line, whatever the format, and reading a statement file into them.

camt.053 (statement), camt.054 (debit/credit notification) and SWIFT MT940 all say the same few
things about a transfer; :class:`StatementLine` is that common part, read by
``mailer.ledger.camt`` and ``mailer.ledger.mt940_reader``. What it is matched to is
``mailer.ledger.bank_matching``'s question.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum


class StatementError(ValueError):
    """The file is not a statement we can read: the reason, in one line."""


class Direction(StrEnum):
    CREDIT = "credit"  # money in
    DEBIT = "debit"  # money out: fees, refunds, a returned transfer


@dataclass(frozen=True)
class StatementLine:
    """One booked entry of a statement (or one transaction of a batch-booked entry).

    ``entry_ref`` is the bank's own reference of the entry (camt ``AcctSvcrRef``, else
    ``NtryRef``; MT940 the bank reference of :61:); with ``account``, ``booked_on`` and
    ``amount_minor`` it keys the line, so importing a statement again finds every line stored.
    ``references`` are the structured creditor references (``CdtrRefInf/Ref``) and
    ``remittance`` the free text (``Ustrd``, MT940 :86:), where an RF reference may sit too.
    """

    account: str  # the statement's account: IBAN, or the bank's other id
    entry_ref: str
    booked_on: date
    amount_minor: int  # always positive; ``direction`` says which way
    currency: str
    direction: Direction
    reversal: bool = False  # camt RvslInd, MT940 RC/RD, or a return (RtrInf)
    references: tuple[str, ...] = ()
    remittance: str = ""
    debtor_name: str | None = None
    debtor_iban: str | None = None
    end_to_end_id: str | None = None
    return_reason: str | None = None
    source: str = ""  # "camt.053", "camt.054", "mt940"
    extra: dict[str, str] = field(default_factory=dict, compare=False)


def fallback_ref(*parts: object) -> str:
    """An entry reference for a line the bank gave none ("NONREF"): a hash of what it says, the
    same on every import of the same file."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:24]
    return f"h:{digest}"


def parse_statement(data: bytes) -> list[StatementLine]:
    """Every booked line of a camt.053, camt.054 or MT940 file, told apart by its content."""
    from mailer.ledger import camt, mt940_reader

    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:200]
    if head.startswith(b"<"):
        return camt.parse_camt(data)
    if head.startswith((b":20:", b"{1:", b":940:")) or b"\n:20:" in data[:400]:
        return mt940_reader.parse_mt940(data)
    raise StatementError("not a camt.053/camt.054 XML file nor an MT940 statement")
