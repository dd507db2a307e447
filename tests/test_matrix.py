"""The matrix: every email kind x every shipped language (German in two of the zones) x PDF on
and off x customers in seven time zones, driven the way a tenant drives the engine: imports at
the moments the ERP records things, ticks every four hours for five weeks, real SMTP into a
loopback server.

One ledger per zone (a test per zone, so xdist spreads them). Two tenants share it: ``pdf``
(relay, every PDF attached) and ``plain`` (its own SMTP server on the same host and port as the
relay, no PDFs). Each has, per language, a customer ``C`` that gets every per-document kind and
a customer ``K`` on a per-customer cadence that gets the overdue summary.

For every message received: it was delivered (not failed); every date the document carries is
printed as the customer's local calendar date, in the locale's medium form, in the subject or
body, text and HTML alike, and in the PDF; the day before it is not printed; every amount is
Babel's formatting for that locale and currency; the PDF is attached exactly where the tenant
attaches PDFs and the kind has one; windowed kinds went out inside the window on a business day
in the customer's zone. The expected emails are listed by hand, so a missing or a doubled one
fails too.
"""

from __future__ import annotations

import html
import io
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_date
from babel.numbers import format_currency
from sqlmodel import Session, select

from dunmail.app import build_services
from mailer.clock import FixedClock
from mailer.content.kinds import KINDS
from mailer.outbound.models import Message, MessageStatus
from tests.conftest import WEASYPRINT_SKIP, make_config
from tests.smtpd import RecordingServer

ZONES = [
    "Pacific/Kiritimati",  # UTC+14: local midnight is the previous day in UTC
    "Pacific/Auckland",  # +13/+12, DST ends on 5 April 2026
    "Asia/Kolkata",  # +5:30
    "Europe/Paris",  # +1/+2, DST starts on 29 March 2026
    "UTC",
    "America/St_Johns",  # -3:30/-2:30
    "Pacific/Pago_Pago",  # UTC-11
]
LANGUAGES = ["en", "es", "fr", "ro"]
# German, the fifth language, runs in two zones only (a German-like one with its DST change, and
# the one a whole day ahead of UTC): each language adds about 2.4 s of CPU per zone, and its
# formatting, not the zone arithmetic the other languages already cover, is what it adds.
LATER_LANGUAGES = {"de": ("Europe/Paris", "Pacific/Kiritimati")}


def languages_in(zone: str) -> list[str]:
    """The languages whose customers live in ``zone`` in this run."""
    return LANGUAGES + [lang for lang, zones in LATER_LANGUAGES.items() if zone in zones]


CURRENCY = "EUR"
# Kinds that wait for the customer's send window (08:00-18:00, Monday to Friday by default).
WINDOWED = {
    "invoice_reminder",
    "late_payment_reminder",
    "overdue_summary",
    "statement",
    "subscription_billed_soon",
}


def d(text: str) -> date:
    return date.fromisoformat(text)


@dataclass
class Expected:
    """One email the customer must get: what it is about, the dates and amounts it shows."""

    kind: str
    about: str  # a document number or receipt number the subject or body names
    dates: tuple[date, ...] = ()
    amounts: tuple[str, ...] = ()  # decimal strings in CURRENCY
    pdf_dates: tuple[date, ...] = ()  # dates the PDF shows (the document's own)
    extra: dict[str, Any] = field(default_factory=dict)


