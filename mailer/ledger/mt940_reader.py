"""PURE: SWIFT MT940 statements into statement lines, through the ``mt-940`` library.

mt-940 reads the tags (:25: account, :60F: opening balance and its currency, :61: each entry,
:86: its details) and, with its post-processor, the German ``?20``…``?32`` sub-fields of :86:
(purpose, the other party's name and IBAN). Banks elsewhere write :86: as ``/TAG/value`` pairs
(``/REMI/`` remittance, ``/NAME/``, ``/IBAN/``, SWIFT's MT940 usage guidelines); those few
tags are read here. An RF reference is looked for in the remittance text either way.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

import mt940

from mailer.ledger.bank_statement import (
    Direction,
    StatementError,
    StatementLine,
    fallback_ref,
)
from mailer.ledger.money import to_minor

_SLASH_TAG = re.compile(r"/(REMI|NAME|IBAN|EREF|BENM|ORDP)/")
_NO_REF = frozenset({"", "NONREF", "NOTPROVIDED"})


def parse_mt940(data: bytes) -> list[StatementLine]:
    """Every :61: entry of every statement in the file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # MT940 is SWIFT's character set; many banks send Latin-1
    transactions = mt940.models.Transactions(
        # ?20-?29 joined with spaces: a reference split over two sub-fields stays readable;
        # ?31 is the other party's IBAN, as SEPA-era German statements write it.
        processors={
            "post_transaction_details": [
                mt940.processors.transaction_details_post_processor_with_space
            ]
        },
        options=mt940.options.Options(applicant_iban=True, strip_bom=True),
    )
    try:
        transactions.parse(text)
    except Exception as exc:  # the library raises bare ValueError/KeyError/RuntimeError
        raise StatementError(f"not a readable MT940 statement: {exc}") from None
    account = str(transactions.data.get("account_identification") or "").replace(" ", "").upper()
    if not account:
        raise StatementError("MT940: no :25: account identification")
    lines = []
    for index, tx in enumerate(transactions):
        lines.append(_line(tx.data, account=account, where=f"MT940 :61: entry {index + 1}"))
    return lines


def _line(data: dict[str, Any], *, account: str, where: str) -> StatementLine:
    amount = data.get("amount")
    currency = str(getattr(amount, "currency", "") or data.get("currency") or "")
    value = getattr(amount, "amount", None)
    if not isinstance(value, Decimal) or not currency:
        raise StatementError(f"{where}: no amount or currency (:60F: gives the currency)")
    try:
        amount_minor = abs(to_minor(value, currency))
    except ValueError as exc:
        raise StatementError(f"{where}: {exc}") from None
    if amount_minor == 0:
        raise StatementError(f"{where}: amount is zero")
    status = str(data.get("status") or "")
    # :61: debit/credit mark: C, D, or RC/RD (a reversal of a credit / of a debit).
    direction = Direction.CREDIT if status in ("C", "RD") else Direction.DEBIT
    details = str(data.get("transaction_details") or "").replace("\n", "")
    tags = _slash_tags(details)
    remittance = str(data.get("purpose") or tags.get("REMI") or details).strip()
    name = data.get("applicant_name") or tags.get("NAME") or tags.get("ORDP")
    iban = data.get("applicant_iban") or tags.get("IBAN")
    booked = data.get("entry_date") or data.get("date")
    if booked is None:
        raise StatementError(f"{where}: no booking date")
    refs = [str(data.get(k) or "").strip() for k in ("bank_reference", "customer_reference")]
    entry_ref = next((r for r in refs if r.upper() not in _NO_REF), None)
    booked_on = date(booked.year, booked.month, booked.day)  # mt-940's Date, as a plain date
    e2e = data.get("end_to_end_reference") or tags.get("EREF")
    return StatementLine(
        account=account,
        entry_ref=entry_ref
        or fallback_ref(account, booked_on, amount_minor, currency, status, details),
        booked_on=booked_on,
        amount_minor=amount_minor,
        currency=currency,
        direction=direction,
        reversal=status.startswith("R"),
        remittance=remittance[:1000],
        debtor_name=str(name).strip()[:140] if name else None,
        debtor_iban=str(iban).replace(" ", "").upper() if iban else None,
        end_to_end_id=str(e2e).strip() if e2e and str(e2e).strip().upper() not in _NO_REF else None,
        source="mt940",
    )


def _slash_tags(details: str) -> dict[str, str]:
    """``/REMI/text/NAME/Globex/IBAN/DE89…`` as {"REMI": "text", "NAME": "Globex", ...}."""
    parts = _SLASH_TAG.split(details)
    return {parts[i]: parts[i + 1].strip().rstrip("/") for i in range(1, len(parts) - 1, 2)}
