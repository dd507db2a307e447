"""Dates in the customer's calendar: every email, PDF and hosted page prints the local day.

The ledger stores instants in UTC; a date imported without a time is midnight where the customer
is. Printed as a UTC date, 31 March in Paris or Kiritimati (UTC+14) came out as 30 March and
"days overdue" was a day off. These tests print through the real filters (email, PDF, hosted
page) for any instant and any zone, import date-only fields in any zone, and drive import ->
tick -> outbox for customers at both ends of the clock.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from email import message_from_bytes, policy
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, col, select

from dunmail.app import Services
from dunmail.web.hosted import build_document
from mailer.clock import FixedClock
from mailer.content.context import invoice_context, party_context
from mailer.content.event_context import payment_plan_context
from mailer.content.formatting import format_day
from mailer.content.pdf_html import environment, render_html
from mailer.content.pdfstore import build_pdf_context
from mailer.content.render import Renderer
from mailer.content.statement import Transaction, statement
from mailer.ledger.documents import parse_document
from mailer.ledger.localtime import days_between, local_date
from mailer.ledger.models import Customer, Invoice, PaymentPlan, PaymentPlanStatus, Tenant
from mailer.outbound.memory import MemoryTransport
from mailer.outbound.models import Message

FAR_EAST, FAR_WEST = "Pacific/Kiritimati", "Pacific/Pago_Pago"  # UTC+14, UTC-11
EXTREMES = (
    *(FAR_EAST, FAR_WEST, "Europe/Paris", "Pacific/Auckland", "Asia/Kolkata"),
    *("America/St_Johns", "Europe/London", "UTC"),
)
# Every IANA zone the import accepts (posix/ and right/ are copies of the same rules).
ZONES = sorted(
    z
    for z in available_timezones()
    if not z.startswith(("posix/", "right/")) and z not in ("Factory", "localtime", "posixrules")
)
zones = st.one_of(st.sampled_from(EXTREMES), st.sampled_from(ZONES))
instants = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
)
ISO = "yyyy-MM-dd"  # a CLDR pattern: the filters' output compares with date.isoformat()
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PROPERTY = settings(max_examples=150, deadline=None)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def _email_filter(renderer: Renderer, value: str, zone: str | None) -> str:
    context: dict[str, Any] = {"locale": "en", "d": value}
    if zone is not None:
        context["time_zone"] = zone
    return renderer.render_string(f"{{{{ d | date({ISO!r}) }}}}", context, html=False)


def _pdf_filter(value: str, zone: str) -> str:
    template = environment().from_string(f"{{{{ d | date({ISO!r}) }}}}")
    return template.render(locale="en", time_zone=zone, d=value)


def _invoice_body(issued_at: str, due_at: str) -> dict[str, Any]:
    return {
        "number": "INV-1",
        "version": 1,
        "currency": "EUR",
        "total_minor": 12000,
        "tax_minor": 0,
        "balance_minor": 12000,
        "issued_at": issued_at,
        "due_at": due_at,
        "lines": [],
    }


def _hosted(summary_context: dict[str, Any], *, now: datetime) -> dict[str, str]:
    page = build_document("late_payment_reminder", summary_context, sent_at=now, now=now)
    return dict(page.summary) | {"overdue": page.overdue or ""}


# -- any instant, any zone -----------------------------------------------------------------


@PROPERTY
@given(instant=instants, zone=zones)
def test_every_printer_shows_the_day_it_is_in_the_customers_zone(
    renderer: Renderer, instant: datetime, zone: str
) -> None:
    expected = instant.astimezone(ZoneInfo(zone)).date()
    text = instant.isoformat()
    assert _email_filter(renderer, text, zone) == expected.isoformat()
    assert _pdf_filter(text, zone) == expected.isoformat()
    context = {"locale": "en", "time_zone": zone, "invoice": _invoice_body(text, text)}
    summary = _hosted(context, now=instant)
    assert summary["Due"] == summary["Issued"] == format_day(expected, "medium", "en")
    assert local_date(instant, zone) == local_date(text, zone) == expected


@PROPERTY
@given(due=instants, elapsed=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=60)))
def test_days_overdue_counts_the_customers_calendar_days(due: datetime, elapsed: timedelta) -> None:
    """Email context and hosted page agree with the local calendar, in both far zones."""
    now = due + elapsed
    for zone in (FAR_EAST, FAR_WEST, "Europe/Paris"):
        tz = ZoneInfo(zone)
        expected = (now.astimezone(tz).date() - due.astimezone(tz).date()).days
        assert days_between(due, now, zone) == expected
        tenant, customer = _rows(zone)
        invoice = _invoice_row(issued_at=due, due_at=due)
        context = invoice_context(tenant=tenant, customer=customer, invoice=invoice, now=now)
        assert context["days_overdue"] == expected
        overdue = _hosted(context, now=now)["overdue"]
        assert overdue == (f"{expected} day{'s' * (expected != 1)} overdue" if expected else "")


def test_a_context_queued_before_it_carried_a_zone_prints_utc_days(renderer: Renderer) -> None:
    """Rows queued before the change have no ``time_zone``: they print as they always did."""
    late = "2026-03-30T22:00:00+00:00"  # 31 March 00:00 in Paris
    assert _email_filter(renderer, late, None) == "2026-03-30"
    assert _email_filter(renderer, late, "Europe/Paris") == "2026-03-31"
    page = build_document(
        "new_invoice",
        {"locale": "en", "invoice": _invoice_body(late, late)},
        sent_at=START,
        now=START,
    )
    assert dict(page.summary)["Due"] == "Mar 30, 2026"


# -- date-only fields imported in any zone -------------------------------------------------

days = st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 12, 31))


def _exists(day: date, zone: str) -> bool:
    """Whether ``day`` is on the zone's calendar (Pacific/Apia skipped 30 December 2011)."""
    noon = datetime.combine(day, time(12), tzinfo=ZoneInfo(zone))
    return noon.astimezone(UTC).astimezone(ZoneInfo(zone)).date() == day