def expected_for_c(lang: str) -> list[Expected]:
    """Customer C's five weeks, written out by hand; the reasons are beside each line."""
    return [
        # INV-A: 120.00 + 20 % tax, issued 2 March, due 31 March; the credit note (10.00) and
        # payment P1 (50.00) leave 84.00 open.
        Expected(
            "new_invoice", f"INV-A-{lang}", (d("2026-03-31"),), ("144.00",), (d("2026-03-02"),)
        ),
        Expected(
            "new_invoice", f"INV-B-{lang}", (d("2026-04-20"),), ("100.00",), (d("2026-03-02"),)
        ),
        Expected("estimate", f"EST-{lang}", (d("2026-04-08"),), ("480.00",), (d("2026-03-02"),)),
        Expected("payment_plan", f"PP-{lang}", (d("2026-04-22"), d("2026-05-04"), d("2026-06-08"))),
        Expected("subscription_confirmation", "Business"),
        Expected("credit_note", f"CN-{lang}", (), ("10.00",), (d("2026-03-05"),)),
        Expected(
            "payment_receipt", f"RCPT-1-{lang}", (d("2026-03-09"),), ("50.00",), (d("2026-03-09"),)
        ),
        Expected(
            "refund",
            f"RF-{lang}",
            (d("2026-03-12"), d("2026-03-09")),
            ("20.00",),
            (d("2026-03-12"),),
        ),
        Expected("autopay_failed", "70", (d("2026-03-11"), d("2026-03-14")), ("70.00",)),
        # billed soon: 7 days before the bill on 25 March, inside the window
        Expected("subscription_billed_soon", "Business", (d("2026-03-25"),), ("49.00",)),
        Expected(
            "payment_receipt", f"RCPT-2-{lang}", (d("2026-03-16"),), ("100.00",), (d("2026-03-16"),)
        ),
        # INV-B paid in full by P2: thank you (switched on), dated the payment's day
        Expected("thank_you", f"INV-B-{lang}", (d("2026-03-16"),), ("100.00",), (d("2026-03-02"),)),
        Expected("subscription_cancelled", "Business"),
        # step -3 falls on Saturday 28 March: the reminder goes on Monday 30 March
        Expected(
            "invoice_reminder", f"INV-A-{lang}", (d("2026-03-31"),), ("84.00",), (d("2026-03-02"),)
        ),
        # step +1: Wednesday 1 April, one day overdue
        Expected(
            "late_payment_reminder",
            f"INV-A-{lang}",
            (d("2026-03-31"),),
            ("84.00",),
            (d("2026-03-02"),),
            {"days_overdue": 1},
        ),
        # the monthly statement of 1 April: since the last statement day, Sunday 1 March,
        # which moved to Monday 2 March; the open item and its due date
        Expected(
            "statement",
            f"INV-A-{lang}",
            (d("2026-03-02"), d("2026-04-01"), d("2026-03-31")),
            ("84.00",),
        ),
    ]


def expected_for_k(lang: str) -> list[Expected]:
    """Customer K, on the per-customer ``key_accounts`` cadence (one step, 10 days)."""
    return [
        Expected(
            "new_invoice", f"INV-K1-{lang}", (d("2026-03-20"),), ("60.00",), (d("2026-03-02"),)
        ),
        Expected(
            "new_invoice", f"INV-K2-{lang}", (d("2026-03-23"),), ("40.00",), (d("2026-03-02"),)
        ),
        # 10 days after the oldest due date (20 March) is Monday 30 March: 10 and 7 days late
        Expected(
            "overdue_summary",
            f"INV-K1-{lang}",
            (d("2026-03-20"), d("2026-03-23")),
            ("60.00", "40.00", "100.00"),
            extra={"days_overdue": (10, 7)},
        ),
        Expected(
            "statement",
            f"INV-K2-{lang}",
            (d("2026-03-02"), d("2026-04-01"), d("2026-03-20"), d("2026-03-23")),
            ("60.00", "40.00", "100.00"),
        ),
    ]


def _lines(description: str, price: str, tax: str | None = None) -> list[dict[str, Any]]:
    line: dict[str, Any] = {"description": description, "quantity": "1", "unit_price": price}
    if tax is not None:
        line["tax_rate"] = tax
    return [line]


