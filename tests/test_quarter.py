"""A replayed quarter: three tenants, ninety days of AR work, driven through the ``dunmail`` CLI
with ``--at`` as an operator replays it, into a real SMTP server on loopback.

- ``north``: the relay, Europe/Paris, French by default, monthly statements, thank-you notes;
  a French customer in Paris and an English one in London whose first contact hard-bounces.
- ``west``: its own SMTP server (the same loopback server, so it shares host and port with the
  relay), America/New_York; customers in New York and in Mexico City (Spanish).
- ``east``: the relay, Asia/Kolkata; a Romanian customer in Bucharest (who replies to a
  reminder) and a New Zealand one in Auckland with a subscription.

The engine (the services ``dunmail run`` builds, on an injected clock) ticks twice a day, at
09:30 and 21:30 UTC: each customer's
send window (08:00-18:00 local, Monday to Friday) holds at least one of them, so each windowed
email goes at the first tick inside its window. The full list of emails (kind, recipient,
local send date) is compared with the list below, written by hand with the reason for each.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from typer.testing import CliRunner

import dunmail.cli  # noqa: F401  (registers the commands on the app)
from dunmail.app import build_services
from dunmail.cli_common import app
from dunmail.config import load_config
from mailer.clock import FixedClock
from mailer.outbound.memory import SentMail
from tests.smtpd import RecordingServer
from tests.test_bounce_ingest import dsn

ZONES = {
    "dupont": "Europe/Paris",
    "baker": "Europe/London",
    "globex": "America/New_York",
    "mercado": "America/Mexico_City",
    "carpathia": "Europe/Bucharest",
    "kiwi": "Pacific/Auckland",
}

# (kind, recipient, local send date): why
EXPECTED: list[tuple[str, str, str]] = [
    # --- north / Dupont (fr, Paris): INV-N101 500 EUR, due Wed 4 Feb -----------------------
    ("new_invoice", "compta@dupont.example", "2026-01-05"),  # imported 09:00 local, grace 5 min
    # 1 Feb is a Sunday: the statement and the -3 reminder (also Sunday) wait for Monday
    ("statement", "compta@dupont.example", "2026-02-02"),
    ("invoice_reminder", "compta@dupont.example", "2026-02-02"),
    ("late_payment_reminder", "compta@dupont.example", "2026-02-05"),  # +1
    ("payment_receipt", "compta@dupont.example", "2026-02-10"),  # paid in full on 10 Feb
    ("thank_you", "compta@dupont.example", "2026-02-10"),
    # INV-N102 issued Mon 2 March, settled by credit note CN-N1 on 10 March: no thank-you
    ("new_invoice", "compta@dupont.example", "2026-03-02"),
    ("statement", "compta@dupont.example", "2026-03-02"),  # 1 March is a Sunday
    ("credit_note", "compta@dupont.example", "2026-03-10"),
    # --- north / Baker (en, London): INV-N201, due Mon 26 Jan; ap@ hard-bounces -------------
    ("new_invoice", "ap@baker.example finance@baker.example", "2026-01-12"),
    ("invoice_reminder", "finance@baker.example", "2026-01-23"),  # -3, a Friday
    ("late_payment_reminder", "finance@baker.example", "2026-01-27"),  # +1
    ("late_payment_reminder", "finance@baker.example", "2026-02-02"),  # +7
    ("statement", "finance@baker.example", "2026-02-02"),
    ("late_payment_reminder", "finance@baker.example", "2026-02-09"),  # +14
    # disputed from 12 Feb to 20 Feb: the weekly repeat of 16 Feb is not sent; paid on 18 Feb
    ("payment_receipt", "finance@baker.example", "2026-02-18"),
    ("thank_you", "finance@baker.example", "2026-02-18"),
    # --- west / Globex (en, New York): INV-W101 1,000 USD, due Mon 16 March ------------------
    ("new_invoice", "ap@globex.example", "2026-03-02"),
    ("invoice_reminder", "ap@globex.example", "2026-03-13"),  # -3, Friday
    ("autopay_failed", "ap@globex.example", "2026-03-16"),  # answers the failure at once
    ("late_payment_reminder", "ap@globex.example", "2026-03-17"),  # +1
    ("late_payment_reminder", "ap@globex.example", "2026-03-23"),  # +7
    # an active payment plan from 25 March holds the invoice: no +14 on 30 March
    # --- west / Mercado (es, Mexico City): INV-W201 800 USD, due Thu 19 Feb -----------------
    ("new_invoice", "pagos@mercado.example", "2026-01-20"),
    ("payment_receipt", "pagos@mercado.example", "2026-02-02"),  # 400 on account of it
    ("invoice_reminder", "pagos@mercado.example", "2026-02-16"),  # -3, Monday
    ("late_payment_reminder", "pagos@mercado.example", "2026-02-20"),  # +1
    ("payment_receipt", "pagos@mercado.example", "2026-02-24"),  # the rest
    ("thank_you", "pagos@mercado.example", "2026-02-24"),
    ("refund", "pagos@mercado.example", "2026-02-26"),
    # --- east / Carpathia (ro, Bucharest): INV-E101 2,500 RON, due Wed 4 March ---------------
    ("new_invoice", "contabil@carpathia.example", "2026-02-02"),
    ("estimate", "contabil@carpathia.example", "2026-02-09"),
    ("invoice_reminder", "contabil@carpathia.example", "2026-03-02"),  # -3 is Sunday 1 March
    ("late_payment_reminder", "contabil@carpathia.example", "2026-03-05"),  # +1
    # the customer's reply on 6 March is threaded in the inbox; chasing goes on
    ("late_payment_reminder", "contabil@carpathia.example", "2026-03-11"),  # +7
    ("payment_receipt", "contabil@carpathia.example", "2026-03-12"),
    # --- east / Kiwi (en, Auckland): a subscription, then INV-E201 due Mon 6 April ----------
    ("subscription_confirmation", "accounts@kiwi.example", "2026-01-15"),
    # 7 days before the bill of 15 Feb is Sunday 8 Feb: Monday morning in Auckland
    ("subscription_billed_soon", "accounts@kiwi.example", "2026-02-09"),
    ("subscription_cancelled", "accounts@kiwi.example", "2026-03-20"),
    ("new_invoice", "accounts@kiwi.example", "2026-03-23"),
    ("invoice_reminder", "accounts@kiwi.example", "2026-04-03"),  # -3, a Friday
]

START = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
END = datetime(2026, 4, 5, 0, 0, tzinfo=UTC)
TICKS = (timedelta(hours=9, minutes=30), timedelta(hours=21, minutes=30))


def _customer(cid: str, name: str, locale: str, zone: str, *emails: str) -> dict[str, Any]:
    return {
        "id": cid,
        "name": name,
        "locale": locale,
        "time_zone": zone,
        "contacts": [{"email": e, "roles": ["ap"]} for e in emails],
    }


def _invoice(
    ext: str, customer: str, currency: str, issued: str, due: str, amount: str
) -> dict[str, Any]:
    return {
        "id": ext,
        "number": f"INV-{ext.upper()}",
        "customer": customer,
        "currency": currency,
        "issued_at": issued,
        "due_at": due,
        "status": "open",
        "lines": [{"description": "Services", "quantity": "1", "unit_price": amount}],
    }


def _payment(
    ext: str, customer: str, currency: str, at: str, amount: str, invoice: str
) -> dict[str, Any]:
    return {
        "id": ext,
        "customer": customer,
        "amount": amount,
        "currency": currency,
        "received_at": at,
        "method": "Bank transfer",
        "invoices": [{"invoice": invoice, "amount": amount}],
    }


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# What happens in the ERP and on the clerks' desks, in UTC; ("import", tenant, document) or
# ("cli", args...) or ("bounce", tenant, recipient) or ("reply", tenant, recipient).
ACTIONS: list[tuple[datetime, tuple[Any, ...]]] = [
    (
        _at("2026-01-05T08:00"),
        (
            "import",
            "north",
            {
                "customers": [
                    _customer("dupont", "Dupont SA", "fr", ZONES["dupont"], "compta@dupont.example")
                ],
                "invoices": [
                    _invoice("n101", "dupont", "EUR", "2026-01-05", "2026-02-04", "500.00")
                ],
            },
        ),
    ),
    (
        _at("2026-01-12T09:00"),
        (
            "import",
            "north",
            {
                "customers": [
                    _customer(
                        "baker",
                        "Baker Ltd",
                        "en",
                        ZONES["baker"],
                        "ap@baker.example",
                        "finance@baker.example",
                    )
                ],
                "invoices": [
                    _invoice("n201", "baker", "EUR", "2026-01-12", "2026-01-26", "200.00")
                ],
            },
        ),
    ),
    (_at("2026-01-13T10:00"), ("bounce", "ap@baker.example")),
    (
        _at("2026-01-15T01:00"),
        (
            "import",
            "east",
            {
                "customers": [
                    _customer("kiwi", "Kiwi Ltd", "en", ZONES["kiwi"], "accounts@kiwi.example")
                ],
                "subscriptions": [
                    {
                        "id": "sub-k",
                        "customer": "kiwi",
                        "plan": "Pro",
                        "amount": "30.00",
                        "currency": "NZD",
                        "interval": "month",
                        "status": "active",
                        "started_at": "2026-01-15",
                        "next_bill_at": "2026-02-15",
                    }
                ],
            },
        ),
    ),
    (
        _at("2026-01-20T16:00"),
        (
            "import",
            "west",
            {
                "customers": [
                    _customer(
                        "mercado", "Mercado SA", "es", ZONES["mercado"], "pagos@mercado.example"
                    )
                ],
                "invoices": [
                    _invoice("w201", "mercado", "USD", "2026-01-20", "2026-02-19", "800.00")
                ],
            },
        ),
    ),
    (
        _at("2026-02-02T07:00"),
        (
            "import",
            "east",
            {
                "customers": [
                    _customer(
                        "carpathia",
                        "Carpathia SRL",
                        "ro",
                        ZONES["carpathia"],
                        "contabil@carpathia.example",
                    )
                ],
                "invoices": [
                    _invoice("e101", "carpathia", "RON", "2026-02-02", "2026-03-04", "2500.00")
                ],
            },
        ),
    ),
    (
        _at("2026-02-02T17:00"),
        (
            "import",
            "west",
            {
                "payments": [
                    _payment("pw1", "mercado", "USD", "2026-02-02T10:00:00", "400.00", "w201")
                ],
            },
        ),
    ),
    (
        _at("2026-02-09T08:00"),
        (
            "import",
            "east",
            {
                "estimates": [
                    {
                        "id": "est-c",
                        "number": "EST-C1",
                        "customer": "carpathia",
                        "currency": "RON",
                        "issued_at": "2026-02-09",
                        "valid_until": "2026-03-09",
                        "status": "sent",
                        "lines": [
                            {"description": "Audit", "quantity": "1", "unit_price": "900.00"}
                        ],
                    }
                ],
            },
        ),
    ),
    (
        _at("2026-02-10T12:00"),
        (
            "import",
            "north",
            {
                "payments": [
                    _payment("pn1", "dupont", "EUR", "2026-02-10T11:00:00", "500.00", "n101")
                ],
            },
        ),
    ),
    (
        _at("2026-02-12T10:00"),
        (
            "cli",
            "hold",
            "place",
            "--invoice",
            "INV-N201",
            "--reason",
            "dispute",
            "--until",
            "2026-02-20",
            "--tenant",
            "north",
        ),
    ),
    (
        _at("2026-02-18T12:00"),
        (
            "import",
            "north",
            {
                "payments": [
                    _payment("pn2", "baker", "EUR", "2026-02-18T11:00:00", "200.00", "n201")
                ],
            },
        ),
    ),
    (
        _at("2026-02-24T18:00"),
        (
            "import",
            "west",
            {
                "payments": [
                    _payment("pw2", "mercado", "USD", "2026-02-24T11:00:00", "400.00", "w201")
                ],
            },
        ),
    ),
    (
        _at("2026-02-26T18:00"),
        (
            "import",
            "west",
            {
                "refunds": [
                    {
                        "id": "rw1",
                        "payment": "pw2",
                        "amount": "50.00",
                        "currency": "USD",
                        "refunded_at": "2026-02-26T11:00:00",
                        "reason": "Overpaid shipping",
                    }
                ],
            },
        ),
    ),
    (
        _at("2026-03-02T08:00"),
        (
            "import",
            "north",
            {
                "invoices": [
                    _invoice("n102", "dupont", "EUR", "2026-03-02", "2026-04-01", "300.00")
                ],
            },
        ),
    ),
    (
        _at("2026-03-02T14:00"),
        (
            "import",
            "west",
            {
                "customers": [
                    _customer("globex", "Globex Inc", "en", ZONES["globex"], "ap@globex.example")
                ],
                "invoices": [
                    _invoice("w101", "globex", "USD", "2026-03-02", "2026-03-16", "1000.00")
                ],
            },
        ),
    ),
    (_at("2026-03-06T09:00"), ("reply", "contabil@carpathia.example")),
    (
        _at("2026-03-10T09:00"),
        (
            "import",
            "north",
            {
                "credit_notes": [
                    {
                        "id": "cn-n1",
                        "number": "CN-N1",
                        "customer": "dupont",
                        "currency": "EUR",
                        "issued_at": "2026-03-10",
                        "invoice": "n102",
                        "reason": "Order cancelled",
                        "lines": [
                            {"description": "Services", "quantity": "1", "unit_price": "300.00"}
                        ],
                    }
                ],
            },
        ),
    ),
    (
        _at("2026-03-12T10:00"),
        (
            "import",
            "east",
            {
                "payments": [
                    _payment("pe1", "carpathia", "RON", "2026-03-12T11:00:00", "2500.00", "e101")
                ],
            },
        ),
    ),
    (
        _at("2026-03-16T20:00"),
        (
            "import",
            "west",
            {
                "autopay_failures": [
                    {
                        "id": "apw1",
                        "customer": "globex",
                        "invoice": "w101",
                        "amount": "1000.00",
                        "currency": "USD",
                        "attempted_at": "2026-03-16T14:00:00",
                        "decline_reason": "expired_card",
                        "method": "Visa 4242",
                    }
                ],
            },
        ),
    ),
    (
        _at("2026-03-20T01:00"),
        (
            "import",
            "east",
            {
                "subscriptions": [
                    {
                        "id": "sub-k",
                        "customer": "kiwi",
                        "plan": "Pro",
                        "amount": "30.00",
                        "currency": "NZD",
                        "interval": "month",
                        "status": "cancelled",
                        "started_at": "2026-01-15",
                        "cancelled_at": "2026-03-20",
                    }
                ],
            },
        ),
    ),
    (
        _at("2026-03-22T21:00"),
        (
            "import",
            "east",
            {
                "invoices": [_invoice("e201", "kiwi", "NZD", "2026-03-23", "2026-04-06", "120.00")],
            },
        ),
    ),
    (
        _at("2026-03-25T15:00"),
        (
            "import",
            "west",
            {
                "payment_plans": [
                    {
                        "id": "pp-g",
                        "number": "PP-G1",
                        "customer": "globex",
                        "currency": "USD",
                        "status": "active",
                        "installments": [
                            {"due_at": "2026-04-15", "amount": "500.00"},
                            {"due_at": "2026-05-15", "amount": "500.00"},
                        ],
                        "invoices": ["w101"],
                    }
                ],
            },
        ),
    ),
]


def _config(tmp_path: Path, smtpd: RecordingServer) -> Path:
    keys = tmp_path / "keys"

    def tenant(slug: str, zone: str, locale: str, extra: str = "") -> str:
        return f"""
