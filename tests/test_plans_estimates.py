"""Estimates and payment plans in the import, on SQLite and PostgreSQL: their emails wait a
grace period restarted by each edit, and an active plan holds the dunning of its invoices."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any, get_type_hints

import pytest
from sqlmodel import Session, col, select

from dunmail.app import Services
from mailer.clock import FixedClock
from mailer.content import shapes
from mailer.content.render import Renderer
from mailer.content.samples import sample_context
from mailer.ledger.imports import ImportReport, RecordCounts, import_document
from mailer.ledger.models import (
    Estimate,
    Event,
    EventStatus,
    Hold,
    HoldReason,
    Invoice,
    PaymentPlan,
)
from mailer.outbound.compose import Rendered
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.models import Message
from scheduler.invoice_state import active_holds
from tests.conftest import DEMO_DOC, START, emails
from tests.test_events import BASE_KEYS, GRACE, _conforms, _same_keys, add_tenant

SHAPES: dict[str, type] = {
    "estimate": shapes.EstimateEmail,
    "payment_plan": shapes.PaymentPlanEmail,
}


# -- fixtures and helpers ------------------------------------------------------------------


def ledger_document() -> dict[str, Any]:
    line = {"description": "Widgets", "quantity": "1", "unit_price": "120.00"}
    invoice = {"currency": "EUR", "issued_at": "2026-03-01", "due_at": "2026-03-31"}
    return {
        "customers": [{"id": "C-1", "name": "Globex"}, {"id": "C-2", "name": "Initech"}],
        "invoices": [
            {"id": "I-1", "number": "F-001", "customer": "C-1", **invoice, "lines": [line]},
            {"id": "I-2", "number": "F-002", "customer": "C-1", **invoice, "lines": [line]},
            {"id": "I-3", "number": "F-003", "customer": "C-2", **invoice, "lines": [line]},
            {
                "id": "I-4",
                "number": "F-004",
                "customer": "C-1",
                **invoice,
                "currency": "USD",
                "lines": [line],
            },
            {
                "id": "I-5",
                "number": "F-005",
                "customer": "C-1",
                **invoice,
                "status": "void",
                "lines": [line],
            },
        ],
        "payments": [
            {
                "id": "P-1",
                "customer": "C-1",
                "amount": "20.00",
                "currency": "EUR",
                "received_at": "2026-03-01T12:00:00Z",
                "invoices": [{"invoice": "I-2", "amount": "20.00"}],
            }
        ],
    }


@pytest.fixture
def tenant_id(session: Session, clock: FixedClock) -> int:
    tenant_id = add_tenant(session, "acme")
    assert run(session, tenant_id, clock, ledger_document()).errors == []
    return tenant_id


def run(session: Session, tenant_id: int, clock: FixedClock, data: dict[str, Any]) -> ImportReport:
    report = import_document(
        session, tenant_id=tenant_id, data=copy.deepcopy(data), now=clock.now(), grace=GRACE
    )
    session.commit()
    return report


def events(session: Session, tenant_id: int, kind: str) -> dict[str, Event]:
    session.expire_all()
    rows = session.exec(select(Event).where(Event.tenant_id == tenant_id, Event.kind == kind))
    return {e.key: e for e in rows}


def where(report: ImportReport) -> dict[str, str]:
    return {e.where: e.reason for e in report.errors}


def row(session: Session, table: Any, external_id: str) -> Any:
    session.expire_all()
    return session.exec(select(table).where(table.external_id == external_id)).one()


def render(renderer: Renderer, event: Event) -> Rendered:
    """The event's context, checked against its kind's type and completed from the sample's
    tenant and customer, as the scheduler pass would."""
    sample = sample_context(event.kind, locale="en")
    own = {k: v for k, v in sample.items() if k not in BASE_KEYS}
    assert set(event.context) == set(own)
    _same_keys(event.context, own, event.kind)
    hints = get_type_hints(SHAPES[event.kind])
    for key, value in event.context.items():
        _conforms(value, hints[key], f"{event.kind}.{key}")
    base = {k: v for k, v in sample.items() if k in BASE_KEYS}
    rendered = renderer.render(event.kind, base | copy.deepcopy(event.context))
    assert rendered.subject and rendered.text and rendered.html
    return rendered


def plan_holds(session: Session, plan: str) -> list[Hold]:
    session.expire_all()
    plan_id = row(session, PaymentPlan, plan).id
    return list(
        session.exec(
            select(Hold).where(Hold.payment_plan_id == plan_id).order_by(col(Hold.id))
        ).all()
    )


def held(session: Session, now: datetime) -> dict[str, HoldReason]:
    """Invoice number -> the reason it is held at ``now``, as the dunning pass sees it."""
    invoices = list(session.exec(select(Invoice)).all())
    holds = active_holds(session, invoices, now)
    return {i.number: holds[i.id].reason for i in invoices if i.id in holds}


ESTIMATE: dict[str, Any] = {
    "id": "E-1",
    "number": "EST-1",
    "customer": "C-1",
    "currency": "EUR",
    "issued_at": "2026-03-02",
    "valid_until": "2026-04-01",
    "status": "sent",
    "lines": [
        {"description": "Install", "quantity": "2", "unit_price": "50.00", "tax_rate": "20"},
        {"description": "Visit", "quantity": "1", "unit_price": "30.00"},
    ],
}

PLAN: dict[str, Any] = {
    "id": "PP-1",
    "number": "PLAN-1",
    "customer": "C-1",
    "currency": "EUR",
    "status": "proposed",
    "approve_by": "2026-03-20",
    "installments": [
        {"due_at": "2026-04-01", "amount": "110.00"},
        {"due_at": "2026-05-01", "amount": "110.00"},
    ],
    "invoices": ["I-1", "I-2"],
}


# -- estimates -----------------------------------------------------------------------------


def test_a_sent_estimate_waits_a_grace_period_restarted_by_each_edit(
    session: Session, tenant_id: int, clock: FixedClock, renderer: Renderer
) -> None:
    assert run(session, tenant_id, clock, {"estimates": [ESTIMATE]}).estimates == (
        RecordCounts(created=1)
    )
    estimate = row(session, Estimate, "E-1")
    event = events(session, tenant_id, "estimate")["estimate:E-1:v1"]
    assert (event.due_at, event.version, event.status) == (START + GRACE, 1, EventStatus.PENDING)
    assert (event.document, event.customer_id, event.invoice_id) == (
        f"estimate:{estimate.id}",
        estimate.customer_id,
        None,
    )
    assert event.context == {
        "estimate": {
            "number": "EST-1",
            "version": 1,
            "currency": "EUR",
            "total_minor": 15000,
            "tax_minor": 2000,
            "issued_at": "2026-03-02T00:00:00+00:00",
            "valid_until": "2026-04-01T00:00:00+00:00",
            "lines": [
                {
                    "description": "Install",
                    "quantity": "2",
                    "unit_price_minor": 5000,
                    "tax_rate": "20",
                    "net_minor": 10000,
                    "tax_minor": 2000,
                    "total_minor": 12000,
                },
                {
                    "description": "Visit",
                    "quantity": "1",
                    "unit_price_minor": 3000,
                    "tax_rate": None,
                    "net_minor": 3000,
                    "tax_minor": 0,
                    "total_minor": 3000,
                },
            ],
        }
    }
    assert "EST-1" in render(renderer, event).subject

    clock.advance(timedelta(minutes=3))  # unchanged: nothing moves
    assert run(session, tenant_id, clock, {"estimates": [ESTIMATE]}).estimates == (
        RecordCounts(unchanged=1)
    )
    assert events(session, tenant_id, "estimate")["estimate:E-1:v1"].due_at == START + GRACE

    edited = copy.deepcopy(ESTIMATE)
    edited["lines"][1]["quantity"] = "3"
    report = run(session, tenant_id, clock, {"estimates": [edited]})
    assert (report.estimates, report.events) == (RecordCounts(updated=1), 0)
    found = events(session, tenant_id, "estimate")
    assert list(found) == ["estimate:E-1:v2"]  # the waiting email now sends version 2
    event = found["estimate:E-1:v2"]
    assert (event.due_at, event.version) == (clock.now() + GRACE, 2)
    assert row(session, Estimate, "E-1").version == 2
    assert event.context["estimate"]["total_minor"] == 21000
    assert event.context["estimate"]["version"] == 2
    render(renderer, event)

    event.status = EventStatus.QUEUED  # stands in for the scheduler pass sending it
    session.add(event)
    session.commit()
    clock.advance(timedelta(days=1))
    assert run(session, tenant_id, clock, {"estimates": [edited]}).events == 0
    # A revision of an estimate already emailed is a new version, emailed in its turn.
    assert run(session, tenant_id, clock, {"estimates": [ESTIMATE]}).events == 1
    found = events(session, tenant_id, "estimate")
    assert {k: (e.status, e.version) for k, e in found.items()} == {
        "estimate:E-1:v2": (EventStatus.QUEUED, 2),
        "estimate:E-1:v3": (EventStatus.PENDING, 3),
    }
    assert found["estimate:E-1:v3"].due_at == clock.now() + GRACE


def test_a_draft_estimate_is_never_emailed_until_it_is_sent(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    draft = ESTIMATE | {"status": "draft"}
    assert run(session, tenant_id, clock, {"estimates": [draft]}).events == 0
    edited = draft | {"valid_until": "2026-04-15"}
    assert run(session, tenant_id, clock, {"estimates": [edited]}).estimates == (
        RecordCounts(updated=1)
    )
    assert events(session, tenant_id, "estimate") == {}
    assert row(session, Estimate, "E-1").version == 2

    clock.advance(timedelta(hours=1))
    later = edited | {"status": "sent", "issued_at": "2026-03-05T08:00:00Z"}
    assert run(session, tenant_id, clock, {"estimates": [later]}).events == 1
    event = events(session, tenant_id, "estimate")["estimate:E-1:v3"]
    # Issued later than the grace period ends: it waits for its date, like an invoice.
    assert event.due_at == datetime(2026, 3, 5, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "note"),
    [
        ("accepted", "the estimate was accepted before it was sent"),
        ("declined", "the estimate was declined before it was sent"),
        ("expired", "the estimate expired before it was sent"),
        ("draft", "the estimate went back to draft before it was sent"),
    ],
)
def test_an_estimate_no_longer_sent_before_its_email_went_is_skipped(
    session: Session, tenant_id: int, clock: FixedClock, status: str, note: str
) -> None:
    run(session, tenant_id, clock, {"estimates": [ESTIMATE]})
    clock.advance(timedelta(minutes=2))
    report = run(session, tenant_id, clock, {"estimates": [ESTIMATE | {"status": status}]})
    assert report.estimates == RecordCounts(updated=1)
    event = events(session, tenant_id, "estimate")["estimate:E-1:v1"]
    assert (event.status, event.note, event.handled_at) == (EventStatus.SKIPPED, note, clock.now())
    assert row(session, Estimate, "E-1").version == 1  # a status is not content
    # Sent again, the same version has had its occasion: no second email.
    assert run(session, tenant_id, clock, {"estimates": [ESTIMATE]}).events == 0


def test_an_estimate_first_seen_accepted_is_history(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    report = run(session, tenant_id, clock, {"estimates": [ESTIMATE | {"status": "accepted"}]})
    assert (report.estimates, report.events) == (RecordCounts(created=1), 0)


def test_estimate_errors_are_positioned(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    run(session, tenant_id, clock, {"estimates": [ESTIMATE]})
    bad_line = {"description": "Refund", "quantity": "1", "unit_price": "-10.00"}
    data = {
        "estimates": [
            ESTIMATE | {"id": "E-2", "number": "EST-2", "valid_until": "2026-03-01"},
            ESTIMATE | {"id": "E-3", "number": "EST-3", "customer": "C-9"},
            ESTIMATE | {"id": "E-4", "number": "EST-1"},
            ESTIMATE | {"id": "E-5", "number": "EST-5", "status": "open"},
            ESTIMATE | {"id": "E-6", "number": "EST-6", "lines": [bad_line]},
            ESTIMATE | {"id": "E-7", "number": "EST-7", "lines": []},
            ESTIMATE | {"id": "E-8", "number": "EST-8"},
            ESTIMATE | {"id": "E-9", "number": "EST-8"},
        ]
    }
    report = run(session, tenant_id, clock, data)
    reasons = where(report)
    assert reasons == {
        "estimates[0].valid_until": "is before issued_at",
        "estimates[1].customer": "unknown customer 'C-9'",
        "estimates[2].number": "number 'EST-1' already belongs to estimate 'E-1'",
        "estimates[3].status": reasons["estimates[3].status"],
        "estimates[4].lines": "the estimate total is negative",
        "estimates[5].lines": "must not be empty",
        "estimates[6].number": "duplicate estimate number 'EST-8' (also at estimates[7])",
        "estimates[7].number": "duplicate estimate number 'EST-8' (also at estimates[6])",
    }
    assert "'draft', 'sent', 'accepted', 'declined' or 'expired'" in reasons["estimates[3].status"]
    assert report.estimates == RecordCounts()
    assert list(events(session, tenant_id, "estimate")) == ["estimate:E-1:v1"]


# -- payment plans: the proposal -----------------------------------------------------------


def test_a_proposed_plan_is_emailed_after_a_grace_period_restarted_by_each_edit(
    session: Session, tenant_id: int, clock: FixedClock, renderer: Renderer
) -> None:
    assert run(session, tenant_id, clock, {"payment_plans": [PLAN]}).payment_plans == (
        RecordCounts(created=1)
    )
    plan = row(session, PaymentPlan, "PP-1")
    event = events(session, tenant_id, "payment_plan")["payment_plan:PP-1"]
    assert (event.due_at, event.document, event.customer_id) == (
        START + GRACE,
        f"payment_plan:{plan.id}",
        plan.customer_id,
    )
    assert event.context == {
        "payment_plan": {
            "number": "PLAN-1",
            "currency": "EUR",
            "total_minor": 22000,
            "approve_by": "2026-03-20T00:00:00+00:00",
            "installments": [
                {"due_at": "2026-04-01T00:00:00+00:00", "amount_minor": 11000},
                {"due_at": "2026-05-01T00:00:00+00:00", "amount_minor": 11000},
            ],
            # The open balances: P-1 paid 20.00 of F-002.
            "invoices": [
                {"number": "F-001", "amount_minor": 12000},
                {"number": "F-002", "amount_minor": 10000},
            ],
        }
    }
    rendered = render(renderer, event)
    assert "PLAN-1" in rendered.subject and "F-002" in rendered.text
    assert plan_holds(session, "PP-1") == []  # proposed: nothing is held yet

    clock.advance(timedelta(minutes=4))
    assert run(session, tenant_id, clock, {"payment_plans": [PLAN]}).payment_plans == (
        RecordCounts(unchanged=1)
    )
    edited = copy.deepcopy(PLAN)
    edited["installments"][1]["amount"] = "100.00"
    edited["approve_by"] = None
    assert run(session, tenant_id, clock, {"payment_plans": [edited]}).payment_plans == (
        RecordCounts(updated=1)
    )
    event = events(session, tenant_id, "payment_plan")["payment_plan:PP-1"]
    assert event.due_at == clock.now() + GRACE
    assert event.context["payment_plan"]["total_minor"] == 21000
    assert event.context["payment_plan"]["approve_by"] is None
    render(renderer, event)


@pytest.mark.parametrize("status", ["active", "cancelled", "completed"])
def test_a_proposal_answered_before_it_went_is_skipped(
    session: Session, tenant_id: int, clock: FixedClock, status: str
) -> None:
    run(session, tenant_id, clock, {"payment_plans": [PLAN]})
    clock.advance(timedelta(minutes=1))
    assert run(session, tenant_id, clock, {"payment_plans": [PLAN | {"status": status}]}).ok
    event = events(session, tenant_id, "payment_plan")["payment_plan:PP-1"]
    assert (event.status, event.note) == (
        EventStatus.SKIPPED,
        f"the plan became {status} before the proposal was sent",
    )


def test_a_plan_first_seen_active_asks_for_no_approval(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    report = run(session, tenant_id, clock, {"payment_plans": [PLAN | {"status": "active"}]})
    assert (report.payment_plans, report.events) == (RecordCounts(created=1), 0)


# -- payment plans: the holds --------------------------------------------------------------


@pytest.mark.parametrize("end", ["completed", "cancelled"])
def test_an_active_plan_holds_its_invoices_until_it_ends(
    session: Session, tenant_id: int, clock: FixedClock, end: str
) -> None:
    clock.advance(timedelta(hours=1))
    active = PLAN | {"status": "active"}
    run(session, tenant_id, clock, {"payment_plans": [active]})
    holds = plan_holds(session, "PP-1")
    assert [(h.invoice_id, h.reason, h.note, h.created_by, h.lifted_at) for h in holds] == [
        (
            row(session, Invoice, "I-1").id,
            HoldReason.PAYMENT_PLAN,
            "payment plan PLAN-1",
            "import",
            None,
        ),
        (
            row(session, Invoice, "I-2").id,
            HoldReason.PAYMENT_PLAN,
            "payment plan PLAN-1",
            "import",
            None,
        ),
    ]
    assert {h.customer_id for h in holds} == {row(session, PaymentPlan, "PP-1").customer_id}
    assert held(session, clock.now()) == {
        "F-001": HoldReason.PAYMENT_PLAN,
        "F-002": HoldReason.PAYMENT_PLAN,
    }
    for external_id in ("I-1", "I-2"):  # the scheduler looks at them again at once
        assert row(session, Invoice, external_id).next_action_at == clock.now()
    assert row(session, Invoice, "I-3").next_action_at == START

    assert run(session, tenant_id, clock, {"payment_plans": [active]}).payment_plans == (
        RecordCounts(unchanged=1)
    )
    assert len(plan_holds(session, "PP-1")) == 2  # idempotent: no second hold

    clock.advance(timedelta(days=1))  # F-002 leaves the plan: its hold is lifted
    run(session, tenant_id, clock, {"payment_plans": [active | {"invoices": ["I-1"]}]})
    assert held(session, clock.now()) == {"F-001": HoldReason.PAYMENT_PLAN}
    assert row(session, Invoice, "I-2").next_action_at == clock.now()
    assert row(session, Invoice, "I-1").next_action_at == START + timedelta(hours=1)

    clock.advance(timedelta(days=1))
    run(session, tenant_id, clock, {"payment_plans": [active | {"status": end}]})
    assert held(session, clock.now()) == {}
    assert [h.lifted_at for h in plan_holds(session, "PP-1")] == [
        clock.now(),
        clock.now() - timedelta(days=1),
    ]
    assert row(session, Invoice, "I-1").next_action_at == clock.now()
    assert events(session, tenant_id, "payment_plan") == {}

    clock.advance(timedelta(days=1))  # renegotiated: active again, held again
    run(session, tenant_id, clock, {"payment_plans": [active | {"number": "PLAN-1b"}]})
    assert held(session, clock.now()) == {
        "F-001": HoldReason.PAYMENT_PLAN,
        "F-002": HoldReason.PAYMENT_PLAN,
    }
    assert [h.note for h in plan_holds(session, "PP-1") if h.lifted_at is None] == [
        "payment plan PLAN-1b"
    ] * 2


def test_a_hold_lifted_by_hand_stays_lifted_when_the_plan_is_edited(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    active = PLAN | {"status": "active"}
    run(session, tenant_id, clock, {"payment_plans": [active]})
    first = plan_holds(session, "PP-1")[0]
    first.lifted_at = clock.now()  # as `dunmail hold lift` does
    session.add(first)
    session.commit()
    run(session, tenant_id, clock, {"payment_plans": [active | {"number": "PLAN-2"}]})
    assert held(session, clock.now()) == {"F-002": HoldReason.PAYMENT_PLAN}
    assert len(plan_holds(session, "PP-1")) == 2


def test_payment_plan_errors_are_positioned(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    installments = copy.deepcopy(PLAN["installments"])
    data = {
        "payment_plans": [
            PLAN | {"id": "PP-2", "invoices": ["I-1", "x"]},
            PLAN | {"id": "PP-3", "invoices": ["I-3"]},
            PLAN | {"id": "PP-4", "invoices": ["I-1", "I-4"]},
            PLAN | {"id": "PP-5", "invoices": ["I-5"]},
            PLAN | {"id": "PP-6", "invoices": ["I-1", "I-2", "I-1"]},
            PLAN | {"id": "PP-7", "installments": installments[::-1]},
            PLAN | {"id": "PP-8", "installments": [{"due_at": "2026-04-01", "amount": "0"}]},
            PLAN | {"id": "PP-9", "approve_by": "2026-04-02"},
            PLAN | {"id": "PP-10", "installments": []},
            PLAN | {"id": "PP-11", "customer": "C-9"},
            PLAN | {"id": "PP-12", "status": "paused", "invoices": []},
            PLAN | {"id": "PP-13", "installments": [{"due_at": "soon", "amount": "1"}]},
            PLAN | {"id": "PP-14", "installments": [{"due_at": "2026-04-01", "amount": "1.234"}]},
        ]
    }
    report = run(session, tenant_id, clock, data)
    reasons = where(report)
    assert reasons == {
        "payment_plans[0].invoices[1]": "unknown invoice 'x'",
        "payment_plans[1].invoices[0]": "invoice 'I-3' belongs to another customer",
        "payment_plans[2].invoices[1]": "invoice 'I-4' is in USD, not EUR",
        "payment_plans[3].invoices[0]": "invoice 'I-5' is void",
        "payment_plans[4].invoices[2]": "invoice 'I-1' is listed twice (also at invoices[0])",
        "payment_plans[5].installments[1].due_at": "is not after installments[0].due_at",
        "payment_plans[6].installments[0].amount": "must be positive",
        "payment_plans[7].approve_by": "is after the first installment's due_at",
        "payment_plans[8].installments": "must not be empty",
        "payment_plans[9].customer": "unknown customer 'C-9'",
        "payment_plans[10].status": reasons["payment_plans[10].status"],
        "payment_plans[10].invoices": "must not be empty",
        "payment_plans[11].installments[0].due_at": reasons[
            "payment_plans[11].installments[0].due_at"
        ],
        "payment_plans[12].installments[0].amount": (
            "EUR has 2 decimal places; 1.234 cannot be represented exactly"
        ),
    }
    assert "ISO 8601" in reasons["payment_plans[11].installments[0].due_at"]
    assert report.payment_plans == RecordCounts()
    assert session.exec(select(PaymentPlan)).all() == []
    assert events(session, tenant_id, "payment_plan") == {}


def test_a_cancelled_plan_may_keep_an_invoice_voided_since(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    run(session, tenant_id, clock, {"payment_plans": [PLAN | {"status": "active"}]})
    voided = ledger_document()["invoices"][0] | {"status": "void"}
    assert run(session, tenant_id, clock, {"invoices": [voided]}).ok
    report = run(session, tenant_id, clock, {"payment_plans": [PLAN | {"status": "cancelled"}]})
    assert report.payment_plans == RecordCounts(updated=1)
    assert held(session, clock.now()) == {}


# -- both together -------------------------------------------------------------------------


def test_reimporting_estimates_and_plans_changes_nothing(
    session: Session, tenant_id: int, clock: FixedClock
) -> None:
    data = {
        "estimates": [ESTIMATE, ESTIMATE | {"id": "E-2", "number": "EST-2", "status": "draft"}],
        "payment_plans": [PLAN, PLAN | {"id": "PP-2", "status": "active", "invoices": ["I-1"]}],
    }
    first = run(session, tenant_id, clock, data)
    assert (first.estimates, first.payment_plans, first.events) == (
        RecordCounts(created=2),
        RecordCounts(created=2),
        2,
    )
    assert "estimates 2 created, 0 updated, 0 unchanged" in first.summary()
    assert first.as_dict()["payment_plans"] == {"created": 2, "updated": 0, "unchanged": 0}
    clock.advance(timedelta(minutes=1))
    again = run(session, tenant_id, clock, data)
    assert (again.estimates, again.payment_plans, again.events, again.errors) == (
        RecordCounts(unchanged=2),
        RecordCounts(unchanged=2),
        0,
        [],
    )
    assert len(session.exec(select(Hold)).all()) == 1
    found = events(session, tenant_id, "estimate") | events(session, tenant_id, "payment_plan")
    assert {k: e.due_at for k, e in found.items()} == {
        "estimate:E-1:v1": START + GRACE,
        "payment_plan:PP-1": START + GRACE,
    }


# -- end to end: the scheduler respects a plan's hold --------------------------------------


def _sent_kinds(services: Services) -> list[str]:
    with Session(services.engine) as session:
        rows = session.exec(select(Message).order_by(col(Message.id))).all()
        return [m.kind for m in rows]


async def test_an_active_plan_stops_reminders_and_its_cancellation_resumes_them(
    services: Services, transport: MemoryTransport, clock: FixedClock
) -> None:
    app = services
    # DEMO_DOC's INV-1042 is due 2026-03-31; its customer has contacts, in UTC.
    plan = {
        "id": "pp-1",
        "number": "PLAN-7",
        "customer": "C-1",
        "currency": "EUR",
        "status": "active",
        "installments": [
            {"due_at": "2026-04-15", "amount": "60.00"},
            {"due_at": "2026-05-15", "amount": "60.00"},
        ],
        "invoices": ["i-1042"],
    }
    doc = copy.deepcopy(DEMO_DOC) | {"payment_plans": [plan]}
    assert app.ledger.import_document(doc, tenant="acme").errors == []
    clock.set(START + timedelta(minutes=6))
    await app.dunning.tick()
    assert _sent_kinds(app) == ["new_invoice"]  # a hold never stops the invoice itself
    for day in (28, 30, 31):
        clock.set(datetime(2026, 3, day, 10, tzinfo=UTC))
        await app.dunning.tick()
    clock.set(datetime(2026, 4, 2, 9, tzinfo=UTC))
    await app.dunning.tick()
    assert _sent_kinds(app) == ["new_invoice"]  # past due, but on the plan: not chased

    assert app.ledger.import_document(
        {"payment_plans": [plan | {"status": "cancelled"}]}, tenant="acme"
    ).ok
    clock.set(datetime(2026, 4, 2, 9, 1, tzinfo=UTC))
    await app.dunning.tick()
    assert _sent_kinds(app) == ["new_invoice", "late_payment_reminder"]
    assert len(emails(transport)) == 2
