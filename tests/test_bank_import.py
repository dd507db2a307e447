"""dunmail bank: statements (camt.053, camt.054, MT940) matched to invoices and recorded as
payments through the ERP import's path, on SQLite and PostgreSQL; the rest queued for a clerk."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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
    return dict(rows)


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
    with pytest.raises(DocumentError, match="not a camt.053/camt.054 XML file nor an MT940"):
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


# -- re-importing is a no-op ---------------------------------------------------------------------

entries = st.lists(
    st.builds(
        lambda amount, target, debtor, credit, day: (amount, target, debtor, credit, day),
        st.sampled_from(["45.00", "50.00", "80.00", "120.00", "200.00", "0.01", "999.99"]),
        st.sampled_from([None, "INV-1", "INV-2", "INV-3", "RF00 1234", "both"]),
        st.sampled_from(["Globex", "Initech Ltd", "Nobody", None]),
        st.booleans(),
        st.integers(min_value=2, max_value=9),
    ),
    max_size=6,
)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=entries, fmt=st.sampled_from(sorted(WRITERS)), nonce=st.uuids())
def test_reimporting_any_statement_changes_nothing(
    ledger: Services, lines: list[tuple[Any, ...]], fmt: str, nonce: Any
) -> None:
    refs = {n: ref(ledger, n, spaced=True) for n in ("INV-1", "INV-2", "INV-3")}
    refs["both"] = f"{refs['INV-1']} {refs['INV-2']}"
    statement = WRITERS[fmt](
        [
            Entry(
                amount,
                text=refs.get(target, target or ""),
                debtor=debtor,
                credit=credit,
                entry_ref=f"{nonce.hex[:8]}-{i}",
                booked=f"2026-03-0{day}",
            )
            for i, (amount, target, debtor, credit, day) in enumerate(lines)
        ]
    )
    first = ledger.bank.import_statement(statement, tenant="acme")
    before = state(ledger)
    again = ledger.bank.import_statement(statement, tenant="acme")
    assert state(ledger) == before  # same rows, no new payment, event or message
    # (an earlier example may have imported the same lines: the ledger fixture is shared)
    assert len(first.lines) + first.already_imported == len(lines)
    assert again.lines == [] and again.already_imported == len(lines)


# -- the user's path ------------------------------------------------------------------------------


def test_cli_import_pays_sends_the_receipt_and_stops_the_reminder(
    tmp_path: Path, db_url: str
) -> None:
    if db_url.startswith("postgresql"):
        pytest.skip("the CLI path runs once, on SQLite; the cases above run on both")
    from tests.test_cli import dunmail, start_sink, write_config

    sink = start_sink(tmp_path)
    try:
        config = write_config(tmp_path, db_url, sink.port)
        with config.open("a") as f:
            f.write('[tenants.acme.bank]\niban = "DE89 3704 0044 0532 0130 00"\n')
        (tmp_path / "doc.json").write_text(json.dumps(DOC))
        done = dunmail(config, "import", str(tmp_path / "doc.json"), "--at", "2026-03-02T09:00Z")
        assert done.returncode == 0, done.stderr
        tick = dunmail(config, "tick", "--at", "2026-03-02T09:10:00Z")  # the invoices go out
        assert tick.returncode == 0, tick.stderr

        def plan() -> dict[str, Any]:
            out = dunmail(config, "plan", "--at", "2026-03-25T09:00:00Z", "--json")
            assert out.returncode == 0, out.stderr
            return {e["document"]: e for e in json.loads(out.stdout)}

        assert plan()["INV-1"]["send"]  # overdue: a reminder is due on the 25th
        with sa.create_engine(db_url).connect() as conn:
            invoice_id = conn.scalar(sa.text("select id from invoice where number = 'INV-1'"))
            tenant_id = conn.scalar(sa.text("select id from tenant where slug = 'acme'"))
        rf = format_reference(invoice_reference(tenant_id, invoice_id))
        statement = tmp_path / "camt053.xml"
        statement.write_bytes(WRITERS["camt053"]([Entry("120.00", ref=rf, booked="2026-03-05")]))
        imported = dunmail(
            config, "bank", "import", str(statement), "--json", "--at", "2026-03-05T10:00Z"
        )
        assert imported.returncode == 0, imported.stderr
        assert json.loads(imported.stdout)["matched"] == 1
        tick = dunmail(config, "tick", "--at", "2026-03-05T10:01:00Z")
        assert "payment_receipt" in tick.stdout, tick.stdout
        with sa.create_engine(db_url).connect() as conn:
            kinds = conn.scalars(sa.text("select kind from message order by id")).all()
            bt = conn.execute(sa.text("select external_id, amount_minor from payment")).all()
        assert [tuple(p) for p in bt] == [("BT-1", 12000)]
        assert kinds.count("payment_receipt") == 1
        after = plan()
        assert after.get("INV-1", {}).get("send") is None  # paid: no reminder
        assert after["INV-2"]["send"]  # unpaid: still chased
        again = dunmail(config, "bank", "import", str(statement), "--at", "2026-03-06T10:00Z")
        assert (
            "0 matched, 0 unmatched (in the queue), 0 ignored, 1 already imported" in again.stdout
        )
        queue = dunmail(config, "bank", "unmatched", "--json")
        assert queue.returncode == 0 and json.loads(queue.stdout) == []
        bad = dunmail(config, "bank", "import", str(tmp_path / "doc.json"))
        assert (
            bad.returncode == 2
            and "nor an MT940 statement" in bad.stderr
            and "Traceback" not in bad.stderr
        )
    finally:
        sink.stop()


def test_german_mt940_sub_fields_give_the_payer_and_a_split_reference() -> None:
    """:86: as German banks write it (?20-?29 purpose, ?31 IBAN, ?32 name), read by mt-940."""
    from mailer.ledger.bank_matching import references_of
    from mailer.ledger.bank_statement import parse_statement

    text = (
        ":20:STARTUMS\r\n:25:37040044/0532013000\r\n:28C:1/1\r\n:60F:C260301EUR0,00\r\n"
        ":61:2603020302CR120,00NTRFNONREF//B7\r\n"
        ":86:166?00SEPA-GUTSCHRIFT?109310?20EREF+E2E-1?21SVWZ+RF68 I132?22X Rechnung"
        "?30COBADEFFXXX?31NL91ABNA0417164300?32Globex BV\r\n:62F:C260302EUR120,00\r\n-"
    )
    (line,) = parse_statement(text.encode("latin-1"))
    assert (line.debtor_name, line.debtor_iban, line.end_to_end_id, line.amount_minor) == (
        "Globex BV", "NL91ABNA0417164300", "E2E-1", 12000
    )  # fmt: skip
    assert [r.text for r in references_of(line)[0]] == ["RF68I132X"]


BETA = {"name": "Beta Ltd", "email": "ar@beta.example"}


@pytest.mark.services_config(
    tenants={
        "acme": {"name": "Acme Supplies", "email": "ar@acme.example", "bank": BANK},
        "beta": BETA,
    }
)
def test_a_tenant_never_sees_or_pays_into_another_tenants_lines(ledger: Services) -> None:
    statement = WRITERS["camt053"]([Entry("130.00", debtor="Unknown payer", iban=None)])
    (line,) = ledger.bank.import_statement(statement, tenant="acme").lines
    assert ledger.bank.queue(tenant="beta", everything=True) == []
    with pytest.raises(MailerError, match=f"no bank line {line['id']}"):
        ledger.bank.allocate(line["id"], ["INV-1"], tenant="beta", by="clerk")
    # acme's invoice reference in a statement imported for beta: refused, nothing paid
    other = WRITERS["camt053"]([Entry("120.00", ref=ref(ledger, "INV-1"), entry_ref="B1")])
    (seen,) = ledger.bank.import_statement(other, tenant="beta").lines
    assert seen["status"] == "unmatched" and "another tenant's reference" in seen["reason"]
    assert paid(ledger) == {}


@pytest.mark.parametrize(
    ("bank", "says"),
    [
        ('iban = "DE89 3704 0044 0532 0130 01"', "tenants.acme.bank.iban: Value error, 'DE89"),
        ('iban = "DE89370400440532013000"\nbic = "COBADE"', "tenants.acme.bank.bic"),
        ('iban = "DE89370400440532013000"\nswift = "x"', "tenants.acme.bank.swift"),
    ],
)
def test_a_bad_bank_account_is_a_config_error_naming_tenant_and_key(
    tmp_path: Path, bank: str, says: str
) -> None:
    from dunmail.config import load_config
    from mailer.errors import ConfigError

    path = tmp_path / "c.toml"
    path.write_text(
        'env = "dev"\n[database]\nurl = "sqlite:///x.db"\n[relay]\nhost = "127.0.0.1"\n'
        'domain = "relay.example"\n[tenants.acme]\nname = "Acme"\nemail = "ar@acme.example"\n'
        f"[tenants.acme.bank]\n{bank}\n"
    )
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_config(path)