def _rows(zone: str | None, *, tenant_zone: str = "UTC") -> tuple[Tenant, Customer]:
    tenant = Tenant(id=1, slug="acme", name="Acme", email="ar@acme.example", time_zone=tenant_zone)
    customer = Customer(id=1, tenant_id=1, external_id="C-1", name="Globex", time_zone=zone)
    return tenant, customer


def _invoice_row(*, issued_at: datetime, due_at: datetime) -> Invoice:
    line = {
        "description": "Support",
        "quantity": "1",
        "unit_price_minor": 12000,
        "tax_rate": None,
        "net_minor": 12000,
        "tax_minor": 0,
        "total_minor": 12000,
    }
    return Invoice(
        id=1,
        tenant_id=1,
        customer_id=1,
        external_id="i-1",
        number="INV-1",
        content_hash="x",
        currency="EUR",
        total_minor=12000,
        balance_minor=12000,
        issued_at=issued_at,
        due_at=due_at,
        lines=[line],
    )


def _imported(issued: date, due: date, zone: str | None, *, tenant_zone: str) -> dict[str, Any]:
    """``parse_document`` of one customer (in ``zone``, else the tenant's) with a dated invoice
    and payment plan."""
    line = {"description": "Support", "quantity": "1", "unit_price": "120.00"}
    record = {"customer": "C-1", "currency": "EUR"}
    customer: dict[str, Any] = {"id": "C-1", "name": "Globex"}
    if zone is not None:
        customer["time_zone"] = zone
    data = {
        "customers": [customer],
        "invoices": [
            {"id": "i-1", "number": "INV-1", **record, "lines": [line]}
            | {"issued_at": issued.isoformat(), "due_at": due.isoformat()}
        ],
        "payment_plans": [
            {"id": "pp-1", "number": "PP-1", **record, "status": "proposed", "invoices": ["i-1"]}
            | {
                "approve_by": issued.isoformat(),
                "installments": [{"due_at": due.isoformat(), "amount": "120.00"}],
            }
        ],
    }
    doc = parse_document(data, tenant_zone=tenant_zone)
    assert doc.errors == []
    (invoice,) = doc.invoices
    (plan,) = doc.payment_plans
    return {"invoice": invoice, "plan": plan}


