"""Reading statements (pure): camt batch bookings, pending entries, hostile XML, MT940 keys."""

from __future__ import annotations

from datetime import date

import pytest

from mailer.ledger.bank_statement import Direction, StatementError, parse_statement
from tests.bank_files import Entry, camt, mt940

NS = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"


def _doc(entries: str) -> bytes:
    return (
        f'<Document xmlns="{NS}"><BkToCstmrStmt><GrpHdr><MsgId>M</MsgId></GrpHdr><Stmt>'
        "<Acct><Id><IBAN>DE89370400440532013000</IBAN></Id></Acct>"
        f"{entries}</Stmt></BkToCstmrStmt></Document>"
    ).encode()


def test_a_batch_booked_entry_is_one_line_per_transaction() -> None:
    tx = (
        "<TxDtls><Refs><EndToEndId>{e2e}</EndToEndId></Refs>"
        '<AmtDtls><TxAmt><Amt Ccy="EUR">{amt}</Amt></TxAmt></AmtDtls>'
        "<RltdPties><Dbtr><Nm>{who}</Nm></Dbtr></RltdPties>"
        "<RmtInf><Strd><CdtrRefInf><Ref>{ref}</Ref></CdtrRefInf></Strd></RmtInf></TxDtls>"
    )
    entry = (
        '<Ntry><Amt Ccy="EUR">200.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>BOOK</Sts>'
        "<BookgDt><DtTm>2026-03-02T10:00:00</DtTm></BookgDt><AcctSvcrRef>B-1</AcctSvcrRef>"
        "<NtryDtls>"
        + tx.format(e2e="A", amt="120.00", who="Globex", ref="RF68 I132 X")
        + tx.format(e2e="B", amt="80.00", who="Initech", ref="RF00 0000")
        + "</NtryDtls></Ntry>"
    )
    first, second = parse_statement(_doc(entry))
    assert (first.entry_ref, first.amount_minor, first.debtor_name) == ("B-1/1", 12000, "Globex")
    assert (second.entry_ref, second.amount_minor, second.references) == (
        "B-1/2", 8000, ("RF00 0000",)
    )  # fmt: skip
    assert first.booked_on == date(2026, 3, 2) and first.direction is Direction.CREDIT


def test_pending_entries_are_left_for_the_booked_statement() -> None:
    pending = (
        '<Ntry><Amt Ccy="EUR">5.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts>PDNG</Sts>'
        "<BookgDt><Dt>2026-03-02</Dt></BookgDt></Ntry>"
    )
    assert parse_statement(_doc(pending)) == []


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (
            b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b"<d>&x;</d>",
            "with a DTD or entities is refused",
        ),
        (b"<Document", "not well-formed camt XML"),
        (b"<Document><x/></Document>", "not an ISO 20022 camt"),
        (_doc('<Ntry><Amt Ccy="XXQ">1.00</Amt></Ntry>'), "Ccy 'XXQ'"),
        (_doc('<Ntry><Amt Ccy="EUR">1.005</Amt><CdtDbtInd>CRDT</CdtDbtInd>'
              "<BookgDt><Dt>2026-03-02</Dt></BookgDt></Ntry>"), "amount '1.005'"),
        (b":20:X\r\n:61:garbage\r\n-", "MT940"),
    ],
)  # fmt: skip
def test_a_bad_file_is_one_clear_error(data: bytes, says: str) -> None:
    with pytest.raises(StatementError, match=says):
        parse_statement(data)


def test_lines_without_a_bank_reference_keep_one_key_across_reads() -> None:
    entries = [Entry("10.00", text="a", entry_ref="NONREF"), Entry("10.00", text="b")]
    data = mt940(entries).replace(b"//E1", b"//NONREF")
    first, second = parse_statement(data)
    assert first.entry_ref.startswith("h:") and first.entry_ref != second.entry_ref
    assert [x.entry_ref for x in parse_statement(data)] == [first.entry_ref, second.entry_ref]


def test_camt_and_mt940_of_the_same_transfer_say_the_same() -> None:
    entry = Entry("120.00", ref="RF68 I132 X", e2e="E2E-1", entry_ref="E7")
    (a,), (b,) = parse_statement(camt([entry])), parse_statement(mt940([entry]))
    for field in ("account", "entry_ref", "booked_on", "amount_minor", "currency", "direction"):
        assert getattr(a, field) == getattr(b, field), field
    assert (a.debtor_name, a.debtor_iban, a.end_to_end_id) == (
        b.debtor_name, b.debtor_iban, b.end_to_end_id
    )  # fmt: skip
