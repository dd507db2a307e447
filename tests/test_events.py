"""Events the import records (receipts, refunds, failed autopays, credit notes, subscription
notices), on SQLite and PostgreSQL: one per occasion, with a context its kind can render."""

from __future__ import annotations

import copy
import types
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlmodel import Session, select

from mailer.clock import FixedClock
from mailer.content import shapes
from mailer.content.event_context import billed_soon_due, days_until, invoice_data
from mailer.content.render import Renderer
from mailer.content.samples import sample_context
from mailer.db import MIGRATIONS, create_schema, make_engine
from mailer.ledger.imports import ImportReport, RecordCounts, import_document
from mailer.ledger.models import (
    CreditNote,
    Event,
    EventStatus,
    Invoice,
    Payment,
    Subscription,
    Tenant,
)
from mailer.outbound.compose import Rendered
from tests.conftest import START

GRACE = timedelta(minutes=5)
# What the pass adds to every event's own part (shapes.BaseEmail: language, parties, zone, links).
BASE_KEYS = shapes.BaseEmail.__required_keys__ | shapes.BaseEmail.__optional_keys__
# The TypedDict each kind renders with (mailer.content.shapes); the event holds its non-base part.
SHAPES: dict[str, type] = {
    "payment_receipt": shapes.PaymentReceiptEmail,
    "refund": shapes.RefundEmail,
    "autopay_failed": shapes.AutopayFailedEmail,
    "credit_note": shapes.CreditNoteEmail,
    "subscription_confirmation": shapes.SubscriptionEmail,
    "subscription_cancelled": shapes.SubscriptionEmail,
    "subscription_billed_soon": shapes.SubscriptionBilledSoonEmail,
}


# -- fixtures and helpers ------------------------------------------------------------------


def add_tenant(session: Session, slug: str) -> int:
    tenant = Tenant(
        slug=slug, name=slug.title(), email=f"ar@{slug}.example", time_zone="UTC", created_at=START
    )
    session.add(tenant)
    session.commit()
    assert tenant.id is not None
    return tenant.id


def ledger_document() -> dict[str, Any]:
    line = {"description": "Widgets", "quantity": "1", "unit_price": "120.00"}
    invoice = {"currency": "EUR", "issued_at": "2026-03-01", "due_at": "2026-03-31"}
    return {
        "customers": [
            {"id": "C-1", "name": "Globex", "time_zone": "Europe/Paris"},
            {"id": "C-2", "name": "Initech"},
        ],
        "invoices": [
            {"id": "I-1", "number": "F-001", "customer": "C-1", **invoice, "lines": [line]},
            {"id": "I-2", "number": "F-002", "customer": "C-2", **invoice, "lines": [line]},
            {"id": "I-3", "number": "F-003", "customer": "C-1", **invoice, "lines": [line]},
        ],
    }


@pytest.fixture
def tenant_id(session: Session, clock: FixedClock) -> int:
    tenant_id = add_tenant(session, "acme")
    assert run(session, tenant_id, clock, ledger_document()).errors == []
    return tenant_id


def run(session: Session, tenant_id: int, clock: FixedClock, data: dict[str, Any]) -> ImportReport:
    report = import_document(
        session,
        tenant_id=tenant_id,
        data=copy.deepcopy(data),
        now=clock.now(),
        grace=GRACE,
        billed_soon_days=7,
    )
    session.commit()
    return report


def events(session: Session, tenant_id: int) -> dict[str, Event]:
    session.expire_all()
    rows = session.exec(select(Event).where(Event.tenant_id == tenant_id)).all()
    return {e.key: e for e in rows}


def where(report: ImportReport) -> dict[str, str]:
    return {e.where: e.reason for e in report.errors}


def row_id(session: Session, table: Any, external_id: str) -> int:
    value = session.exec(select(table.id).where(table.external_id == external_id)).one()
    assert isinstance(value, int)
    return value


def set_status(session: Session, event: Event, status: EventStatus) -> None:
    """Stands in for the scheduler pass (not part of this package) handling the event."""
    event.status = status
    session.add(event)
    session.commit()


def check_shape(kind: str, context: dict[str, Any]) -> None:
    """``context`` has exactly the keys of ``kind``'s own part, with the types it declares."""
    sample = sample_context(kind, locale="en")
    own = {k: v for k, v in sample.items() if k not in BASE_KEYS}
    assert set(context) == set(own)
    _same_keys(context, own, kind)
    hints = get_type_hints(SHAPES[kind])
    for key, value in context.items():
        _conforms(value, hints[key], f"{kind}.{key}")