def stages(zone: str) -> list[tuple[datetime, dict[str, Any]]]:
    """The ERP's documents, each imported right after the moment it records (UTC)."""
    customers = []
    first: dict[str, list[dict[str, Any]]] = {
        "invoices": [],
        "estimates": [],
        "subscriptions": [],
        "payment_plans": [],
    }
    later: dict[str, dict[str, list[dict[str, Any]]]] = {
        "credit": {"credit_notes": []},
        "p1": {"payments": []},
        "refund": {"refunds": [], "autopay_failures": []},
        "p2": {"payments": []},
        "cancel": {"subscriptions": []},
    }
    for lang in languages_in(zone):
        c, k = f"C-{lang}", f"K-{lang}"
        for cid, cadence in ((c, None), (k, "key_accounts")):
            row: dict[str, Any] = {
                "id": cid,
                "name": f"Customer {cid}",
                "locale": lang,
                "time_zone": zone,
                "contacts": [{"email": f"ap-{cid.lower()}@example.net", "roles": ["ap"]}],
            }
            if cadence:
                row["cadence"] = cadence
            customers.append(row)
        inv = first["invoices"]
        inv.append(
            _invoice(
                f"a-{lang}", f"INV-A-{lang}", c, "2026-03-31", _lines("Support", "120.00", "20")
            )
        )
        inv.append(
            _invoice(f"b-{lang}", f"INV-B-{lang}", c, "2026-04-20", _lines("Licence", "100.00"))
        )
        inv.append(
            _invoice(f"k1-{lang}", f"INV-K1-{lang}", k, "2026-03-20", _lines("Audit", "60.00"))
        )
        inv.append(
            _invoice(f"k2-{lang}", f"INV-K2-{lang}", k, "2026-03-23", _lines("Audit", "40.00"))
        )
        first["estimates"].append(
            {
                "id": f"est-{lang}",
                "number": f"EST-{lang}",
                "customer": c,
                "currency": CURRENCY,
                "issued_at": "2026-03-02",
                "valid_until": "2026-04-08",
                "status": "sent",
                "lines": [
                    {
                        "description": "Migration",
                        "quantity": "1",
                        "unit_price": "400.00",
                        "tax_rate": "20",
                    }
                ],
            }
        )
        sub = {
            "id": f"sub-{lang}",
            "customer": c,
            "plan": "Business",
            "amount": "49.00",
            "currency": CURRENCY,
            "interval": "month",
            "status": "active",
            "started_at": "2026-03-02",
            "next_bill_at": "2026-03-25",
        }
        first["subscriptions"].append(sub)
        first["payment_plans"].append(
            {
                "id": f"pp-{lang}",
                "number": f"PP-{lang}",
                "customer": c,
                "currency": CURRENCY,
                "status": "proposed",
                "approve_by": "2026-04-22",
                "installments": [
                    {"due_at": "2026-05-04", "amount": "72.00"},
                    {"due_at": "2026-06-08", "amount": "72.00"},
                ],
                "invoices": [f"a-{lang}"],
            }
        )
        later["credit"]["credit_notes"].append(
            {
                "id": f"cn-{lang}",
                "number": f"CN-{lang}",
                "customer": c,
                "currency": CURRENCY,
                "issued_at": "2026-03-05",
                "invoice": f"a-{lang}",
                "reason": "Goodwill",
                "lines": _lines("Goodwill", "10.00"),
            }
        )
        later["p1"]["payments"].append(
            {
                "id": f"p1-{lang}",
                "customer": c,
                "amount": "50.00",
                "currency": CURRENCY,
                "received_at": "2026-03-09",
                "method": "Transfer",
                "receipt_number": f"RCPT-1-{lang}",
                "invoices": [{"invoice": f"a-{lang}", "amount": "50.00"}],
            }
        )
        later["refund"]["refunds"].append(
            {
                "id": f"rf-{lang}",
                "payment": f"p1-{lang}",
                "amount": "20.00",
                "currency": CURRENCY,
                "refunded_at": "2026-03-12",
                "reason": "Duplicate charge",
                "method": "Transfer",
                "receipt_number": f"RF-{lang}",
            }
        )
        later["refund"]["autopay_failures"].append(
            {
                "id": f"ap-{lang}",
                "customer": c,
                "amount": "70.00",
                "currency": CURRENCY,
                "attempted_at": "2026-03-11T09:00:00",
                "decline_reason": "insufficient_funds",
                "next_retry_at": "2026-03-14T09:00:00",
                "method": "Visa 4242",
            }
        )
        later["p2"]["payments"].append(
            {
                "id": f"p2-{lang}",
                "customer": c,
                "amount": "100.00",
                "currency": CURRENCY,
                "received_at": "2026-03-16",
                "method": "Transfer",
                "receipt_number": f"RCPT-2-{lang}",
                "invoices": [{"invoice": f"b-{lang}", "amount": "100.00"}],
            }
        )
        later["cancel"]["subscriptions"].append(
            {**sub, "status": "cancelled", "cancelled_at": "2026-03-26", "next_bill_at": None}
        )
    first["customers"] = customers
    at = lambda text: datetime.fromisoformat(text).replace(tzinfo=UTC)  # noqa: E731
    return [
        (at("2026-03-02T00:00"), {"customers": customers, **first}),
        (at("2026-03-06T00:00"), later["credit"]),
        (at("2026-03-10T00:00"), later["p1"]),
        (at("2026-03-13T00:00"), later["refund"]),
        (at("2026-03-17T00:00"), later["p2"]),
        (at("2026-03-27T00:00"), later["cancel"]),
    ]


def _invoice(
    ext: str, number: str, customer: str, due: str, lines: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": ext,
        "number": number,
        "customer": customer,
        "currency": CURRENCY,
        "issued_at": "2026-03-02",
        "due_at": due,
        "status": "open",
        "lines": lines,
    }


END = datetime(2026, 4, 3, 0, 0, tzinfo=UTC)
TICK = timedelta(hours=4)  # the window is 10 hours long: every business day has a tick in it


