"""Bank statements written by the tests: camt.053.001.02, camt.054.001.02 and MT940.

Shaped as the ISO 20022 message definition examples are (group header, statement or
notification with its account, then entries with their transaction details) and as SWIFT's
MT940 (:20: :25: :28C: :60F: then :61:/:86: pairs, :62F:). One :class:`Entry` says what a
line carries; each writer spells it in its format, so every matching case runs in all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from xml.sax.saxutils import escape

ACCOUNT = "DE89370400440532013000"  # the tenant's own account (config.example.toml's)
GLOBEX_IBAN = "NL91ABNA0417164300"


@dataclass(frozen=True)
class Entry:
    amount: str  # "120.00"
    ref: str | None = None  # structured CdtrRefInf/Ref (MT940: written into :86: text)
    text: str = ""  # unstructured Ustrd / :86: remittance
    currency: str = "EUR"
    debtor: str | None = "Globex"
    iban: str | None = GLOBEX_IBAN
    credit: bool = True
    reversal: bool = False
    entry_ref: str = "E1"
    booked: str = "2026-03-02"
    e2e: str | None = None
    return_code: str | None = None  # RtrInf/Rsn/Cd of a returned transfer


def camt(entries: list[Entry], *, kind: str = "053", account: str = ACCOUNT) -> bytes:
    """A camt.053.001.02 statement or camt.054.001.02 notification holding ``entries``."""
    body = "".join(_ntry(e) for e in entries)
    acct = f"<Acct><Id><IBAN>{account}</IBAN></Id><Ccy>EUR</Ccy></Acct>"
    head = "<GrpHdr><MsgId>MSG-1</MsgId><CreDtTm>2026-03-02T18:00:00</CreDtTm></GrpHdr>"
    if kind == "053":
        report = (
            f"<BkToCstmrStmt>{head}<Stmt><Id>STMT-1</Id><ElctrncSeqNb>1</ElctrncSeqNb>"
            f"<CreDtTm>2026-03-02T18:00:00</CreDtTm>{acct}"
            '<Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">0.00</Amt>'
            "<CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-03-01</Dt></Dt></Bal>"
            f"{body}</Stmt></BkToCstmrStmt>"
        )
    else:
        report = (
            f"<BkToCstmrDbtCdtNtfctn>{head}<Ntfctn><Id>NTF-1</Id>"
            f"<CreDtTm>2026-03-02T18:00:00</CreDtTm>{acct}{body}</Ntfctn>"
            "</BkToCstmrDbtCdtNtfctn>"
        )
    xmlns = f"urn:iso:std:iso:20022:tech:xsd:camt.{kind}.001.02"
    prolog = '<?xml version="1.0" encoding="UTF-8"?>\n'
    return f'{prolog}<Document xmlns="{xmlns}">{report}</Document>'.encode()


def _ntry(e: Entry) -> str:
    amt = f'<Amt Ccy="{e.currency}">{Decimal(e.amount):.2f}</Amt>'
    party, acct = ("Dbtr", "DbtrAcct") if e.credit else ("Cdtr", "CdtrAcct")
    parties = ""
    if e.debtor:
        parties += f"<{party}><Nm>{escape(e.debtor)}</Nm></{party}>"
    if e.iban:
        parties += f"<{acct}><Id><IBAN>{e.iban}</IBAN></Id></{acct}>"
    rmt = f"<Ustrd>{escape(e.text)}</Ustrd>" if e.text else ""
    if e.ref:
        rmt += (
            "<Strd><CdtrRefInf><Tp><CdOrPrtry><Cd>SCOR</Cd></CdOrPrtry><Issr>ISO</Issr></Tp>"
            f"<Ref>{escape(e.ref)}</Ref></CdtrRefInf></Strd>"
        )
    rtr = f"<RtrInf><Rsn><Cd>{e.return_code}</Cd></Rsn></RtrInf>" if e.return_code else ""
    return (
        f"<Ntry><NtryRef>{e.entry_ref}</NtryRef>{amt}"
        f"<CdtDbtInd>{'CRDT' if e.credit else 'DBIT'}</CdtDbtInd>"
        f"{'<RvslInd>true</RvslInd>' if e.reversal else ''}<Sts>BOOK</Sts>"
        f"<BookgDt><Dt>{e.booked}</Dt></BookgDt><ValDt><Dt>{e.booked}</Dt></ValDt>"
        f"<AcctSvcrRef>{e.entry_ref}</AcctSvcrRef>"
        "<BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>ESCT</SubFmlyCd></Fmly></Domn>"
        "</BkTxCd>"
        f"<NtryDtls><TxDtls><Refs><AcctSvcrRef>{e.entry_ref}</AcctSvcrRef>"
        f"<EndToEndId>{e.e2e or 'NOTPROVIDED'}</EndToEndId></Refs>"
        f"<AmtDtls><TxAmt>{amt}</TxAmt></AmtDtls><RltdPties>{parties}</RltdPties>"
        f"<RmtInf>{rmt}</RmtInf>{rtr}</TxDtls></NtryDtls></Ntry>"
    )


def mt940(entries: list[Entry], *, account: str = ACCOUNT) -> bytes:
    """An MT940 statement; its currency is the first entry's (one currency per statement)."""
    currency = entries[0].currency if entries else "EUR"
    lines = [":20:STMT-1", f":25:{account}", ":28C:1/1", f":60F:C260301{currency}0,00"]
    for e in entries:
        day = e.booked[2:].replace("-", "")
        mark = ("R" if e.reversal else "") + ("C" if e.credit ^ e.reversal else "D")
        amount = f"{Decimal(e.amount):.2f}".replace(".", ",")
        lines.append(f":61:{day}{day[2:]}{mark}{amount}NTRF{e.e2e or 'NONREF'}//{e.entry_ref}")
        words = " ".join(w for w in (e.ref, e.text) if w)
        details = f"/REMI/{words}" if words else ""
        if e.e2e:
            details = f"/EREF/{e.e2e}{details}"
        if e.debtor:
            details += f"/NAME/{e.debtor}"
        if e.iban:
            details += f"/IBAN/{e.iban}"
        lines.append(f":86:{details or 'NONE'}")
    lines.append(f":62F:C260302{currency}0,00")
    return ("\r\n".join(lines) + "\r\n-").encode()


WRITERS = {
    "camt053": lambda entries: camt(entries, kind="053"),
    "camt054": lambda entries: camt(entries, kind="054"),
    "mt940": mt940,
}