@PROPERTY
@given(
    issued=days, gap=st.integers(0, 90), zone=zones, tenant_zone=zones, customer_own=st.booleans()
)
def test_a_date_imported_without_a_time_prints_as_that_date_in_every_zone(
    renderer: Renderer,
    issued: date,
    gap: int,
    zone: str,
    tenant_zone: str,
    customer_own: bool,
) -> None:
    """A date-only field is midnight where the customer is (its zone, else the tenant's), and
    every email, PDF and hosted page prints that same date back, east or west of UTC."""
    due = issued + timedelta(days=gap)
    where = zone if customer_own else tenant_zone
    assume(_exists(issued, where) and _exists(due, where))
    parsed = _imported(issued, due, zone if customer_own else None, tenant_zone=tenant_zone)
    tenant, customer = _rows(zone if customer_own else None, tenant_zone=tenant_zone)
    row = parsed["invoice"]
    invoice = _invoice_row(issued_at=row.issued_at, due_at=row.due_at)
    now = row.due_at + timedelta(days=3, hours=1)
    context = invoice_context(tenant=tenant, customer=customer, invoice=invoice, now=now)
    shown_issued, shown_due = (format_day(d, "medium", "en") for d in (issued, due))

    email = renderer.render("late_payment_reminder", context)
    html = _visible(email.html or "")
    assert f"was due on {shown_due}" in email.text and f"was due on {shown_due}" in html
    assert f"Issued {shown_issued} Due {shown_due}" in html
    assert context["days_overdue"] == 3
    summary = _hosted(context, now=now)
    assert (summary["Issued"], summary["Due"], summary["overdue"]) == (
        shown_issued,
        shown_due,
        "3 days overdue",
    )
    pdf = _pdf_text(context)
    assert shown_issued in pdf and shown_due in pdf

    plan = parsed["plan"]
    plan_row = PaymentPlan(
        tenant_id=1,
        customer_id=1,
        external_id="pp-1",
        number="PP-1",
        currency="EUR",
        total_minor=12000,
        status=PaymentPlanStatus.PROPOSED,
        approve_by=plan.approve_by,
        installments=[i.as_json() for i in plan.installments],
    )
    plan_context = {
        **party_context(tenant=tenant, customer=customer),
        **payment_plan_context(plan_row, [("INV-1", 12000)]),
    }
    plan_email = renderer.render("payment_plan", plan_context)
    assert f"1. {shown_due}:" in plan_email.text
    assert f"approve it by {shown_issued}" in plan_email.text
    plan_page = build_document("payment_plan", plan_context, sent_at=now, now=now)
    assert dict(plan_page.summary)["Approve by"] == shown_issued
    assert plan_page.table is not None and plan_page.table.rows[0][1] == shown_due
    assert context["time_zone"] == plan_context["time_zone"] == where


def _pdf_text(context: dict[str, Any]) -> str:
    """The invoice PDF's text, from the PDF context the store builds out of an email's."""
    pdf_context, _ = build_pdf_context("invoice", context)
    return _visible(render_html("invoice", pdf_context))