def _config(tmp_path: Path, smtpd: RecordingServer) -> Any:
    every = {
        kind: {"enabled": True, "attach_pdf": spec.pdf is not None} for kind, spec in KINDS.items()
    }
    none = {kind: {"enabled": True, "attach_pdf": False} for kind in KINDS}
    dunning = {
        "cadences": {
            "standard": {
                "steps": [
                    {"days": -3},
                    {"days": 1},
                    {"days": 7},
                    {"days": 14, "repeat_every_days": 7, "max_repeats": 4},
                ]
            },
            "key_accounts": {"per": "customer", "steps": [{"days": 10}]},
        },
        "statements": {"every": "monthly", "day": 1},
    }

    def tenant(slug: str, emails: dict[str, Any], **more: Any) -> dict[str, Any]:
        return {
            "name": f"{slug.title()} Ltd",
            "email": f"ar@{slug}.example",
            "emails": emails,
            "dunning": dunning,
            "dkim": [
                {
                    "domain": f"{slug}.example",
                    "selector": "s1",
                    "key_file": str(tmp_path / f"{slug}.pem"),
                }
            ],
            **more,
        }

    return make_config(
        tmp_path,
        f"sqlite:///{tmp_path / 'ledger.db'}",
        pdfs=True,
        relay={"host": smtpd.host, "port": smtpd.port, "domain": "relay.example"},
        tenants={
            "pdf": tenant("pdf", every),
            "plain": tenant(
                "plain",
                none,
                delivery="smtp",
                smtp={"host": smtpd.host, "port": smtpd.port},
            ),
        },
    )


def _norm(text: str) -> str:
    """No-break and narrow no-break spaces as spaces, runs of whitespace as one."""
    return re.sub(r"\s+", " ", text.replace("\u00a0", " ").replace("\u202f", " "))


def _money(amount: str, locale: str) -> str:
    return _norm(format_currency(Decimal(amount), CURRENCY, locale=locale))


def _day(value: date, locale: str) -> str:
    return _norm(format_date(value, format="medium", locale=locale))


def _shows(day: str, text: str) -> bool:
    """``day`` printed in ``text`` as a whole date: "1 mar 2026" is not in "31 mar 2026"."""
    return re.search(rf"(?<!\d){re.escape(day)}", text) is not None


def _parts(msg: EmailMessage) -> tuple[str, str, str, list[bytes]]:
    subject = _norm(str(msg["Subject"]))
    text = html_text = ""
    pdfs: list[bytes] = []
    for part in msg.walk():
        ctype = part.get_content_type()
        if part.get_content_disposition() == "attachment":
            if ctype == "application/pdf":
                payload = part.get_payload(decode=True)
                pdfs.append(payload if isinstance(payload, bytes) else b"")
            continue
        if ctype == "text/plain":
            text = _norm(str(part.get_content()))
        elif ctype == "text/html":
            html_text = _norm(html.unescape(re.sub(r"<[^>]+>", " ", str(part.get_content()))))
    return subject, text, html_text, pdfs


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    return _norm(" ".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages))


def _check(
    where: str,
    exp: Expected,
    lang: str,
    zone: ZoneInfo,
    msg: EmailMessage,
    row: Message,
    attach: bool,
    problems: list[str],
) -> None:
    subject, text, html_text, pdfs = _parts(msg)
    if row.status is not MessageStatus.SENT:
        problems.append(f"{where}: {row.status.value}: {row.last_error or row.skip_reason}")
    for name, body in (("text", text), ("html", html_text)):
        whole = f"{subject} {body}"
        for day in exp.dates:
            if not _shows(_day(day, lang), whole):
                problems.append(f"{where} {name}: no {_day(day, lang)!r}")
            before = day - timedelta(days=1)
            if before not in exp.dates and _shows(_day(before, lang), whole):
                problems.append(f"{where} {name}: shows the day before, {_day(before, lang)!r}")
        for amount in exp.amounts:
            if _money(amount, lang) not in whole:
                problems.append(f"{where} {name}: no amount {_money(amount, lang)!r}")
    if "days_overdue" in exp.extra:
        counts = exp.extra["days_overdue"]
        for count in counts if isinstance(counts, tuple) else (counts,):
            if not re.search(rf"\b{count}\b", text):
                problems.append(f"{where}: {count} days overdue not in the text")
    wants_pdf = attach and KINDS[exp.kind].pdf is not None
    if wants_pdf != bool(pdfs):
        problems.append(f"{where}: {len(pdfs)} PDF(s) attached, wanted {int(wants_pdf)}")
    for data in pdfs:
        pdf = _pdf_text(data)
        for day in exp.pdf_dates:
            if not _shows(_day(day, lang), pdf):
                problems.append(f"{where} pdf: no {_day(day, lang)!r} in {pdf[:300]!r}")
    if exp.kind in WINDOWED and row.finished_at is not None:
        local = row.finished_at.astimezone(zone)
        if local.weekday() >= 5 or not time(8) <= local.time() < time(18):
            problems.append(f"{where}: sent at {local.isoformat()} local, outside the window")


