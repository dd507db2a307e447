"""PURE: ISO 20022 camt.053 (statement) and camt.054 (notification) XML into statement lines.

camt is plain XML, and the one maintained Python parser (pycamt) reads camt.053 only, so the few
elements a transfer needs are read here with ElementTree's namespaced paths, through defusedxml:
a statement comes from outside, and an entity bomb or an external entity must not expand.
Every schema version (``camt.053.001.02`` to ``.08``, ``camt.054.001.02`` to ``.08``) names
these elements alike, so the namespace is taken from the document itself.
"""

from __future__ import annotations

import re
from datetime import date
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from mailer.ledger.bank_statement import (
    Direction,
    StatementError,
    StatementLine,
    fallback_ref,
)
from mailer.ledger.money import parse_currency, to_minor

_NAMESPACE = re.compile(r"\{(urn:iso:std:iso:20022:tech:xsd:camt\.05[234]\.001\.\d\d)\}Document")
# camt.053 statements, camt.052 reports and camt.054 notifications: the report, then its entries
_REPORTS = ("BkToCstmrStmt/Stmt", "BkToCstmrAcctRpt/Rpt", "BkToCstmrDbtCdtNtfctn/Ntfctn")


def parse_camt(data: bytes) -> list[StatementLine]:
    """Every booked entry of a camt document: one line per entry, or per transaction of an
    entry that books several (``NtryDtls/TxDtls`` with their own amounts)."""
    try:
        root = fromstring(data, forbid_dtd=True)
    except DefusedXmlException:
        raise StatementError("camt XML with a DTD or entities is refused") from None
    except ParseError as exc:
        raise StatementError(f"not well-formed camt XML: {exc}") from None
    found = _NAMESPACE.fullmatch(root.tag)
    if found is None:
        raise StatementError(f"not an ISO 20022 camt.052/053/054 document (root {root.tag[:120]})")
    ns = {"c": found.group(1)}
    source = found.group(1).rsplit(":", 1)[1][:8]  # "camt.053"
    lines: list[StatementLine] = []
    for path in _REPORTS:
        for report in root.iterfind("c:" + path.replace("/", "/c:"), ns):
            account = _text(report, "c:Acct/c:Id/c:IBAN", ns) or _text(
                report, "c:Acct/c:Id/c:Othr/c:Id", ns
            )
            if not account:
                raise StatementError(f"{path}: the account has no IBAN or other id")
            for index, entry in enumerate(report.iterfind("c:Ntry", ns)):
                lines.extend(_entry(entry, ns, account=account, source=source, index=index))
    return lines


def _entry(
    entry: Element, ns: dict[str, str], *, account: str, source: str, index: int
) -> list[StatementLine]:
    status = _text(entry, "c:Sts/c:Cd", ns) or _text(entry, "c:Sts", ns)
    if status and status.upper() not in ("BOOK", "BOOKED"):
        return []  # pending or information only: it comes again, booked
    where = f"{source} entry {index + 1}"
    amount = entry.find("c:Amt", ns)
    if amount is None or not (amount.text or "").strip():
        raise StatementError(f"{where}: no Amt")
    currency = _currency(amount.get("Ccy"), where)
    booked = _text(entry, "c:BookgDt/c:Dt", ns) or (_text(entry, "c:BookgDt/c:DtTm", ns) or "")[:10]
    try:
        booked_on = date.fromisoformat(booked)
    except ValueError:
        raise StatementError(f"{where}: BookgDt {booked!r} is not a date") from None
    direction = _direction(_text(entry, "c:CdtDbtInd", ns), where)
    reversal = (_text(entry, "c:RvslInd", ns) or "").lower() == "true"
    entry_ref = _text(entry, "c:AcctSvcrRef", ns) or _text(entry, "c:NtryRef", ns)
    details = entry.findall("c:NtryDtls/c:TxDtls", ns)
    total = _minor(amount.text or "", currency, where)
    if len(details) <= 1:
        return [
            _line(
                details[0] if details else None,
                ns,
                account=account,
                entry_ref=entry_ref,
                booked_on=booked_on,
                amount_minor=total,
                currency=currency,
                direction=direction,
                reversal=reversal,
                source=source,
            )
        ]
    lines = []
    for n, tx in enumerate(details):
        tx_amount = tx.find("c:AmtDtls/c:TxAmt/c:Amt", ns)
        if tx_amount is None:
            tx_amount = tx.find("c:Amt", ns)
        if tx_amount is None:
            raise StatementError(f"{where}: transaction {n + 1} of a batch has no amount")
        tx_currency = _currency(tx_amount.get("Ccy"), where)
        tx_ref = _text(tx, "c:Refs/c:AcctSvcrRef", ns)
        lines.append(
            _line(
                tx,
                ns,
                account=account,
                entry_ref=tx_ref or (f"{entry_ref}/{n + 1}" if entry_ref else None),
                booked_on=booked_on,
                amount_minor=_minor(tx_amount.text or "", tx_currency, where),
                currency=tx_currency,
                direction=_direction(_text(tx, "c:CdtDbtInd", ns), where, direction),
                reversal=reversal,
                source=source,
            )
        )
    return lines