def _visible(html: str) -> str:
    """The text of an HTML part, as a reader sees it."""
    text = re.sub(r"<(style|title)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


# -- import -> tick -> outbox, at both ends of the clock -----------------------------------

# Due 31 March everywhere; each customer's +1 reminder is due on 1 April, its local day.
CUSTOMERS = {"C-PAR": "Europe/Paris", "C-KIR": FAR_EAST, "C-PAG": FAR_WEST}
TICKS = (
    datetime(2026, 3, 30, 12, 0, tzinfo=UTC),  # the new-invoice emails, after the grace period
    datetime(2026, 3, 31, 18, 30, tzinfo=UTC),  # 08:30 on 1 April in Kiritimati
    datetime(2026, 4, 1, 6, 30, tzinfo=UTC),  # 08:30 on 1 April in Paris
    datetime(2026, 4, 2, 1, 30, tzinfo=UTC),  # 14:30 on 1 April in Pago Pago: 2 April in UTC
)


def _document() -> dict[str, Any]:
    line = {"description": "Support", "quantity": "1", "unit_price": "120.00"}
    return {
        "customers": [
            {
                "id": cid,
                "name": f"Customer {cid}",
                "time_zone": zone,
                "contacts": [{"email": f"ap@{cid.lower()}.example", "roles": ["ap"]}],
            }
            for cid, zone in CUSTOMERS.items()
        ],
        "invoices": [
            {
                "id": f"i-{cid}",
                "number": f"INV-{cid}",
                "customer": cid,
                "currency": "EUR",
                "issued_at": "2026-03-01",
                "due_at": "2026-03-31",
                "lines": [line],
            }
            for cid in CUSTOMERS
        ],
    }


@pytest.fixture
def clock() -> FixedClock:
    """This module's clock: ten minutes before the first tick."""
    return FixedClock(TICKS[0] - timedelta(minutes=10))


@pytest.fixture
def services_config() -> dict[str, Any]:
    """This module's shared ``services``: one tenant in UTC, reminding once, a day after due."""
    tenant = {
        "name": "Acme Supplies",
        "email": "ar@acme.example",
        "time_zone": "UTC",
        "dunning": {"cadences": {"standard": {"steps": [{"days": 1}]}}},
    }
    return {"tenants": {"acme": tenant}}


@pytest.fixture
def far_env(
    services: Services, transport: MemoryTransport, clock: FixedClock
) -> tuple[Services, MemoryTransport, FixedClock]:
    """One tenant in UTC, its customers in their own zones, reminded once, a day after due."""
    assert services.ledger.import_document(_document(), tenant="acme").errors == []
    return services, transport, clock


def _parts(data: bytes) -> tuple[str, str, str]:
    msg = message_from_bytes(data, policy=policy.default)
    text, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text is not None and html is not None
    return str(msg["Subject"]), text.get_content(), _visible(html.get_content())


async def test_imported_due_dates_reach_the_inbox_as_31_march_in_every_zone(
    far_env: tuple[Services, MemoryTransport, FixedClock],
) -> None:
    services, transport, clock = far_env
    for moment in TICKS:
        clock.set(moment)
        await services.dunning.tick()
    by_customer: dict[str, list[tuple[str, str, str]]] = {}
    for sent in transport.sent:
        (address,) = sent.recipients
        cid = address.split("@")[1].split(".")[0].upper()
        by_customer.setdefault(cid, []).append(_parts(sent.data))
    assert sorted(by_customer) == sorted(CUSTOMERS)
    for cid, messages in by_customer.items():
        reminders = [m for m in messages if m[0].startswith("Overdue:")]
        assert len(reminders) == 1, (cid, [m[0] for m in messages])
        for subject, text, html in messages:
            for part in (text, html):
                assert "Mar 31, 2026" in part, (cid, subject)
                assert "Mar 30, 2026" not in part and "Apr 1, 2026" not in part, (cid, subject)
        (_, text, html) = reminders[0]
        assert "was due on Mar 31, 2026" in text and "(1 day overdue)" in text, cid
        assert "(1 day overdue)" in html and "Days overdue 1" in html, cid
        assert "Issued Mar 1, 2026 Due Mar 31, 2026" in html, cid

    # What the outbox stored is what the hosted page and the PDF print, too.
    with Session(services.engine) as session:
        rows = session.exec(select(Message).order_by(col(Message.id))).all()
    assert {m.context["time_zone"] for m in rows} == set(CUSTOMERS.values())
    for message in rows:
        page = build_document(message.kind, message.context, sent_at=TICKS[-1], now=TICKS[-1])
        summary = dict(page.summary)
        assert (summary["Issued"], summary["Due"]) == ("Mar 1, 2026", "Mar 31, 2026")
        pdf = _pdf_text(message.context)
        assert "Mar 31, 2026" in pdf and "Mar 30, 2026" not in pdf


def test_a_statement_counts_an_invoice_overdue_from_the_day_after_its_local_due_date() -> None:
    """Due 31 March in Paris (30 March 22:00 UTC): not overdue on the 31st, overdue on 1 April."""
    due = datetime(2026, 3, 30, 22, 0, tzinfo=UTC)
    invoice = Transaction(
        datetime(2026, 3, 1, tzinfo=UTC),
        "invoice",
        "INV-1",
        "EUR",
        12000,
        due_at=due,
        open_minor=12000,
    )
    start = datetime(2026, 3, 1, tzinfo=UTC)

    def overdue(end: datetime) -> int:
        content = statement(
            "open_item", [invoice], currency="EUR", start=start, end=end, zone="Europe/Paris"
        )
        assert content is not None
        return int(content["statement"]["overdue_minor"])

    assert overdue(datetime(2026, 3, 31, 15, 0, tzinfo=UTC)) == 0  # 17:00 on the due day
    assert overdue(datetime(2026, 3, 31, 22, 30, tzinfo=UTC)) == 12000  # 00:30 on 1 April