[tenants.{slug}]
name = "{slug.title()} Trading"
email = "ar@{slug}.example"
time_zone = "{zone}"
locale = "{locale}"
{extra}
[[tenants.{slug}.dkim]]
domain = "{slug}.example"
selector = "s1"
key_file = "{keys / f"{slug}.pem"}"
"""

    text = f"""
env = "dev"
[database]
url = "sqlite:///{tmp_path / "quarter.db"}"
[relay]
host = "{smtpd.host}"
port = {smtpd.port}
domain = "relay.example"
timeout_seconds = 5
{tenant("north", "Europe/Paris", "fr")}
[tenants.north.emails.thank_you]
enabled = true
[tenants.north.dunning.statements]
every = "monthly"
day = 1
{tenant("west", "America/New_York", "en", 'delivery = "smtp"')}
[tenants.west.smtp]
host = "{smtpd.host}"
port = {smtpd.port}
[tenants.west.emails.thank_you]
enabled = true
{tenant("east", "Asia/Kolkata", "en")}
[tenants.east.emails.subscription_confirmation]
enabled = true
[tenants.east.emails.subscription_billed_soon]
enabled = true
[tenants.east.emails.subscription_cancelled]
enabled = true
"""
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


async def _cli(config: Path, *args: str, at: datetime | None = None) -> str:
    """One ``dunmail`` command, parsed and run by the real CLI (in a thread: it runs its own
    event loop, as the console script does)."""
    runner = CliRunner()
    argv = [*args, "--config", str(config), *([] if at is None else ["--at", at.isoformat()])]
    handlers = list(logging.root.handlers)
    try:
        result = await asyncio.to_thread(runner.invoke, app, argv, catch_exceptions=False)
    finally:  # the CLI logs to the runner's captured streams, closed once it returns
        logging.root.handlers[:] = handlers
    assert result.exit_code == 0, (argv, result.output)
    return result.stdout


async def test_a_quarter_of_three_tenants_sends_exactly_the_emails_an_ar_team_expects(
    tmp_path: Path, smtpd: RecordingServer
) -> None:
    config = _config(tmp_path, smtpd)
    await _cli(config, "init")
    # The engine runs all quarter (``dunmail run`` ticks on its clock); the operator's work
    # goes through the CLI with ``--at``.
    clock = FixedClock(START)
    # Its own build: the engine beside the CLI's processes, from the config file they share.
    engine = build_services(load_config(config), clock)
    actions = sorted(ACTIONS, key=lambda item: item[0])
    day = START
    try:
        while day < END:
            for offset in TICKS:
                now = day + offset
                while actions and actions[0][0] <= now:
                    at, action = actions.pop(0)
                    await _act(config, tmp_path, smtpd, at, action)
                clock.set(now)
                await engine.dunning.tick()
            day += timedelta(days=1)
    finally:
        await engine.close()

    sent = await _cli(config, "outbox", "--json", "--limit", "1000")
    rows = json.loads(sent)
    got = sorted(
        (
            r["kind"],
            " ".join(sorted(x["address"] for x in r["recipients"])),
            _local_day(r),
        )
        for r in rows
        if r["status"] == "sent"
    )
    unsent = [
        (r["kind"], r["status"], r["skip_reason"] or r["last_error"])
        for r in rows
        if r["status"] not in {"sent", "skipped"}
    ]
    assert unsent == []
    assert got == sorted(EXPECTED), _diff(got, sorted(EXPECTED))
    statuses = {
        x["address"]: x["status"] for r in rows if r["status"] == "sent" for x in r["recipients"]
    }
    assert statuses["ap@baker.example"] == "bounced"
    suppressed = await _cli(config, "suppressions", "--json", "--tenant", "north")
    assert [s["address"] for s in json.loads(suppressed)] == ["ap@baker.example"]
    replied = await _cli(config, "inbox", "--only", "replied", "--json", "--tenant", "east")
    assert [t["document"] for t in json.loads(replied)] == ["INV-E101"], replied
    # every email the outbox calls sent reached the server, once per recipient (each in its
    # own envelope, with its own VERP return path)
    assert len(smtpd.messages) == sum(len(r["recipients"]) for r in rows if r["status"] == "sent")
    assert len({m["Message-ID"] for m in smtpd.messages}) == len(EXPECTED)


def _local_day(row: dict[str, Any]) -> str:
    address = row["recipients"][0]["address"]
    who = address.split("@")[1].split(".")[0]
    finished = datetime.fromisoformat(row["finished_at"])
    return finished.astimezone(ZoneInfo(ZONES[who])).date().isoformat()


def _diff(got: list[tuple[str, str, str]], want: list[tuple[str, str, str]]) -> str:
    extra = [g for g in got if g not in want]
    missing = [w for w in want if w not in got]
    return f"\nunexpected: {extra}\nmissing: {missing}"


async def _act(
    config: Path, tmp_path: Path, smtpd: RecordingServer, at: datetime, action: tuple[Any, ...]
) -> None:
    what = action[0]
    if what == "import":
        _, tenant, doc = action
        path = tmp_path / "doc.json"
        path.write_text(json.dumps(doc))
        await _cli(config, "import", str(path), "--tenant", tenant, at=at)
    elif what == "cli":
        await _cli(config, *action[1:], at=at)
    elif what in {"bounce", "reply"}:
        recipient = action[1]
        index = max(i for i, env in enumerate(smtpd.envelopes) if recipient in env.rcpt_tos)
        env = smtpd.envelopes[index]
        sent = SentMail(sender=env.mail_from, recipients=env.rcpt_tos, data=env.content)
        if what == "bounce":
            raw = dsn(
                sent,
                recipient=recipient,
                diagnostic=f"smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: "
                "User unknown",
            )
        else:
            raw = _reply(smtpd.messages[index], recipient)
        path = tmp_path / f"{what}-{at:%m%d}.eml"
        path.write_bytes(raw)
        await _cli(config, "bounce", "ingest", str(path), at=at)


def _reply(original: Any, sender: str) -> bytes:
    return (
        f"From: {sender}\r\n"
        f"To: {original['Reply-To']}\r\n"
        f"Subject: Re: {original['Subject']}\r\n"
        "Date: Fri, 06 Mar 2026 09:00:00 +0000\r\n"
        "Message-ID: <reply-q1@carpathia.example>\r\n"
        f"In-Reply-To: {original['Message-ID']}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "Am plătit ieri, vă rog verificați.\r\n"
    ).encode()