def _line(
    tx: Element | None,
    ns: dict[str, str],
    *,
    account: str,
    entry_ref: str | None,
    booked_on: date,
    amount_minor: int,
    currency: str,
    direction: Direction,
    reversal: bool,
    source: str,
) -> StatementLine:
    refs: list[str] = []
    texts: list[str] = []
    name = iban = e2e = reason = None
    if tx is not None:
        refs = [
            r.text.strip()
            for r in tx.iterfind("c:RmtInf/c:Strd/c:CdtrRefInf/c:Ref", ns)
            if r.text and r.text.strip()
        ]
        texts = [u.text.strip() for u in tx.iterfind("c:RmtInf/c:Ustrd", ns) if u.text]
        # Money in: the debtor paid us. Money out (a return): the creditor is who gets it back.
        party = "Dbtr" if direction is Direction.CREDIT else "Cdtr"
        name = _text(tx, f"c:RltdPties/c:{party}/c:Nm", ns) or _text(
            tx, f"c:RltdPties/c:{party}/c:Pty/c:Nm", ns
        )
        iban = _text(tx, f"c:RltdPties/c:{party}Acct/c:Id/c:IBAN", ns)
        e2e = _text(tx, "c:Refs/c:EndToEndId", ns)
        reason = _text(tx, "c:RtrInf/c:Rsn/c:Cd", ns) or (
            "returned" if tx.find("c:RtrInf", ns) is not None else None
        )
    remittance = " ".join(texts)
    if e2e and e2e.upper() == "NOTPROVIDED":
        e2e = None
    return StatementLine(
        account=account.replace(" ", "").upper(),
        entry_ref=entry_ref
        or fallback_ref(account, booked_on, amount_minor, currency, remittance, *refs, e2e),
        booked_on=booked_on,
        amount_minor=amount_minor,
        currency=currency,
        direction=direction,
        reversal=reversal or reason is not None,
        references=tuple(refs),
        remittance=remittance[:1000],
        debtor_name=name[:140] if name else None,
        debtor_iban=iban.replace(" ", "").upper() if iban else None,
        end_to_end_id=e2e,
        return_reason=reason,
        source=source,
    )


def _text(node: Element, path: str, ns: dict[str, str]) -> str | None:
    found = node.find(path, ns)
    value = found.text.strip() if found is not None and found.text else ""
    return value or None


def _currency(code: str | None, where: str) -> str:
    try:
        return parse_currency(code)
    except ValueError as exc:
        raise StatementError(f"{where}: Ccy {code!r}: {exc}") from None


def _minor(text: str, currency: str, where: str) -> int:
    try:
        amount = to_minor(text.strip(), currency)
    except ValueError as exc:
        raise StatementError(f"{where}: amount {text.strip()[:30]!r}: {exc}") from None
    if amount <= 0:
        raise StatementError(f"{where}: amount {text.strip()!r} must be positive")
    return amount


def _direction(code: str | None, where: str, default: Direction | None = None) -> Direction:
    if code == "CRDT":
        return Direction.CREDIT
    if code == "DBIT":
        return Direction.DEBIT
    if code is None and default is not None:
        return default
    raise StatementError(f"{where}: CdtDbtInd {code!r} is neither CRDT nor DBIT")
