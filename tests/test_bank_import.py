"""dunmail bank: statements (camt.053, camt.054, MT940) matched to invoices and recorded as
payments through the ERP import's path, on SQLite and PostgreSQL; the rest queued for a clerk."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from dunmail.app import Services
from mailer.errors import DocumentError, MailerError
from mailer.ledger.bank_models import BankLine
from mailer.ledger.models import Event, Invoice, Payment, PaymentAllocation
from mailer.ledger.references import customer_reference, format_reference, invoice_reference
from tests.bank_files import WRITERS, Entry
from tests.conftest import DEMO_DOC

DOC: dict[str, Any] = copy.deepcopy(DEMO_DOC)
DOC["customers"].append({"id": "C-2", "name": "Initech Ltd", "contacts": []})
DOC["invoices"] = [
    {
        "id": f"i-{n}",
        "number": f"INV-{n}",
        "customer": customer,
        "currency": "EUR",
        "issued_at": f"2026-02-0{n}",
        "due_at": f"2026-02-2{n}",
        "lines": [{"description": "Support", "quantity": "1", "unit_price": price}],
    }
    for n, customer, price in [(1, "C-1", "120.00"), (2, "C-1", "80.00"), (3, "C-2", "45.00")]
]
BANK = {"iban": "DE89 3704 0044 0532 0130 00", "bic": "COBADEFFXXX"}
pytestmark = pytest.mark.services_config(
    tenants={"acme": {"name": "Acme Supplies", "email": "ar@acme.example", "bank": BANK}}
)


@pytest.fixture
def ledger(services: Services) -> Services:
    assert services.ledger.import_document(DOC, tenant="acme").errors == []
    return services


def ref(services: Services, number: str, *, spaced: bool = False) -> str:
    """The RF reference printed on invoice ``number`` (grouped by four when ``spaced``)."""
    with Session(services.engine) as session:
        invoice = session.exec(select(Invoice).where(Invoice.number == number)).one()
    text = invoice_reference(services.tenants.id("acme"), int(invoice.id or 0))
    return format_reference(text) if spaced else text


def state(services: Services) -> dict[str, Any]:
    """Balances, payments with their allocations, bank lines, events and messages."""
    with Session(services.engine) as session:
        invoices = {
            i.number: (i.balance_minor, i.status.value) for i in session.exec(select(Invoice))
        }
        allocations = {
            (a.payment_id, a.invoice_id, a.amount_minor)
            for a in session.exec(select(PaymentAllocation))
        }
        payments = {(p.external_id, p.amount_minor) for p in session.exec(select(Payment))}
        lines = [
            (b.id, b.status.value, b.payment_id, b.credit_minor, b.reason)
            for b in session.exec(select(BankLine).order_by(col(BankLine.id)))
        ]
        events = session.scalar(sa.select(sa.func.count()).select_from(Event))
        messages = session.scalar(sa.text("select count(*) from message"))
    return {
        "invoices": invoices,
        "allocations": allocations,
        "payments": payments,
        "lines": lines,
        "events": events,
        "messages": messages,
    }


def paid(services: Services) -> dict[str, int]:
    """invoice number -> amount (minor) the bank payments allocated to it."""
    with Session(services.engine) as session:
        rows = session.exec(
            select(Invoice.number, PaymentAllocation.amount_minor)
            .join(Invoice, col(Invoice.id) == col(PaymentAllocation.invoice_id))
            .join(Payment, col(Payment.id) == col(PaymentAllocation.payment_id))
            .where(col(Payment.external_id).startswith("BT-"))
        ).all()
    return {number: amount for number, amount in rows}


# (case, entries given the reference function, status, allocations, credit, reason contains)
Case = tuple[str, Callable[[Callable[..., str]], list[Entry]], str, dict[str, int], int, str]
CASES: list[Case] = [
    ("exact reference", lambda r: [Entry("120.00", ref=r("INV-1"))], "matched",
     {"INV-1": 12000}, 0, "by reference"),
    ("reference spaced in free text, lower case", lambda r: [
        Entry("120.00", text=f"Invoice payment {r('INV-1', spaced=True).lower()} thanks")
    ], "matched", {"INV-1": 12000}, 0, "by reference"),
    ("wrong reference", lambda r: [Entry("120.00", ref="RF00 1234 5678", debtor="Nobody")],
     "unmatched", {}, 0, "wrong reference"),
    ("partial payment", lambda r: [Entry("50.00", ref=r("INV-1"))], "matched",
     {"INV-1": 5000}, 0, "by reference"),
    ("overpayment", lambda r: [Entry("150.00", ref=r("INV-1"))], "matched",
     {"INV-1": 12000}, 3000, "left on account"),
    ("two invoices in one transfer", lambda r: [
        Entry("200.00", text=f"{r('INV-1', spaced=True)} {r('INV-2', spaced=True)}")
    ], "matched", {"INV-1": 12000, "INV-2": 8000}, 0, "INV-1, INV-2"),
    ("foreign currency", lambda r: [Entry("120.00", ref=r("INV-1"), currency="USD")],
     "unmatched", {}, 0, "foreign currency"),
    ("amount and exact name", lambda r: [Entry("45.00", debtor="INITECH LTD.", iban=None)],
     "matched", {"INV-3": 4500}, 0, "by amount and name"),
    ("amount of two invoices, similar name: suggested only", lambda r: [
        Entry("200.00", debtor="Globex Corporation Europe", iban=None)
    ], "unmatched", {}, 0, "low confidence"),
]  # fmt: skip


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_case_in_each_format(ledger: Services, fmt: str, case: Case) -> None:
    _, entries, status, allocations, credit, reason = case
    report = ledger.bank.import_statement(
        WRITERS[fmt](entries(lambda n, **kw: ref(ledger, n, **kw))), tenant="acme"
    )
    (line,) = report.lines
    assert (line["status"], paid(ledger)) == (status, allocations), line["reason"]
    assert reason in line["reason"]
    assert line["credit_on_account"] == f"{credit / 100:.2f}"
    after = state(ledger)
    if status == "matched":
        (payment,) = after["payments"] - {("p-1", 0)}
        assert payment == ("BT-1", sum(allocations.values()) + credit)
        assert after["events"] == 1  # the receipt, as for an ERP-imported payment
        balances = after["invoices"]
        for number, amount in allocations.items():
            total = {"INV-1": 12000, "INV-2": 8000, "INV-3": 4500}[number]
            assert balances[number] == (total - amount, "paid" if amount == total else "open")
    else:
        assert after["payments"] == set() and after["events"] == 0
        assert [q["id"] for q in ledger.bank.queue(tenant="acme")] == [line["id"]]


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_a_returned_transfer_is_queued_with_the_credit_it_gives_back(
    ledger: Services, fmt: str
) -> None:
    credit = Entry("120.00", ref=ref(ledger, "INV-1"), e2e="E2E-7", entry_ref="E1")
    ledger.bank.import_statement(WRITERS[fmt]([credit]), tenant="acme")
    back = Entry(
        "120.00", credit=False, reversal=True, e2e="E2E-7", entry_ref="E2",
        booked="2026-03-04", return_code="AC04" if fmt != "mt940" else None,
    )  # fmt: skip
    (line,) = ledger.bank.import_statement(WRITERS[fmt]([back]), tenant="acme").lines
    assert line["status"] == "unmatched"
    assert "returned transfer or reversal" in line["reason"]
    assert "gives back bank line 1, payment BT-1" in line["reason"]
    assert paid(ledger) == {"INV-1": 12000}  # the clerk decides; nothing is undone silently
    assert [q["id"] for q in ledger.bank.queue(tenant="acme")] == [line["id"]]


def test_money_out_that_is_not_a_return_is_ignored(ledger: Services) -> None:
    fee = Entry("4.90", credit=False, debtor="Bank fees", iban=None, entry_ref="F1")
    (line,) = ledger.bank.import_statement(WRITERS["camt053"]([fee]), tenant="acme").lines
    assert line["status"] == "ignored" and ledger.bank.queue(tenant="acme") == []


def test_a_customer_reference_pays_its_open_invoices_oldest_first(ledger: Services) -> None:
    with Session(ledger.engine) as session:
        globex = session.exec(select(Invoice.customer_id).where(Invoice.number == "INV-1")).one()
    text = format_reference(customer_reference(ledger.tenants.id("acme"), globex))
    statement = WRITERS["camt054"]([Entry("150.00", text=f"batch {text}")])
    (line,) = ledger.bank.import_statement(statement, tenant="acme").lines
    assert paid(ledger) == {"INV-1": 12000, "INV-2": 3000} and line["status"] == "matched"
    # Next time this IBAN pays an exact amount, it is the customer's for sure.
    again = Entry("50.00", debtor="someone else", entry_ref="E9")
    (line,) = ledger.bank.import_statement(WRITERS["mt940"]([again]), tenant="acme").lines
    assert (line["status"], line["confidence"]) == ("matched", "high"), line["reason"]
    assert "known IBAN" in line["reason"]


def test_the_clerk_allocates_an_unmatched_line(ledger: Services) -> None:
    statement = WRITERS["camt053"]([Entry("130.00", debtor="Unknown payer", iban=None)])
    (line,) = ledger.bank.import_statement(statement, tenant="acme").lines
    assert line["status"] == "unmatched"
    done = ledger.bank.allocate(line["id"], ["INV-2", "INV-1"], tenant="acme", by="clerk")
    assert done["status"] == "matched" and paid(ledger) == {"INV-2": 8000, "INV-1": 5000}
    assert ledger.bank.queue(tenant="acme") == []
    with pytest.raises(MailerError, match="not in the queue"):
        ledger.bank.allocate(line["id"], ["INV-3"], tenant="acme", by="clerk")


def test_a_statement_of_another_account_or_a_bad_file_is_refused(ledger: Services) -> None:
    from tests.bank_files import camt

    other = camt([Entry("1.00")], account="GB82WEST12345698765432")
    with pytest.raises(DocumentError, match="not tenant acme's"):
        ledger.bank.import_statement(other, tenant="acme")
    bomb = b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]><d>&a;</d>'
    with pytest.raises(DocumentError, match="not well-formed|DTD"):
        ledger.bank.import_statement(bomb, tenant="acme")
    with pytest.raises(DocumentError, match="neither|not a camt"):
        ledger.bank.import_statement(b"hello", tenant="acme")
    assert state(ledger)["lines"] == []


def test_another_tenants_reference_never_reaches_this_tenants_invoice(ledger: Services) -> None:
    with Session(ledger.engine) as session:
        invoice_id = session.exec(select(Invoice.id).where(Invoice.number == "INV-1")).one()
    foreign = invoice_reference(ledger.tenants.id("acme") + 1, int(invoice_id or 0))
    (line,) = ledger.bank.import_statement(
        WRITERS["camt053"]([Entry("120.00", ref=foreign, debtor="X", iban=None)]), tenant="acme"
    ).lines
    assert line["status"] == "unmatched" and "another tenant's reference" in line["reason"]