def _matches(exp: Expected, msg: EmailMessage, row: Message) -> bool:
    if row.kind != exp.kind:
        return False
    subject, text, _, _ = _parts(msg)
    return exp.about in f"{subject} {text}"


def _assign(
    expected: Iterable[Expected], got: list[tuple[EmailMessage, Message]]
) -> tuple[list[tuple[Expected, EmailMessage, Message]], list[Expected], list[Message]]:
    pairs: list[tuple[Expected, EmailMessage, Message]] = []
    missing: list[Expected] = []
    left = list(got)
    for exp in expected:
        found = next((g for g in left if _matches(exp, *g)), None)
        if found is None:
            missing.append(exp)
            continue
        left.remove(found)
        pairs.append((exp, *found))
    return pairs, missing, [row for _, row in left]


@pytest.mark.skipif(WEASYPRINT_SKIP is not None, reason=WEASYPRINT_SKIP or "")
@pytest.mark.slow
@pytest.mark.parametrize("zone", ZONES)
async def test_every_kind_language_toggle_in_zone(
    zone: str, tmp_path: Path, smtpd: RecordingServer
) -> None:
    clock = FixedClock(datetime(2026, 3, 2, 0, 0, tzinfo=UTC))
    # Its own build: one ledger per zone on its own clock and config, run through a quarter.
    services = build_services(_config(tmp_path, smtpd), clock)
    try:
        plan = stages(zone)
        now = plan[0][0]
        while now <= END:
            clock.set(now)
            for at, doc in plan:
                if at == now:
                    for slug in ("pdf", "plain"):
                        report = services.ledger.import_document(doc, tenant=slug)
                        assert report.errors == [], (slug, at, report.errors)
            await services.dunning.tick()
            now += TICK
    finally:
        await services.close()

    rows: dict[str, Message] = {}
    with Session(services.engine) as session:
        for row in session.exec(select(Message)):
            rows[row.uid] = row
    by_rcpt: dict[str, list[tuple[EmailMessage, Message]]] = {}
    for env, msg in zip(smtpd.envelopes, smtpd.messages, strict=True):
        row = rows.get(str(msg["X-Dunmail-Message"]))
        assert row is not None, msg["Message-ID"]
        for rcpt in env.rcpt_tos:
            by_rcpt.setdefault(rcpt, []).append((msg, row))

    problems: list[str] = []
    never_sent = [r for r in rows.values() if r.status is not MessageStatus.SENT]
    problems += [
        f"outbox {r.kind} {r.status.value}: {r.last_error or r.skip_reason}"
        for r in never_sent
        if r.status is MessageStatus.FAILED
    ]
    tz = ZoneInfo(zone)
    for tenant, attach in (("pdf", True), ("plain", False)):
        for lang in languages_in(zone):
            for who, expected in (("c", expected_for_c(lang)), ("k", expected_for_k(lang))):
                rcpt = f"ap-{who}-{lang}@example.net"
                got = [g for g in by_rcpt.get(rcpt, []) if _tenant_of(g[0]) == tenant]
                pairs, missing, extra = _assign(expected, got)
                where = f"{tenant}/{lang}/{who}"
                problems += [f"{where}: no {e.kind} about {e.about}" for e in missing]
                problems += [f"{where}: unexpected {r.kind} ({r.occasion})" for r in extra]
                for exp, msg, row in pairs:
                    _check(
                        f"{where} {exp.kind} {exp.about}", exp, lang, tz, msg, row, attach, problems
                    )
    assert not problems, f"{len(problems)} problems in {zone}:\n" + "\n".join(problems[:60])
    kinds = Counter(row.kind for row in rows.values())
    # A contact confirmation, the notice of changed contacts and a query's answer reply to the
    # customer on the account page, never to the ledger.
    every = set(KINDS) - {"contact_confirmation", "contacts_changed", "query_answer"}
    assert set(kinds) == every, f"kinds never sent: {every - set(kinds)}"


def _tenant_of(msg: EmailMessage) -> str:
    sender = str(msg["Reply-To"] or msg["From"])
    return "pdf" if "@pdf.example" in sender else "plain"