def _same_keys(ours: Any, sample: Any, path: str) -> None:
    if isinstance(sample, dict):
        assert isinstance(ours, dict) and set(ours) == set(sample), path
        for key in sample:
            _same_keys(ours[key], sample[key], f"{path}.{key}")
    elif isinstance(sample, list) and sample:
        assert isinstance(ours, list), path
        for i, item in enumerate(ours):
            _same_keys(item, sample[0], f"{path}[{i}]")


def _conforms(value: Any, hint: Any, path: str) -> None:
    """A small checker for the TypedDicts of mailer.content.shapes (pydantic needs
    typing_extensions.TypedDict on Python 3.11, and shapes.py uses typing's)."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        errors = []
        for arm in get_args(hint):
            try:
                _conforms(value, arm, path)
                return
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{path}: {value!r} is none of {hint}: {errors}")
    if origin is Literal:
        assert value in get_args(hint), f"{path}: {value!r} not in {hint}"
    elif origin is list:
        assert isinstance(value, list), f"{path}: not a list"
        for i, item in enumerate(value):
            _conforms(item, get_args(hint)[0], f"{path}[{i}]")
    elif is_typeddict(hint):
        assert isinstance(value, dict), f"{path}: not an object"
        assert (
            hint.__required_keys__
            <= set(value)
            <= hint.__required_keys__ | (hint.__optional_keys__)
        ), f"{path}: keys {sorted(value)}"
        fields = get_type_hints(hint)
        for key, item in value.items():
            _conforms(item, fields[key], f"{path}.{key}")
    elif hint is type(None):
        assert value is None, f"{path}: {value!r} is not None"
    elif hint is int:
        assert isinstance(value, int) and not isinstance(value, bool), f"{path}: {value!r}"
    else:
        assert isinstance(value, hint), f"{path}: {value!r} is not {hint}"


def render(renderer: Renderer, event: Event) -> Rendered:
    """The event's context completed as the scheduler pass would, from the sample's base."""
    check_shape(event.kind, event.context)
    sample = sample_context(event.kind, locale="en")
    context = {k: v for k, v in sample.items() if k in BASE_KEYS} | copy.deepcopy(event.context)
    return renderer.render(event.kind, context)


PAYMENT: dict[str, Any] = {
    "id": "P-1",
    "customer": "C-1",
    "amount": "150.00",
    "currency": "EUR",
    "received_at": "2026-03-02T10:00:00Z",
    "method": "Visa •••• 4242",
    "receipt_number": "RCPT-1",
    "invoices": [{"invoice": "I-1", "amount": "120.00"}],
}


# -- payments ------------------------------------------------------------------------------


def test_a_new_payment_records_its_receipt_once(
    session: Session, tenant_id: int, clock: FixedClock, renderer: Renderer
) -> None:
    report = run(session, tenant_id, clock, {"payments": [PAYMENT]})

    assert (report.payments, report.events) == (RecordCounts(created=1), 1)
    (event,) = events(session, tenant_id).values()
    assert (event.kind, event.key, event.status) == (
        "payment_receipt",
        "payment:P-1",
        EventStatus.PENDING,
    )
    assert event.document == f"payment:{row_id(session, Payment, 'P-1')}"
    assert event.due_at == clock.now()  # a receipt goes at once
    assert event.invoice_id == row_id(session, Invoice, "I-1")
    assert (
        event.customer_id == session.get_one(Payment, row_id(session, Payment, "P-1")).customer_id
    )
    paid = event.context["payment"]["invoices"]
    assert event.context == {
        "payment": {
            "receipt_number": "RCPT-1",
            "amount_minor": 15000,
            "currency": "EUR",
            "received_at": "2026-03-02T10:00:00+00:00",
            "method": "Visa •••• 4242",
            "invoices": paid,
            "unapplied_minor": 3000,
        }
    }
    assert [(p["number"], p["amount_minor"]) for p in paid] == [("F-001", 12000)]
    # The invoice as the payment left it, for its page of the receipt PDF: paid in full.
    invoice = session.get_one(Invoice, row_id(session, Invoice, "I-1"))
    assert paid[0]["invoice"] == invoice_data(invoice)
    assert paid[0]["invoice"]["balance_minor"] == 0
    rendered = render(renderer, event)
    assert "RCPT-1" in rendered.subject
    assert "F-001" in rendered.text

    clock.advance(timedelta(hours=1))
    again = run(session, tenant_id, clock, {"payments": [PAYMENT]})
    assert (again.payments, again.events) == (RecordCounts(unchanged=1), 0)
    assert list(events(session, tenant_id)) == ["payment:P-1"]


def test_a_changed_payment_updates_its_pending_receipt_only(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    run(session, tenant_id, clock, {"payments": [PAYMENT]})
    clock.advance(timedelta(minutes=1))
    edited = PAYMENT | {"method": "Mastercard •••• 1111", "invoices": []}
    del edited["receipt_number"]  # absent: the receipt shows the payment's id

    assert run(session, tenant_id, clock, {"payments": [edited]}).payments.updated == 1
    event = events(session, tenant_id)["payment:P-1"]
    assert event.due_at == START  # it keeps its time
    assert event.invoice_id is None
    payment = event.context["payment"]
    assert (payment["receipt_number"], payment["method"]) == ("P-1", "Mastercard •••• 1111")
    assert (payment["invoices"], payment["unapplied_minor"]) == ([], 15000)

    set_status(session, event, EventStatus.QUEUED)  # the receipt has gone out
    run(session, tenant_id, clock, {"payments": [PAYMENT]})
    event = events(session, tenant_id)["payment:P-1"]
    assert event.context["payment"]["method"] == "Mastercard •••• 1111"  # as it was sent
    assert len(events(session, tenant_id)) == 1


def test_a_payment_split_over_invoices_names_each(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    split = PAYMENT | {
        "invoices": [{"invoice": "I-3", "amount": "100.00"}, {"invoice": "I-1", "amount": "50"}]
    }
    run(session, tenant_id, clock, {"payments": [split]})
    event = events(session, tenant_id)["payment:P-1"]
    assert event.invoice_id is None  # one event, no single invoice
    paid = event.context["payment"]["invoices"]
    assert [(p["number"], p["amount_minor"], p["invoice"]["balance_minor"]) for p in paid] == [
        ("F-003", 10000, 2000),  # each invoice with what is still open on it after the payment
        ("F-001", 5000, 7000),
    ]
    assert event.context["payment"]["unapplied_minor"] == 0


# -- refunds -------------------------------------------------------------------------------

REFUND: dict[str, Any] = {
    "id": "RF-1",
    "payment": "P-1",
    "amount": "30.00",
    "currency": "EUR",
    "refunded_at": "2026-03-03",  # midnight in Paris: the payment's customer's zone
    "reason": "Duplicate charge",
    "method": "Visa •••• 4242",
}


def test_a_refund_records_its_notice(
    session: Session, tenant_id: int, clock: FixedClock, renderer: Renderer
) -> None:
    report = run(session, tenant_id, clock, {"payments": [PAYMENT], "refunds": [REFUND]})

    assert (report.refunds, report.events) == (RecordCounts(created=1), 2)
    event = events(session, tenant_id)["refund:RF-1"]
    assert (event.kind, event.due_at, event.status) == ("refund", clock.now(), EventStatus.PENDING)
    assert event.document.startswith("refund:")
    assert (
        event.customer_id == session.get_one(Payment, row_id(session, Payment, "P-1")).customer_id
    )
    assert event.context == {
        "refund": {
            "receipt_number": "RF-1",
            "amount_minor": 3000,
            "currency": "EUR",
            "refunded_at": "2026-03-02T23:00:00+00:00",
            "method": "Visa •••• 4242",
            "reason": "Duplicate charge",
            "payment_received_at": "2026-03-02T10:00:00+00:00",
        }
    }
    assert "RF-1" in render(renderer, event).text

    again = run(session, tenant_id, clock, {"refunds": [REFUND]})  # the payment is in the ledger
    assert (again.refunds, again.events) == (RecordCounts(unchanged=1), 0)
    assert sorted(events(session, tenant_id)) == ["payment:P-1", "refund:RF-1"]


def test_refunds_are_checked_against_their_payment(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    other = add_tenant(session, "umbrella")
    run(session, other, clock, ledger_document() | {"payments": [PAYMENT | {"id": "P-other"}]})
    run(session, tenant_id, clock, {"payments": [PAYMENT, PAYMENT | {"id": "P-2", "invoices": []}]})
    bad_payment = PAYMENT | {"id": "P-bad", "amount": "1.001"}
    data = {
        "payments": [bad_payment],
        "refunds": [
            REFUND | {"payment": "p-9"},
            REFUND | {"id": "RF-2", "currency": "USD"},
            REFUND | {"id": "RF-3", "payment": "P-other"},  # another tenant's
            REFUND | {"id": "RF-4", "amount": "100.00"},
            REFUND | {"id": "RF-5", "amount": "60.00"},  # 100 + 60 > 150
            REFUND | {"id": "RF-6", "payment": "P-bad"},
            REFUND | {"id": "RF-7", "amount": "0"},
            REFUND | {"id": "RF-8", "payment": "P-2", "colour": "red"},
            REFUND | {"id": "RF-9", "payment": "P-2", "amount": "150.00"},
        ],
    }

    report = run(session, tenant_id, clock, data)

    assert where(report) == {
        "payments[0].amount": "EUR has 2 decimal places; 1.001 cannot be represented exactly",
        "refunds[0].payment": "unknown payment 'p-9'",
        "refunds[1].currency": "payment 'P-1' is in EUR, not USD",
        "refunds[2].payment": "unknown payment 'P-other'",
        "refunds[4].amount": (
            "refunds of payment 'P-1' would total 160.00 EUR, more than the payment's 150.00 EUR"
        ),
        "refunds[5].payment": "unknown payment 'P-bad' (its record in this document was refused)",
        "refunds[6].amount": "must be positive",
        "refunds[7].colour": where(report)["refunds[7].colour"],
    }
    assert where(report)["refunds[7].colour"].startswith("unknown field 'colour' (allowed: id,")
    assert report.refunds == RecordCounts(created=2)
    assert sorted(k for k in events(session, tenant_id) if k.startswith("refund:")) == [
        "refund:RF-4",
        "refund:RF-9",
    ]
    assert report.events == 2


# -- autopay failures ----------------------------------------------------------------------

AUTOPAY: dict[str, Any] = {
    "id": "AP-1",
    "customer": "C-1",
    "invoice": "I-1",
    "amount": "120.00",
    "currency": "EUR",
    "attempted_at": "2026-03-02T09:00:00Z",
    "decline_reason": "insufficient_funds",
    "next_retry_at": "2026-03-05T09:00:00Z",
    "method": "Visa •••• 4242",
}


def test_a_failed_autopay_records_its_notice(
    session: Session, tenant_id: int, clock: FixedClock, renderer: Renderer
) -> None:
    report = run(session, tenant_id, clock, {"autopay_failures": [AUTOPAY]})

    assert (report.autopay_failures, report.events) == (RecordCounts(created=1), 1)
    event = events(session, tenant_id)["autopay:AP-1"]
    assert (event.kind, event.due_at) == ("autopay_failed", clock.now())
    assert event.invoice_id == row_id(session, Invoice, "I-1")
    assert event.context == {
        "autopay": {
            "decline_reason": "insufficient_funds",
            "next_retry_at": "2026-03-05T09:00:00+00:00",
            "amount_minor": 12000,
            "currency": "EUR",
            "attempted_at": "2026-03-02T09:00:00+00:00",
            "invoice_number": "F-001",
            "method": "Visa •••• 4242",
        }
    }
    assert "F-001" in render(renderer, event).text

    bare = {k: v for k, v in AUTOPAY.items() if k not in ("invoice", "next_retry_at", "method")}
    bare |= {"id": "AP-2", "decline_reason": "do_not_honor"}  # unknown codes are kept as sent
    assert run(session, tenant_id, clock, {"autopay_failures": [AUTOPAY, bare]}).events == 1
    event = events(session, tenant_id)["autopay:AP-2"]
    assert event.invoice_id is None
    assert event.context["autopay"]["next_retry_at"] is None
    assert "will not try again" in render(renderer, event).text


def test_autopay_failures_are_validated(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    data = {
        "autopay_failures": [
            AUTOPAY | {"invoice": "I-2"},
            AUTOPAY | {"id": "AP-2", "currency": "USD"},
            AUTOPAY | {"id": "AP-3", "customer": "C-9"},
            AUTOPAY | {"id": "AP-4", "next_retry_at": "2026-03-01"},
            AUTOPAY | {"id": "AP-5", "decline_reason": "Insufficient funds"},
            AUTOPAY | {"id": "AP-6", "invoice": "I-404"},
        ]
    }
    report = run(session, tenant_id, clock, data)
    assert where(report) == {
        "autopay_failures[0].invoice": "invoice 'I-2' belongs to another customer",
        "autopay_failures[1].invoice": "invoice 'I-1' is in EUR, not USD",
        "autopay_failures[2].customer": "unknown customer 'C-9'",
        "autopay_failures[3].next_retry_at": "is not after attempted_at",
        "autopay_failures[4].decline_reason": (
            "must be a code such as \"insufficient_funds\", got 'Insufficient funds'"
        ),
        "autopay_failures[5].invoice": "unknown invoice 'I-404'",
    }
    assert events(session, tenant_id) == {}


# -- credit notes: the grace period --------------------------------------------------------

CREDIT_NOTE: dict[str, Any] = {
    "id": "CN-1",
    "number": "A-001",
    "customer": "C-1",
    "currency": "EUR",
    "issued_at": "2026-03-02",
    "invoice": "I-1",
    "reason": "Damaged in transit",
    "lines": [{"description": "Damaged", "quantity": "1", "unit_price": "20.00", "tax_rate": "20"}],
}


def test_a_credit_note_waits_a_grace_period_restarted_by_each_edit(
    session: Session, tenant_id: int, clock: FixedClock, renderer: Renderer
) -> None:
    run(session, tenant_id, clock, {"credit_notes": [CREDIT_NOTE]})
    note_id = row_id(session, CreditNote, "CN-1")
    event = events(session, tenant_id)["credit_note:CN-1"]
    assert (event.kind, event.due_at, event.version) == ("credit_note", START + GRACE, 1)
    assert (event.document, event.invoice_id) == (
        f"credit_note:{note_id}",
        row_id(session, Invoice, "I-1"),
    )
    assert event.context == {
        "credit_note": {
            "number": "A-001",
            "version": 1,
            "currency": "EUR",
            "amount_minor": 2400,
            "tax_minor": 400,
            "issued_at": "2026-03-01T23:00:00+00:00",
            "invoice_number": "F-001",
            "reason": "Damaged in transit",
            "lines": [
                {
                    "description": "Damaged",
                    "quantity": "1",
                    "unit_price_minor": 2000,
                    "tax_rate": "20",
                    "net_minor": 2000,
                    "tax_minor": 400,
                    "total_minor": 2400,
                }
            ],
        }
    }
    assert "A-001" in render(renderer, event).subject

    clock.advance(timedelta(minutes=3))  # unchanged: nothing moves
    assert run(session, tenant_id, clock, {"credit_notes": [CREDIT_NOTE]}).credit_notes == (
        RecordCounts(unchanged=1)
    )
    assert events(session, tenant_id)["credit_note:CN-1"].due_at == START + GRACE

    edited = CREDIT_NOTE | {"reason": "Damaged in transit (two boxes)"}
    edited["lines"] = [dict(CREDIT_NOTE["lines"][0], quantity="2")]
    assert run(session, tenant_id, clock, {"credit_notes": [edited]}).credit_notes == (
        RecordCounts(updated=1)
    )
    event = events(session, tenant_id)["credit_note:CN-1"]
    assert (event.due_at, event.version) == (clock.now() + GRACE, 2)
    assert session.get_one(CreditNote, note_id).version == 2  # the event pins this version
    assert event.context["credit_note"]["amount_minor"] == 4800
    assert event.context["credit_note"]["version"] == 2  # the PDF shows the version it pins
    assert event.context["credit_note"]["reason"] == "Damaged in transit (two boxes)"
    assert len(events(session, tenant_id)) == 1

    set_status(session, event, EventStatus.QUEUED)  # sent: a later edit leaves the email be
    clock.advance(timedelta(days=1))
    run(session, tenant_id, clock, {"credit_notes": [CREDIT_NOTE]})
    event = events(session, tenant_id)["credit_note:CN-1"]
    assert (event.version, event.status, event.due_at) == (
        2,
        EventStatus.QUEUED,
        START + timedelta(minutes=3) + GRACE,
    )
    assert session.get_one(CreditNote, note_id).version == 3


def test_a_credit_note_issued_later_waits_for_its_date(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    later = CREDIT_NOTE | {"issued_at": "2026-03-10T12:00:00Z", "invoice": None, "reason": None}
    run(session, tenant_id, clock, {"credit_notes": [later]})
    event = events(session, tenant_id)["credit_note:CN-1"]
    assert event.due_at == datetime(2026, 3, 10, 12, tzinfo=UTC)  # like an invoice's issue date
    assert (event.invoice_id, event.context["credit_note"]["invoice_number"]) == (None, None)
    check_shape("credit_note", event.context)


# -- subscriptions -------------------------------------------------------------------------

SUBSCRIPTION: dict[str, Any] = {
    "id": "S-1",
    "customer": "C-1",
    "plan": "Business",
    "amount": "49.00",
    "currency": "EUR",
    "interval": "month",
    "status": "active",
    "started_at": "2026-03-02T09:00:00Z",
    "next_bill_at": "2026-04-02T09:00:00Z",
}


def test_a_new_subscription_is_confirmed_and_announced_before_its_bill(
    session: Session, tenant_id: int, clock: FixedClock, renderer: Renderer
) -> None:
    report = run(session, tenant_id, clock, {"subscriptions": [SUBSCRIPTION]})

    assert (report.subscriptions, report.events) == (RecordCounts(created=1), 2)
    found = events(session, tenant_id)
    assert sorted(found) == ["subscription:S-1:billed:2026-04-02", "subscription:S-1:confirmed"]
    confirmed = found["subscription:S-1:confirmed"]
    assert (confirmed.kind, confirmed.due_at) == ("subscription_confirmation", clock.now())
    assert confirmed.document == f"subscription:{row_id(session, Subscription, 'S-1')}"
    assert confirmed.context == {
        "subscription": {
            "plan": "Business",
            "amount_minor": 4900,
            "currency": "EUR",
            "interval": "month",
            "started_at": "2026-03-02T09:00:00+00:00",
            "next_bill_at": "2026-04-02T09:00:00+00:00",
            "cancelled_at": None,
            "ends_at": None,
        }
    }
    soon = found["subscription:S-1:billed:2026-04-02"]
    assert soon.kind == "subscription_billed_soon"
    assert soon.due_at == datetime(2026, 3, 26, 9, tzinfo=UTC)  # 7 days before the bill
    assert soon.context == confirmed.context | {"days_until_bill": 7}
    assert "Business" in render(renderer, confirmed).subject
    assert "renews in 7 days" in render(renderer, soon).subject

    clock.advance(timedelta(days=1))
    again = run(session, tenant_id, clock, {"subscriptions": [SUBSCRIPTION]})
    assert (again.subscriptions, again.events) == (RecordCounts(unchanged=1), 0)
    assert len(events(session, tenant_id)) == 2


@pytest.mark.parametrize(
    ("next_bill_at", "due", "days"),
    [
        ("2026-03-05T09:00:00Z", START, 3),  # inside the lead: due now
        ("2026-03-03T21:00:00Z", START, 1),  # tomorrow evening in Paris: "in 1 day"
        ("2026-03-03T23:30:00Z", START, 2),  # already the 4th in Paris: "in 2 days"
        ("2026-03-02T08:00:00Z", None, None),  # the bill has passed: nothing to announce
    ],
)
def test_billed_soon_comes_late_or_not_at_all(
    session: Session,
    tenant_id: int,
    clock: FixedClock,
    next_bill_at: str,
    due: datetime | None,
    days: int | None,
) -> None:
    sub = SUBSCRIPTION | {"next_bill_at": next_bill_at, "started_at": "2026-03-01"}
    run(session, tenant_id, clock, {"subscriptions": [sub]})
    billed = [e for e in events(session, tenant_id).values() if "billed" in e.key]
    if due is None:
        assert billed == []
        return
    (event,) = billed
    assert (event.due_at, event.context["days_until_bill"]) == (due, days)


def test_a_renewal_moves_the_notice_and_retires_the_stale_one(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    run(session, tenant_id, clock, {"subscriptions": [SUBSCRIPTION]})
    clock.advance(timedelta(days=10))
    renewed = SUBSCRIPTION | {"next_bill_at": "2026-05-02T09:00:00Z"}

    assert run(session, tenant_id, clock, {"subscriptions": [renewed]}).events == 1

    found = events(session, tenant_id)
    stale = found["subscription:S-1:billed:2026-04-02"]
    assert (stale.status, stale.handled_at) == (EventStatus.SKIPPED, clock.now())
    assert stale.note == "the next bill moved to 2026-05-02T09:00:00+00:00"
    new = found["subscription:S-1:billed:2026-05-02"]
    assert (new.status, new.due_at) == (EventStatus.PENDING, datetime(2026, 4, 25, 9, tzinfo=UTC))
    assert new.context["subscription"]["next_bill_at"] == "2026-05-02T09:00:00+00:00"

    # The May notice went out; the ERP renews again after billing: a June notice, May's kept.
    set_status(session, new, EventStatus.QUEUED)
    clock.set(datetime(2026, 5, 3, tzinfo=UTC))
    run(session, tenant_id, clock, {"subscriptions": [renewed | {"next_bill_at": "2026-06-02"}]})
    found = events(session, tenant_id)
    assert found["subscription:S-1:billed:2026-05-02"].status is EventStatus.QUEUED
    june = found["subscription:S-1:billed:2026-06-02"]  # midnight in Paris: the key's date
    assert june.due_at == datetime(2026, 5, 25, 22, tzinfo=UTC)


def test_a_price_change_updates_the_pending_notice(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    run(session, tenant_id, clock, {"subscriptions": [SUBSCRIPTION]})
    set_status(
        session, events(session, tenant_id)["subscription:S-1:confirmed"], EventStatus.QUEUED
    )
    run(session, tenant_id, clock, {"subscriptions": [SUBSCRIPTION | {"amount": "59.00"}]})
    found = events(session, tenant_id)
    assert len(found) == 2
    assert (
        found["subscription:S-1:billed:2026-04-02"].context["subscription"]["amount_minor"] == 5900
    )
    assert found["subscription:S-1:confirmed"].context["subscription"]["amount_minor"] == 4900


def test_a_cancellation_is_announced_once_and_ends_the_notices(
    session: Session, tenant_id: int, clock: FixedClock, renderer: Renderer
) -> None:
    run(session, tenant_id, clock, {"subscriptions": [SUBSCRIPTION]})
    set_status(
        session, events(session, tenant_id)["subscription:S-1:confirmed"], EventStatus.QUEUED
    )
    clock.advance(timedelta(days=5))
    cancelled = SUBSCRIPTION | {
        "status": "cancelled",
        "cancelled_at": "2026-03-07T10:00:00Z",
        "ends_at": "2026-04-02T09:00:00Z",
    }

    report = run(session, tenant_id, clock, {"subscriptions": [cancelled]})

    assert (report.subscriptions, report.events) == (RecordCounts(updated=1), 1)
    found = events(session, tenant_id)
    notice = found["subscription:S-1:cancelled"]
    assert (notice.kind, notice.due_at) == ("subscription_cancelled", clock.now())
    assert notice.context["subscription"] == {
        "plan": "Business",
        "amount_minor": 4900,
        "currency": "EUR",
        "interval": "month",
        "started_at": "2026-03-02T09:00:00+00:00",
        "next_bill_at": None,  # nothing more is billed, whatever the ERP still carries
        "cancelled_at": "2026-03-07T10:00:00+00:00",
        "ends_at": "2026-04-02T09:00:00+00:00",
    }
    assert "cancelled" in render(renderer, notice).subject
    soon = found["subscription:S-1:billed:2026-04-02"]
    assert (soon.status, soon.note) == (EventStatus.SKIPPED, "the subscription was cancelled")
    assert found["subscription:S-1:confirmed"].status is EventStatus.QUEUED

    clock.advance(timedelta(days=1))
    assert run(session, tenant_id, clock, {"subscriptions": [cancelled]}).events == 0
    run(session, tenant_id, clock, {"subscriptions": [cancelled | {"ends_at": "2026-04-30"}]})
    found = events(session, tenant_id)
    assert len(found) == 3
    assert found["subscription:S-1:cancelled"].context["subscription"]["ends_at"] == (
        "2026-04-29T22:00:00+00:00"
    )


def test_a_cancellation_before_the_confirmation_went_out_skips_it(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    run(session, tenant_id, clock, {"subscriptions": [SUBSCRIPTION]})
    cancelled = SUBSCRIPTION | {"status": "cancelled", "cancelled_at": "2026-03-02T09:30:00Z"}
    run(session, tenant_id, clock, {"subscriptions": [cancelled]})
    found = events(session, tenant_id)
    confirmed = found["subscription:S-1:confirmed"]
    assert (confirmed.status, confirmed.note) == (
        EventStatus.SKIPPED,
        "cancelled before the confirmation was sent",
    )
    assert found["subscription:S-1:cancelled"].status is EventStatus.PENDING


def test_a_subscription_first_seen_cancelled_is_history(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    old = SUBSCRIPTION | {"status": "cancelled", "started_at": "2025-06-01"}
    old |= {"cancelled_at": "2026-01-10", "ends_at": None}
    report = run(session, tenant_id, clock, {"subscriptions": [old]})
    assert (report.subscriptions, report.events) == (RecordCounts(created=1), 0)
    assert events(session, tenant_id) == {}


def test_subscriptions_are_validated(session: Session, tenant_id: int, clock: FixedClock) -> None:
    data = {
        "subscriptions": [
            SUBSCRIPTION | {"status": "cancelled"},
            SUBSCRIPTION | {"id": "S-2", "next_bill_at": "2026-03-01"},
            SUBSCRIPTION | {"id": "S-3", "interval": "day"},
            SUBSCRIPTION | {"id": "S-4", "customer": "C-9"},
            SUBSCRIPTION | {"id": "S-5", "amount": "-1.00"},
            SUBSCRIPTION | {"id": "S-6", "cancelled_at": "2026-03-10", "ends_at": "2026-03-09"},
            SUBSCRIPTION | {"id": "S-7", "amount": "0", "next_bill_at": None},  # a free plan
        ]
    }
    report = run(session, tenant_id, clock, data)
    reasons = where(report)
    assert reasons == {
        "subscriptions[0].cancelled_at": "required when the status is cancelled",
        "subscriptions[1].next_bill_at": "is before started_at",
        "subscriptions[2].interval": reasons["subscriptions[2].interval"],
        "subscriptions[3].customer": "unknown customer 'C-9'",
        "subscriptions[4].amount": "must not be negative",
        "subscriptions[5].ends_at": "is before cancelled_at",
    }
    assert "'week', 'month', 'quarter' or 'year'" in reasons["subscriptions[2].interval"]
    assert report.subscriptions == RecordCounts(created=1)
    assert list(events(session, tenant_id)) == ["subscription:S-7:confirmed"]


# -- every kind together -------------------------------------------------------------------


def test_one_document_with_every_event_and_bad_records_among_them(
    session: Session, tenant_id: int, clock: FixedClock, renderer: Renderer
) -> None:
    pay = PAYMENT | {"invoices": [{"invoice": "I-3", "amount": "120.00"}]}
    data = {
        "credit_notes": [CREDIT_NOTE, CREDIT_NOTE | {"id": "CN-2", "invoice": "I-404"}],
        "payments": [pay, pay | {"id": "P-2", "customer": "C-404"}],
        "refunds": [REFUND, REFUND | {"id": "RF-2", "payment": "P-2"}],
        "autopay_failures": [AUTOPAY, AUTOPAY | {"id": "AP-2", "amount": "-5"}],
        "subscriptions": [SUBSCRIPTION, SUBSCRIPTION | {"id": "S-2", "status": "paused"}],
    }

    report = run(session, tenant_id, clock, data)

    assert list(where(report)) == [
        "credit_notes[1].invoice",
        "payments[1].customer",
        "refunds[1].payment",
        "autopay_failures[1].amount",
        "subscriptions[1].status",
    ]
    assert report.events == 6
    found = events(session, tenant_id)
    assert {e.kind for e in found.values()} == set(SHAPES) - {"subscription_cancelled"}
    for event in found.values():
        rendered = render(renderer, event)
        assert rendered.subject and rendered.text and rendered.html
    assert "6 events recorded" in report.summary()


def test_tenants_have_their_own_events(session: Session, tenant_id: int, clock: FixedClock) -> None:
    other = add_tenant(session, "umbrella")
    run(session, other, clock, ledger_document())
    for tenant in (tenant_id, other):
        assert run(session, tenant, clock, {"payments": [PAYMENT]}).events == 1
    assert list(events(session, tenant_id)) == list(events(session, other)) == ["payment:P-1"]


# -- pure timing rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hours_ahead", "zone", "expected"),
    [
        (7 * 24, "UTC", 7),
        (7 * 24 - 1, "UTC", 7),
        (36, "UTC", 1),  # 21:00 tomorrow: the date beside it says tomorrow
        (39, "UTC", 2),  # midnight the day after
        (24, "UTC", 1),
        (1, "UTC", 1),
        (1, "Pacific/Kiritimati", 1),  # 23:00 -> 00:00 there: tomorrow, though 1 hour away
        (14, "Pacific/Kiritimati", 1),  # the same UTC day, but tomorrow in UTC+14
        (14, "Pacific/Pago_Pago", 1),  # 22:00 -> 12:00 the next day in UTC-11
    ],
)
def test_days_until_counts_calendar_days_in_the_customers_zone(
    hours_ahead: int, zone: str, expected: int
) -> None:
    assert days_until(START + timedelta(hours=hours_ahead), now=START, zone=zone) == expected


def test_billed_soon_due() -> None:
    lead = timedelta(days=7)
    assert billed_soon_due(START + timedelta(days=30), now=START, lead=lead) == START + timedelta(
        days=23
    )
    assert billed_soon_due(START + timedelta(days=2), now=START, lead=lead) == START
    assert billed_soon_due(START, now=START, lead=lead) is None


# -- the migration -------------------------------------------------------------------------


def test_upgrading_keeps_existing_credit_notes_and_payments(blank_db_url: str) -> None:
    engine = make_engine(blank_db_url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
    at = {"at": START}
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO tenant (id, slug, name, email, delivery, time_zone, locale,"
                " created_at) VALUES (1, 'a', 'A', 'a@a.example', 'relay', 'UTC', 'en', :at)"
            ),
            at,
        )
        conn.execute(
            sa.text(
                "INSERT INTO customer (id, tenant_id, external_id, name, chase, created_at,"
                " updated_at) VALUES (1, 1, 'C-1', 'Globex', true, :at, :at)"
            ),
            at,
        )
        conn.execute(
            sa.text(
                "INSERT INTO creditnote (tenant_id, customer_id, external_id, number, currency,"
                " amount_minor, issued_at, lines) VALUES (1, 1, 'CN-1', 'A-1', 'EUR', 100, :at,"
                " '[]')"
            ),
            at,
        )
    create_schema(engine)  # to head
    with Session(engine) as session:
        note = session.exec(select(CreditNote)).one()
        assert (note.version, note.reason) == (1, None)
    engine.dispose()
