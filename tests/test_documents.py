"""The import document: validation positions, minor units, zones, hashing (no database)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from mailer.errors import DocumentError
from mailer.ledger.documents import decode_document, parse_document
from mailer.ledger.models import ContactRole, InvoiceStatus
from mailer.ledger.parsed import ParsedDocument


def document() -> dict[str, Any]:
    return {
        "customers": [
            {
                "id": "C-1",
                "name": "Acme\r\nGmbH",  # CR/LF in a name is data, not a header: kept as is
                "locale": "de-DE",
                "time_zone": "America/New_York",
                "contacts": [
                    {"email": "Ap@Acme.EXAMPLE", "name": "Payables", "roles": ["ap", "billing"]},
                ],
            }
        ],
        "invoices": [
            {
                "id": "I-1",
                "number": "F-2026-001",
                "customer": "C-1",
                "currency": "EUR",
                "issued_at": "2026-03-01",
                "due_at": "2026-03-31T12:00:00+01:00",
                "lines": [
                    {
                        "description": "Widgets",
                        "quantity": "3",
                        "unit_price": "12.50",
                        "tax_rate": "20",
                    },
                    {"description": "Hours", "quantity": "0.333", "unit_price": "100.00"},
                ],
            }
        ],
        "payments": [
            {
                "id": "P-1",
                "customer": "C-1",
                "amount": "50.00",
                "currency": "EUR",
                "received_at": "2026-03-05T10:00:00Z",
                "invoices": [{"invoice": "I-1", "amount": "45.00"}],
            }
        ],
        "credit_notes": [
            {
                "id": "CN-1",
                "number": "CN-001",
                "customer": "C-1",
                "currency": "EUR",
                "issued_at": "2026-03-02",
                "invoice": "I-1",
                "lines": [{"description": "Refund", "quantity": "1", "unit_price": "5"}],
            }
        ],
    }


def parse(data: object, **kw: Any) -> ParsedDocument:
    return parse_document(data, tenant_zone="Europe/Paris", **kw)


def errors(doc: ParsedDocument) -> dict[str, str]:
    return {e.where: e.reason for e in doc.errors}


def test_happy_path_converts_to_minor_units_and_utc() -> None:
    doc = parse(document())
    assert doc.errors == []
    (customer,) = doc.customers
    assert customer.name == "Acme\r\nGmbH"
    assert customer.locale == "de_DE"
    assert customer.contacts is not None
    (contact,) = customer.contacts
    assert contact.email == "Ap@acme.example"  # the domain is lower-cased, the local part is not
    assert contact.roles == (ContactRole.AP, ContactRole.BILLING)
    (invoice,) = doc.invoices
    # 3 x 12.50 = 37.50 + 20 % tax 7.50; 0.333 x 100.00 = 33.30 (exact), no tax
    assert [line.total_minor for line in invoice.lines] == [4500, 3330]
    assert (invoice.total_minor, invoice.tax_minor) == (7830, 750)
    assert invoice.status is InvoiceStatus.OPEN
    assert invoice.issued_at == datetime(2026, 3, 1, 5, 0, tzinfo=UTC)  # New York midnight
    assert invoice.due_at == datetime(2026, 3, 31, 11, 0, tzinfo=UTC)  # its own offset wins
    (payment,) = doc.payments
    assert (payment.amount_minor, payment.allocations[0].amount_minor) == (5000, 4500)
    assert payment.allocations[0].where == "payments[0].invoices[0]"
    (note,) = doc.credit_notes
    assert (note.amount_minor, note.invoice) == (500, "I-1")


def test_line_total_rounds_half_even() -> None:
    data = document()
    data["invoices"][0]["lines"] = [
        {"description": "a", "quantity": "0.5", "unit_price": "0.01"},  # 0.5 cent -> 0
        {"description": "b", "quantity": "1.5", "unit_price": "0.01"},  # 1.5 cents -> 2
        {"description": "c", "quantity": "1", "unit_price": "0.05", "tax_rate": "10"},  # 0.5 -> 0
    ]
    (invoice,) = parse(data).invoices
    assert [(line.net_minor, line.tax_minor) for line in invoice.lines] == [(0, 0), (2, 0), (5, 0)]


def test_each_invalid_record_is_reported_at_its_position_and_the_rest_parse() -> None:
    data = document()
    good = data["invoices"][0]
    bad = [copy.deepcopy(good) for _ in range(6)]
    for i, inv in enumerate(bad):
        inv["id"], inv["number"] = f"I-bad-{i}", f"F-bad-{i}"
    bad[0]["issued_at"] = "2026-02-30"
    bad[1]["currency"] = "EUX"
    bad[2]["lines"][1]["unit_price"] = "1.005"
    bad[3]["currency"], bad[3]["lines"] = (
        "JPY",
        [{"description": "x", "quantity": "1", "unit_price": "100.5"}],
    )
    bad[4]["lines"][0]["quantity"] = 1.5
    bad[5]["due_at"] = "2026-02-01"
    kwd = copy.deepcopy(good) | {"id": "I-kwd", "number": "F-kwd", "currency": "KWD"}
    kwd["lines"] = [{"description": "x", "quantity": "1", "unit_price": "1.234"}]
    data["invoices"] = [good, *bad, kwd]

    doc = parse(data)

    got = errors(doc)
    assert set(got) == {
        "invoices[1].issued_at",
        "invoices[2].currency",
        "invoices[3].lines[1].unit_price",
        "invoices[4].lines[0].unit_price",
        "invoices[5].lines[0].quantity",
        "invoices[6].due_at",
    }
    assert "ISO 8601" in got["invoices[1].issued_at"]
    assert got["invoices[2].currency"].startswith("unknown currency 'EUX'")
    assert got["invoices[3].lines[1].unit_price"].startswith("EUR has 2 decimal places")
    assert got["invoices[4].lines[0].unit_price"].startswith("JPY has 0 decimal places")
    assert "floating point loses cents" in got["invoices[5].lines[0].quantity"]
    assert got["invoices[6].due_at"] == "is before issued_at"
    assert [i.external_id for i in doc.invoices] == ["I-1", "I-kwd"]
    assert doc.invoices[1].total_minor == 1234
    assert doc.rejected["invoices"] == {f"I-bad-{i}" for i in range(6)}
    assert len(doc.customers) == len(doc.payments) == len(doc.credit_notes) == 1


def test_integral_json_numbers_are_accepted() -> None:
    data = document()
    data["invoices"][0]["lines"] = [{"description": "x", "quantity": 2, "unit_price": 7}]
    (invoice,) = parse(data).invoices
    assert invoice.total_minor == 1400


def test_unknown_fields_are_named() -> None:
    data = document()
    data["extra"] = 1
    data["customers"][0]["contacts"][0]["phone"] = "+1"
    data["invoices"][0]["lines"][0]["colour"] = "red"
    got = errors(parse(data))
    assert got["$"].startswith("unknown field 'extra'")
    assert got["customers[0].contacts[0].phone"].startswith("unknown field 'phone' (allowed: email")
    assert got["invoices[0].lines[0].colour"].startswith("unknown field 'colour' (allowed: desc")


@pytest.mark.parametrize(
    "email",
    [
        "ap@acme.example\r\nBcc: x@evil.example",
        "ap acme@acme.example",
        "apacme.example",
        "a@b@acme.example",
        "Bob <ap@acme.example>",
        "ap@localhost",
        "ap@",
        "",
    ],
)
def test_bad_emails_are_refused(email: str) -> None:
    data = document()
    data["customers"][0]["contacts"][0]["email"] = email
    doc = parse(data)
    assert list(errors(doc)) == ["customers[0].contacts[0].email"]
    assert doc.customers == []


def test_customer_fields_are_validated() -> None:
    data = document()
    data["customers"] += [
        {"id": "C-2", "name": "x", "locale": "xx_YY"},
        {"id": "C-3", "name": "x", "time_zone": "Mars/Olympus"},
        {"id": "C-4", "name": ""},
        {"id": "C-5", "name": "x", "chase": "yes"},
        {"id": "C-6", "name": "x", "contacts": [{"email": "a@x.example", "roles": ["boss"]}]},
        {
            "id": "C-7",
            "name": "x",
            "contacts": [{"email": "a@x.example"}, {"email": "a@X.example"}],
        },
        "C-8",
    ]
    got = errors(parse(data))
    assert got == {
        "customers[1].locale": "unknown locale 'xx_YY'",
        "customers[2].time_zone": got["customers[2].time_zone"],
        "customers[3].name": "must not be empty",
        "customers[4].chase": "Input should be a valid boolean",
        "customers[5].contacts[0].roles[0]": got["customers[5].contacts[0].roles[0]"],
        "customers[6].contacts[1].email": "duplicate contact 'a@x.example' (also at contacts[0])",
        "customers[7]": "must be an object",
    }
    assert got["customers[2].time_zone"].startswith("unknown time zone 'Mars/Olympus'")
    assert "'billing'" in got["customers[5].contacts[0].roles[0]"]


def test_missing_fields_and_empty_lines() -> None:
    data = document()
    del data["invoices"][0]["currency"]
    data["credit_notes"][0]["lines"] = []
    got = errors(parse(data))
    assert got == {
        "invoices[0].currency": "required field is missing",
        "credit_notes[0].lines": "must not be empty",
    }


def test_whole_document_problems_are_one_error_at_dollar() -> None:
    assert errors(parse([])) == {"$": "the document must be a JSON object"}
    doc = parse({"invoices": {"id": "I-1"}, "customers": document()["customers"]})
    assert errors(doc) == {"$": "'invoices' must be a list of records"}
    assert len(doc.customers) == 1


def test_duplicate_ids_refuse_every_occurrence() -> None:
    data = document()
    twin = copy.deepcopy(data["invoices"][0]) | {"number": "F-other"}
    data["invoices"].append(twin)
    doc = parse(data)
    assert errors(doc) == {
        "invoices[0].id": "duplicate id 'I-1' (also at invoices[1])",
        "invoices[1].id": "duplicate id 'I-1' (also at invoices[0])",
    }
    assert doc.invoices == []


def test_duplicate_invoice_numbers_are_refused() -> None:
    data = document()
    data["invoices"].append(copy.deepcopy(data["invoices"][0]) | {"id": "I-2"})
    assert set(errors(parse(data))) == {"invoices[0].number", "invoices[1].number"}


def test_dates_use_the_document_customer_then_the_ledger_then_the_tenant_zone() -> None:
    data = document()
    inv = data["invoices"][0]
    data["invoices"] = [
        inv,
        inv | {"id": "I-2", "number": "F-2", "customer": "C-ledger"},
        inv | {"id": "I-3", "number": "F-3", "customer": "C-unknown"},
        inv | {"id": "I-4", "number": "F-4", "issued_at": "2026-03-01T09:30"},
    ]
    doc = parse(data, customer_zone={"C-ledger": "Asia/Tokyo"}.get)
    assert doc.errors == []
    assert [i.issued_at for i in doc.invoices] == [
        datetime(2026, 3, 1, 5, 0, tzinfo=UTC),  # America/New_York, from the document
        datetime(2026, 2, 28, 15, 0, tzinfo=UTC),  # Asia/Tokyo, from the ledger
        datetime(2026, 2, 28, 23, 0, tzinfo=UTC),  # Europe/Paris, the tenant's
        datetime(2026, 3, 1, 14, 30, tzinfo=UTC),  # naive date-time, New York wall clock
    ]


def test_payment_allocations_are_checked_within_the_payment() -> None:
    data = document()
    pay = data["payments"][0]
    data["payments"] = [
        pay | {"invoices": [{"invoice": "I-1", "amount": "60.00"}]},
        pay | {"id": "P-2", "invoices": [{"invoice": "I-1", "amount": "1"}] * 2},
        pay | {"id": "P-3", "amount": "0"},
        pay | {"id": "P-4", "invoices": []},
    ]
    doc = parse(data)
    assert errors(doc) == {
        "payments[0].invoices": "allocations total 60.00 EUR, more than the payment's 50.00",
        "payments[1].invoices[1].invoice": "invoice 'I-1' is listed twice",
        "payments[2].amount": "must be positive",
    }
    assert [p.external_id for p in doc.payments] == ["P-4"]


def test_invoice_and_credit_note_totals_must_make_sense() -> None:
    data = document()
    data["invoices"][0]["lines"] = [{"description": "x", "quantity": "-1", "unit_price": "5"}]
    data["invoices"][0]["lines"].append({"description": "y", "quantity": "1", "unit_price": "1"})
    data["credit_notes"][0]["lines"][0]["unit_price"] = "-5"
    data["credit_notes"].append(
        data["credit_notes"][0]
        | {
            "id": "CN-2",
            "lines": [{"description": "x", "quantity": "1", "unit_price": "1", "tax_rate": "101"}],
        }
    )
    assert errors(parse(data)) == {
        "invoices[0].lines": "the invoice total is negative; send a credit note",
        "credit_notes[0].lines": "a credit note's total must be positive",
        "credit_notes[1].lines[0].tax_rate": "must be a percentage from 0 to 100",
    }


def test_content_hash_ignores_status_and_spelling_but_not_content() -> None:
    base = parse(document()).invoices[0]
    data = document()
    data["invoices"][0]["status"] = "void"
    data["invoices"][0]["lines"][0]["unit_price"] = "12.5"
    data["invoices"][0]["lines"][0]["quantity"] = "3.000"
    same = parse(data).invoices[0]
    assert same.status is InvoiceStatus.VOID
    assert same.content_hash == base.content_hash
    data["invoices"][0]["lines"][0]["description"] = "Widgets, blue"
    assert parse(data).invoices[0].content_hash != base.content_hash


def test_international_domains_are_stored_as_a_labels() -> None:
    data = document()
    data["customers"][0]["contacts"][0]["email"] = "ap@Bücher.example"
    (customer,) = parse(data).customers
    assert customer.contacts is not None
    assert customer.contacts[0].email == "ap@xn--bcher-kva.example"


def test_decode_document_reports_bad_json_at_dollar() -> None:
    assert decode_document('{"customers": []}') == {"customers": []}
    with pytest.raises(DocumentError, match=r"^\$: not valid JSON: .* line 1 column 2"):
        decode_document("{")


def test_billing_sections_parse_to_minor_units_and_utc() -> None:
    data = document()
    data["payments"][0] |= {"method": "Visa •••• 4242", "receipt_number": "R-1"}
    data["credit_notes"][0]["reason"] = "Goodwill"
    data["refunds"] = [
        {
            "id": "RF-1",
            "payment": "P-1",
            "amount": "5.00",
            "currency": "eur",
            "refunded_at": "2026-03-06",
        }
    ]
    data["autopay_failures"] = [
        {
            "id": "AP-1",
            "customer": "C-1",
            "amount": "78.30",
            "currency": "EUR",
            "attempted_at": "2026-03-06T09:00",
            "decline_reason": "expired_card",
        }
    ]
    data["subscriptions"] = [
        {
            "id": "S-1",
            "customer": "C-1",
            "plan": "Pro",
            "amount": "0",
            "currency": "EUR",
            "interval": "year",
            "status": "cancelled",
            "started_at": "2026-01-01",
            "cancelled_at": "2026-03-01",
            "ends_at": "2026-12-31",
        }
    ]

    doc = parse(data)

    assert doc.errors == []
    (payment,) = doc.payments
    assert (payment.method, payment.receipt_number) == ("Visa •••• 4242", "R-1")
    assert doc.credit_notes[0].reason == "Goodwill"
    (refund,) = doc.refunds
    assert (refund.payment, refund.amount_minor, refund.currency) == ("P-1", 500, "EUR")
    assert refund.refunded_at == datetime(2026, 3, 6, 5, 0, tzinfo=UTC)  # the payer's New York
    assert refund.receipt_number is None
    (failure,) = doc.autopay_failures
    assert (failure.amount_minor, failure.next_retry_at, failure.invoice) == (7830, None, None)
    assert failure.attempted_at == datetime(2026, 3, 6, 14, 0, tzinfo=UTC)
    (sub,) = doc.subscriptions
    assert (sub.amount_minor, sub.interval, sub.status) == (0, "year", "cancelled")
    assert sub.ends_at == datetime(2026, 12, 31, 5, 0, tzinfo=UTC)


def test_a_refund_of_a_ledger_payment_uses_its_customer_zone() -> None:
    refund = {"id": "RF-1", "amount": "1", "currency": "EUR", "refunded_at": "2026-03-06"}
    data = {
        "refunds": [
            refund | {"payment": "P-ledger"},
            refund | {"id": "RF-2", "payment": "P-unknown"},  # the ledger says: no such payment
        ]
    }
    doc = parse(
        data,
        customer_zone={"C-tokyo": "Asia/Tokyo"}.get,
        payment_customer={"P-ledger": "C-tokyo"}.get,
    )
    assert [r.refunded_at for r in doc.refunds] == [
        datetime(2026, 3, 5, 15, 0, tzinfo=UTC),  # Asia/Tokyo
        datetime(2026, 3, 5, 23, 0, tzinfo=UTC),  # the tenant's Europe/Paris
    ]


def test_billing_sections_are_validated_at_their_positions() -> None:
    data: dict[str, Any] = {
        "refunds": [
            {"id": "RF-1", "payment": "P-1", "amount": "-1", "currency": "EUR", "refunded_at": "x"},
            {"id": "RF-2", "payment": "P-1", "currency": "EUR", "refunded_at": "2026-03-01"},
        ],
        "autopay_failures": [
            {
                "id": "AP-1",
                "customer": "C-1",
                "amount": "1",
                "currency": "EUR",
                "attempted_at": "2026-03-02",
                "decline_reason": "card declined",
                "next_retry_at": "2026-03-02",
            }
        ],
        "subscriptions": [
            {
                "id": "S-1",
                "customer": "C-1",
                "plan": "",
                "amount": "1",
                "currency": "EUR",
                "interval": "month",
                "status": "active",
                "started_at": "2026-03-02",
                "next_bill_at": "2026-03-01",
            },
            {"id": "S-1"},
        ],
    }
    got = errors(parse(data))
    assert got == {
        "refunds[0].refunded_at": got["refunds[0].refunded_at"],
        "refunds[1].amount": "required field is missing",
        "autopay_failures[0].decline_reason": (
            "must be a code such as \"insufficient_funds\", got 'card declined'"
        ),
        "subscriptions[0].id": "duplicate id 'S-1' (also at subscriptions[1])",
        "subscriptions[0].plan": "must not be empty",
        "subscriptions[1].id": "duplicate id 'S-1' (also at subscriptions[0])",
        "subscriptions[1].customer": "required field is missing",
        "subscriptions[1].plan": "required field is missing",
        "subscriptions[1].amount": "required field is missing",
        "subscriptions[1].currency": "required field is missing",
        "subscriptions[1].interval": "required field is missing",
        "subscriptions[1].status": "required field is missing",
        "subscriptions[1].started_at": "required field is missing",
    }
    assert "ISO 8601" in got["refunds[0].refunded_at"]
    # A field error stops the record before the cross-field checks (amount, next_retry_at).
    data["autopay_failures"][0]["decline_reason"] = "card_declined"
    data["subscriptions"] = data["subscriptions"][:1]
    data["subscriptions"][0]["plan"] = "Pro"
    got = errors(parse(data))
    assert got["autopay_failures[0].next_retry_at"] == "is not after attempted_at"
    assert got["subscriptions[0].next_bill_at"] == "is before started_at"
