"""Importing documents into the ledger, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from mailer.clock import FixedClock
from mailer.db import create_all, make_engine
from mailer.errors import NotFoundError
from mailer.ledger.imports import ImportReport, RecordCounts, import_document
from mailer.ledger.models import (
    Contact,
    CreditNote,
    Customer,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentAllocation,
    Tenant,
)
from mailer.ledger.queries import find_invoice, invoice_contacts


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    # create_all rather than the `engine` fixture until the first Alembic migration exists
    engine = make_engine(db_url)
    create_all(engine)
    with Session(engine, expire_on_commit=False) as session:
        yield session
    engine.dispose()


def add_tenant(session: Session, slug: str, clock: FixedClock) -> int:
    tenant = Tenant(
        slug=slug,
        name=slug.title(),
        email=f"ar@{slug}.example",
        time_zone="Europe/Paris",
        created_at=clock.now(),
    )
    session.add(tenant)
    session.commit()
    assert tenant.id is not None
    return tenant.id


@pytest.fixture
def tenant_id(session: Session, clock: FixedClock) -> int:
    return add_tenant(session, "acme", clock)


def document() -> dict[str, Any]:
    line = {"description": "Widgets", "quantity": "4", "unit_price": "25.00", "tax_rate": "20"}
    return {
        "customers": [
            {
                "id": "C-1",
                "name": "Globex",
                "time_zone": "America/New_York",
                "contacts": [
                    {"email": "zed@globex.example", "roles": ["primary"]},
                    {"email": "ap@globex.example", "roles": ["ap"]},
                    {"email": "bill@globex.example", "roles": ["billing", "primary"]},
                    {"email": "ceo@globex.example", "send_invoices": False},
                ],
            },
            {"id": "C-2", "name": "Initech"},
        ],
        "invoices": [
            {
                "id": "I-1",
                "number": "F-001",
                "customer": "C-1",
                "currency": "EUR",
                "issued_at": "2026-03-01",
                "due_at": "2026-03-31",
                "lines": [dict(line)],  # 4 x 25.00 + 20 % = 120.00
            },
            {
                "id": "I-2",
                "number": "F-002",
                "customer": "C-2",
                "currency": "EUR",
                "issued_at": "2026-03-01",
                "due_at": "2026-03-31",
                "lines": [dict(line)],
            },
        ],
        "credit_notes": [
            {
                "id": "CN-1",
                "number": "A-001",
                "customer": "C-1",
                "currency": "EUR",
                "issued_at": "2026-03-02",
                "invoice": "I-1",
                "lines": [{"description": "Damaged", "quantity": "1", "unit_price": "20.00"}],
            }
        ],
        "payments": [
            {
                "id": "P-1",
                "customer": "C-1",
                "amount": "50.00",
                "currency": "EUR",
                "received_at": "2026-03-05",
                "invoices": [{"invoice": "I-1", "amount": "50.00"}],
            }
        ],
    }


def run(session: Session, tenant_id: int, data: object, clock: FixedClock) -> ImportReport:
    report = import_document(session, tenant_id=tenant_id, data=data, now=clock.now())
    session.commit()
    return report


def where(report: ImportReport) -> dict[str, str]:
    return {e.where: e.reason for e in report.errors}


def invoice(session: Session, tenant_id: int, external_id: str) -> Invoice:
    session.expire_all()
    return session.exec(
        select(Invoice).where(Invoice.tenant_id == tenant_id, Invoice.external_id == external_id)
    ).one()


def test_happy_path(session: Session, tenant_id: int, clock: FixedClock) -> None:
    report = run(session, tenant_id, document(), clock)

    assert report.errors == []
    assert report.customers == RecordCounts(created=2)
    assert report.invoices == RecordCounts(created=2)
    assert report.credit_notes == RecordCounts(created=1)
    assert report.payments == RecordCounts(created=1)
    i1 = invoice(session, tenant_id, "I-1")
    assert (i1.total_minor, i1.tax_minor, i1.balance_minor) == (12000, 2000, 5000)
    assert (i1.version, i1.status, i1.currency) == (1, InvoiceStatus.OPEN, "EUR")
    assert i1.issued_at == datetime(2026, 3, 1, 5, 0, tzinfo=UTC)  # midnight in New York
    assert i1.due_at == datetime(2026, 3, 31, 4, 0, tzinfo=UTC)  # after the DST change
    assert i1.created_at == i1.updated_at == clock.now()
    assert i1.lines[0]["total_minor"] == 12000
    assert invoice(session, tenant_id, "I-2").issued_at == datetime(2026, 2, 28, 23, tzinfo=UTC)
    assert session.exec(select(CreditNote)).one().amount_minor == 2000
    assert session.exec(select(Payment)).one().received_at == datetime(2026, 3, 5, 5, tzinfo=UTC)


def test_reimport_is_idempotent(session: Session, tenant_id: int, clock: FixedClock) -> None:
    run(session, tenant_id, document(), clock)
    clock.advance(timedelta(hours=1))

    report = run(session, tenant_id, document(), clock)

    assert report.errors == []
    for counts in (report.customers, report.invoices, report.credit_notes, report.payments):
        assert counts.created == counts.updated == 0
    assert report.invoices.unchanged == 2
    i1 = invoice(session, tenant_id, "I-1")
    assert (i1.version, i1.balance_minor) == (1, 5000)
    assert i1.updated_at == clock.now() - timedelta(hours=1)
    assert len(session.exec(select(PaymentAllocation)).all()) == 2


def test_an_edit_bumps_the_version_and_a_status_change_does_not(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    run(session, tenant_id, document(), clock)
    clock.advance(timedelta(days=1))
    data = document()
    data["invoices"][0]["lines"][0]["quantity"] = "5"  # 150.00: balance 150 - 20 - 50
    data["invoices"][1]["status"] = "void"

    report = run(session, tenant_id, data, clock)

    assert report.invoices == RecordCounts(updated=2)
    i1, i2 = invoice(session, tenant_id, "I-1"), invoice(session, tenant_id, "I-2")
    assert (i1.version, i1.total_minor, i1.balance_minor) == (2, 15000, 8000)
    assert i1.updated_at == clock.now()
    assert (i2.version, i2.status, i2.updated_at) == (1, InvoiceStatus.VOID, clock.now())
    assert i1.content_hash != i2.content_hash


def test_invalid_records_are_reported_and_the_rest_apply(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    data = document()
    good = data["invoices"][0]
    data["invoices"] += [
        good | {"id": "I-3", "number": "F-003", "issued_at": "01/03/2026"},
        good | {"id": "I-4", "number": "F-004", "currency": "XYZ"},
        good | {"id": "I-5", "number": "F-005", "customer": "C-9"},
        good | {"id": "I-6", "number": "F-006", "customer": "C-bad"},
        good | {"id": "I-1", "number": "F-007"},  # duplicate id: both I-1 records are refused
    ]
    data["customers"].append(
        {"id": "C-bad", "name": "x", "contacts": [{"email": "a@x.example\r\nBcc: b@x.example"}]}
    )
    data["customers"].append({"id": "C-ok", "name": "Line\r\nbreak Ltd"})

    report = run(session, tenant_id, data, clock)

    assert list(where(report)) == [  # in document order
        "customers[2].contacts[0].email",
        "invoices[0].id",
        "invoices[2].issued_at",
        "invoices[3].currency",
        "invoices[4].customer",
        "invoices[5].customer",
        "invoices[6].id",
        "credit_notes[0].invoice",
        "payments[0].invoices[0].invoice",
    ]
    reasons = where(report)
    assert reasons["invoices[4].customer"] == "unknown customer 'C-9'"
    assert reasons["invoices[5].customer"] == (
        "unknown customer 'C-bad' (its record in this document was refused)"
    )
    assert reasons["credit_notes[0].invoice"] == (
        "unknown invoice 'I-1' (its record in this document was refused)"
    )
    assert report.customers == RecordCounts(created=3)
    assert report.invoices == RecordCounts(created=1)
    names = session.exec(select(Customer.name).order_by(Customer.external_id)).all()
    assert list(names) == ["Globex", "Initech", "Line\r\nbreak Ltd"]
    assert [i.external_id for i in session.exec(select(Invoice)).all()] == ["I-2"]


def test_payments_reduce_the_balance_and_settle(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    run(session, tenant_id, document(), clock)
    data = document()
    data["payments"][0] |= {"amount": "100.00"}
    data["payments"][0]["invoices"][0]["amount"] = "100.00"  # 120 - 20 credit - 100 = 0

    report = run(session, tenant_id, data, clock)

    assert report.payments == RecordCounts(updated=1)
    i1 = invoice(session, tenant_id, "I-1")
    assert (i1.balance_minor, i1.status) == (0, InvoiceStatus.PAID)
    assert [a.amount_minor for a in session.exec(select(PaymentAllocation)).all()] == [2000, 10000]

    again = run(session, tenant_id, data, clock)  # the ERP still says "open": we keep paid
    assert (again.invoices.unchanged, again.payments.unchanged) == (2, 1)
    assert invoice(session, tenant_id, "I-1").status is InvoiceStatus.PAID

    data["payments"][0]["invoices"][0]["amount"] = "40.00"  # the ERP corrected the payment
    run(session, tenant_id, data, clock)
    i1 = invoice(session, tenant_id, "I-1")
    assert (i1.balance_minor, i1.status) == (6000, InvoiceStatus.OPEN)


def test_allocations_are_checked_against_the_ledger(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    run(session, tenant_id, document(), clock)
    pay = document()["payments"][0]
    usd = copy.deepcopy(document()["invoices"][0]) | {"id": "I-usd", "number": "U-1"}
    usd["currency"] = "USD"
    data = {
        "invoices": [usd],
        "payments": [
            pay
            | {"id": "P-2", "amount": "60.00", "invoices": [{"invoice": "I-1", "amount": "50.01"}]},
            pay | {"id": "P-3", "invoices": [{"invoice": "I-2", "amount": "1"}]},
            pay | {"id": "P-4", "invoices": [{"invoice": "I-usd", "amount": "1"}]},
            pay | {"id": "P-5", "invoices": [{"invoice": "I-1", "amount": "50.00"}]},
        ],
        "credit_notes": [
            document()["credit_notes"][0]
            | {"id": "CN-2", "invoice": "I-2", "customer": "C-2"}
            | {"lines": [{"description": "x", "quantity": "1", "unit_price": "120.01"}]}
        ],
    }

    report = run(session, tenant_id, data, clock)

    assert where(report) == {
        "payments[0].invoices[0].amount": (
            "50.01 EUR is more than the 50.00 EUR still open on invoice 'I-1'"
        ),
        "payments[1].invoices[0].invoice": "invoice 'I-2' belongs to another customer",
        "payments[2].invoices[0].invoice": "invoice 'I-usd' is in USD, not EUR",
        "credit_notes[0].invoice": (
            "120.01 EUR is more than the 120.00 EUR still open on invoice 'I-2'"
        ),
    }
    assert report.payments == RecordCounts(created=1)
    assert session.exec(select(Payment.external_id).order_by(Payment.external_id)).all() == [
        "P-1",
        "P-5",
    ]
    assert invoice(session, tenant_id, "I-1").status is InvoiceStatus.PAID


def test_contacts_follow_the_erp_but_keep_the_ar_switches(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    run(session, tenant_id, document(), clock)
    i1 = invoice(session, tenant_id, "I-1")
    assert [c.email for c in invoice_contacts(session, i1)] == [
        "bill@globex.example",
        "ap@globex.example",
        "zed@globex.example",
    ]
    customer = session.exec(select(Customer).where(Customer.external_id == "C-1")).one()
    customer.chase = False  # the AR team pauses reminders by hand
    ap = session.exec(select(Contact).where(Contact.email == "ap@globex.example")).one()
    ap.send_invoices = False
    session.commit()

    data = document()
    data["customers"][0]["contacts"] = data["customers"][0]["contacts"][1:]  # zed is gone
    data["customers"][0]["contacts"][1]["name"] = "Bill"
    report = run(session, tenant_id, data, clock)

    assert report.customers == RecordCounts(updated=1, unchanged=1)
    session.expire_all()
    assert customer.chase is False
    assert [c.email for c in invoice_contacts(session, i1)] == ["bill@globex.example"]
    emails = session.exec(select(Contact.email).where(Contact.customer_id == customer.id)).all()
    assert sorted(emails) == ["ap@globex.example", "bill@globex.example", "ceo@globex.example"]

    data["customers"][0]["chase"] = True
    del data["customers"][0]["contacts"]  # absent: contacts are left alone
    assert run(session, tenant_id, data, clock).customers == RecordCounts(updated=1, unchanged=1)
    session.expire_all()
    assert customer.chase is True
    assert len(session.exec(select(Contact).where(Contact.customer_id == customer.id)).all()) == 3


def test_find_invoice(session: Session, tenant_id: int, clock: FixedClock) -> None:
    run(session, tenant_id, document(), clock)
    assert find_invoice(session, tenant_id=tenant_id, number="F-002").external_id == "I-2"
    with pytest.raises(NotFoundError, match="F-404"):
        find_invoice(session, tenant_id=tenant_id, number="F-404")


def test_tenants_stay_apart(session: Session, tenant_id: int, clock: FixedClock) -> None:
    other = add_tenant(session, "umbrella", clock)
    run(session, tenant_id, document(), clock)
    data = document()
    data["customers"][0]["name"] = "Globex (Umbrella's)"
    del data["payments"]

    report = run(session, other, data, clock)

    assert report.errors == []
    assert (report.customers.created, report.invoices.created) == (2, 2)
    mine, theirs = invoice(session, tenant_id, "I-1"), invoice(session, other, "I-1")
    assert mine.id != theirs.id
    assert (mine.balance_minor, theirs.balance_minor) == (5000, 10000)
    names = session.exec(
        select(Customer.tenant_id, Customer.name).where(Customer.external_id == "C-1")
    ).all()
    assert sorted(names) == sorted([(tenant_id, "Globex"), (other, "Globex (Umbrella's)")])
    assert len(invoice_contacts(session, theirs)) == 3
    with pytest.raises(NotFoundError):
        find_invoice(session, tenant_id=add_tenant(session, "empty", clock), number="F-001")


def test_number_taken_by_another_invoice(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    run(session, tenant_id, document(), clock)
    data = {"invoices": [document()["invoices"][0] | {"id": "I-new"}]}
    report = run(session, tenant_id, data, clock)
    assert where(report) == {
        "invoices[0].number": "number 'F-001' already belongs to invoice 'I-1'"
    }


def test_a_database_failure_rolls_back_only_its_record(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    # A constraint the importer does not know about stands in for any database-level refusal.
    # Raw DDL: an sa.Index on Customer.name would join the shared metadata for later tests.
    session.connection().execute(sa.text("CREATE UNIQUE INDEX ux_test_name ON customer (name)"))
    session.commit()
    data = document()
    data["customers"].insert(1, {"id": "C-twin", "name": "Globex"})

    report = run(session, tenant_id, data, clock)

    assert [e.where for e in report.errors] == ["customers[1]"]
    assert report.errors[0].reason.startswith("could not be stored: ")
    assert report.customers == RecordCounts(created=2)
    assert (report.invoices.created, report.payments.created) == (2, 1)


def test_unknown_tenant(session: Session, clock: FixedClock) -> None:
    with pytest.raises(NotFoundError):
        import_document(session, tenant_id=999, data=document(), now=clock.now())


def test_a_voided_invoice_takes_no_new_payment_but_keeps_its_old_ones(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    run(session, tenant_id, document(), clock)
    data = document()
    data["invoices"][0]["status"] = "void"
    late = data["payments"][0] | {"id": "P-2", "invoices": [{"invoice": "I-1", "amount": "1"}]}
    data["payments"].append(late)

    report = run(session, tenant_id, data, clock)

    assert where(report) == {"payments[1].invoices[0].invoice": "invoice 'I-1' is void"}
    assert (report.payments, report.credit_notes) == (RecordCounts(unchanged=1),) * 2
    i1 = invoice(session, tenant_id, "I-1")
    assert (i1.status, i1.balance_minor, i1.version) == (InvoiceStatus.VOID, 5000, 1)


def test_report_summary_and_dict(session: Session, tenant_id: int, clock: FixedClock) -> None:
    data = document()
    data["payments"][0]["amount"] = 50.5
    report = run(session, tenant_id, data, clock)
    # Sections without a valid record (payments here, and the billing ones) are left out.
    assert report.summary() == (
        "customers 2 created, 0 updated, 0 unchanged; invoices 2 created, 0 updated, 0 unchanged; "
        "credit notes 1 created, 0 updated, 0 unchanged; 1 event recorded; 1 invalid record"
    )
    as_dict = report.as_dict()
    assert as_dict["invoices"] == {"created": 2, "updated": 0, "unchanged": 0}
    assert as_dict["subscriptions"] == {"created": 0, "updated": 0, "unchanged": 0}
    assert as_dict["events"] == 1  # the credit note's email
    assert as_dict["errors"] == [{"where": "payments[0].amount", "reason": report.errors[0].reason}]
    assert json.loads(json.dumps(as_dict)) == as_dict
