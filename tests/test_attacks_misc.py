"""The attack catalogue, smaller edges: terminal escapes in what the CLI prints from mail, a fresh
link that must not dun, row ids past the database's integers, the SQLite file's mode, a
one-character secret key in production, and an assignee from another tenant.

Part of the catalogue split by attack family (``tests/test_attacks_*.py``); every attack goes
through the real paths (the real CLI, real HTTP against uvicorn, real SQLite and PostgreSQL
where a database plays a part).
"""

from __future__ import annotations

import base64
import copy
import email
import io
import json
import re
import stat
from datetime import UTC, datetime
from email import policy
from email.header import Header
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.table import Table

from dunmail.app import Services
from dunmail.cli_common import SafeConsole
from dunmail.config import load_config
from dunmail.terminal import printable
from dunmail.web.keyring import create_key
from dunmail.web.link_service import revoke_links
from mailer.clock import FixedClock
from mailer.content.kinds import KINDS
from mailer.content.render import Renderer
from mailer.content.samples import sample_context
from mailer.db import make_engine, session_scope
from mailer.errors import ConfigError, MailerError
from mailer.ledger.models import HoldReason
from mailer.outbound.links import verify_link
from mailer.outbound.memory import MemoryTransport, SentMail
from tests.conftest import DEMO_DOC, make_config
from tests.test_cli import dunmail, write_config
from tests.test_inbox import add_clerk
from tests.test_web_ui import PASSWORD, add_user, csrf_of, fast_argon2, login

__all__ = ["fast_argon2"]  # a fixture used here, imported from test_web_ui


@pytest.fixture
def relay_env(
    two_tenant_env: tuple[Services, MemoryTransport],
) -> tuple[Services, MemoryTransport]:
    """conftest's ``relay_env`` plus a second tenant, "beta" (what ``web_server`` serves)."""
    return two_tenant_env


# -- 8. terminal escapes in what the CLI prints ------------------------------------------------

# What a terminal must never receive from mail: C0 controls but newline and tab, DEL, the C1
# controls (0x9B is CSI on an 8-bit terminal), the bidi marks, overrides and isolates.
BIDI = set("\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def unsafe_in(text: str) -> list[str]:
    return sorted(
        {
            ch
            for ch in text
            if (ord(ch) < 0x20 and ch not in "\n\t") or 0x7F <= ord(ch) <= 0x9F or ch in BIDI
        }
    )


# Text as hostile mail writes it: controls and bidi characters mixed into ordinary text.
hostile_text = st.lists(
    st.one_of(
        st.characters(min_codepoint=0, max_codepoint=0x9F),
        st.sampled_from(sorted(BIDI) + ["\x1b[2J", "\x1b]0;pwned\x07", "\x9b31m", "\r\n"]),
        st.characters(),
    ),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=hostile_text)
def test_printed_text_never_holds_a_control_character(text: str) -> None:
    """Whatever the text, what any printer writes (plain lines, tables, errors) has none."""
    assert unsafe_in(printable(text)) == []
    assert unsafe_in(printable(text, one_line=True)) == []
    assert "\n" not in printable(text, one_line=True)
    out = io.StringIO()
    console = SafeConsole(file=out, width=100, soft_wrap=True)
    table = Table("field", "value")
    table.add_row("subject", text)
    console.print(table)
    console.print(text, markup=False, highlight=False)
    console.rule(text)
    assert unsafe_in(out.getvalue()) == []


def _encoded_reply(sent: SentMail, *, n: int, subject: str, body: str) -> bytes:
    """A reply to ``sent`` whose subject (RFC 2047) and body (base64) carry any character."""
    message_id = next(
        line.split(b":", 1)[1].strip().decode()
        for line in sent.data.split(b"\r\n")
        if line.lower().startswith(b"message-id:")
    )
    encoded_subject = Header(subject, "utf-8").encode() if subject else "(none)"
    encoded_body = base64.encodebytes(body.encode("utf-8", "surrogatepass")).decode()
    return (
        "From: Pat <billing@globex.example>\r\n"
        "To: ar@acme.example\r\n"
        f"Subject: {encoded_subject}\r\n"
        "Date: Tue, 03 Mar 2026 10:00:00 +0000\r\n"
        f"Message-ID: <reply-{n}@globex.example>\r\n"
        f"In-Reply-To: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n" + encoded_body
    ).encode()


EVIL_NAME = "Globex\x1b[2J\x1b[H\u202eevil\u202c\x9b2J\x07\x08\rOK"


@pytest.fixture
def services_config(tmp_path: Path, db_url: str) -> dict[str, Any]:
    """This module's shared ``services`` (what ``replied`` starts from): acme and a second
    tenant, "beta"."""
    acme = make_config(tmp_path, db_url).tenants["acme"].model_dump(mode="json")
    beta = {"name": "Beta Ltd", "email": "ar@beta.example"}
    tenants = {"acme": acme, "beta": beta}  # the CLI's config (write_config) has acme alone
    return {"relay": {"domain": "relay.example"}, "tenants": tenants}


@pytest.fixture
async def replied(
    services: Services, transport: MemoryTransport, tmp_path: Path, db_url: str
) -> tuple[Services, SentMail, Path]:
    """acme's INV-1042 sent to a customer whose name carries escapes, a second tenant
    ("beta"), and a config file for the CLI."""
    doc = copy.deepcopy(DEMO_DOC)
    doc["customers"][0]["name"] = EVIL_NAME
    assert services.ledger.import_document(doc, tenant="acme").errors == []
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    return services, transport.sent[-1], write_config(tmp_path, db_url, 2525)


def _cli_output(config: Path, thread: int) -> str:
    outputs = []
    for args in (("inbox", "--status", "all"), ("inbox", "show", str(thread))):
        result = dunmail(config, *args)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
    return "\n".join(outputs)


async def test_escape_sequences_in_a_reply_are_shown_not_obeyed_by_inbox_and_inbox_show(
    replied: tuple[Services, SentMail, Path],
) -> None:
    services, sent, config = replied
    subject = "Re: invoice\x1b[2J\x1b]0;owned\x07 \u202egnp.exe\u202c"
    body = "Paid.\x1b[1A\x1b[2K\rFaked line\x08\x08\n\u2066hidden\u2069\tok\r\n"
    raw = _encoded_reply(sent, n=1, subject=subject, body=body)
    assert services.inbound.ingest([("file:r.eml", raw)]).matched == 1
    (row,) = services.inbox.threads(tenant="acme", status=None)
    shown = _cli_output(config, row["id"])
    assert unsafe_in(shown) == []
    # Shown as escapes the clerk can read, at the place they were.
    assert "Re: invoice\\x1b[2J\\x1b]0;owned\\x07 \\u202egnp.exe\\u202c" in shown
    assert "Globex\\x1b[2J\\x1b[H\\u202eevil\\u202c\\x9b2J\\x07\\x08\\rOK" in shown
    # JSON keeps the data: the escapes decode back to what the mail said.
    as_json = dunmail(config, "inbox", "show", str(row["id"]), "--json")
    assert unsafe_in(as_json.stdout) == []
    data = json.loads(as_json.stdout)
    assert data["customer_name"] == EVIL_NAME
    assert any(entry["summary"].endswith(subject) for entry in data["timeline"])
    assert any(entry["detail"] == body.rstrip() for entry in data["timeline"])
    # Errors too: a thread id is ours, but a failing command's message may quote mail.
    assert unsafe_in(dunmail(config, "inbox", "assign", str(row["id"]), EVIL_NAME).stderr) == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the database plays no part
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(subject=hostile_text, body=hostile_text)
async def test_no_reply_whatever_it_holds_puts_a_control_character_on_the_terminal(
    replied: tuple[Services, SentMail, Path], subject: str, body: str
) -> None:
    services, sent, config = replied
    n = len(services.inbox.unmatched()) + 100 + abs(hash((subject, body))) % 10**9
    raw = _encoded_reply(sent, n=n, subject=subject, body=body)
    services.inbound.ingest([("file:r.eml", raw)])
    (row,) = services.inbox.threads(tenant="acme", status=None)
    assert unsafe_in(_cli_output(config, row["id"])) == []


# -- 9a. a fresh link on a held invoice ---------------------------------------------------------


def _parts(sent: SentMail) -> tuple[str, str, str]:
    """Subject, text and HTML of a sent email, decoded."""
    parsed = email.message_from_bytes(sent.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    text, html = (parsed.get_body(preferencelist=(kind,)) for kind in ("plain", "html"))
    assert text is not None and html is not None
    return str(parsed["Subject"]), text.get_content(), html.get_content()


def _view_token(sent: SentMail, services: Services) -> str:
    for token in re.findall(r"/l/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)", _parts(sent)[1]):
        if verify_link(token, keys=services.links.keys, now=services.clock.now()).purpose == "view":
            return str(token)
    raise AssertionError("no View link in the email")


DUNNING = re.compile(r"overdue|outstanding|reminder|due on|disregard|settle", re.IGNORECASE)


async def test_a_fresh_link_on_a_held_invoice_is_a_neutral_email_not_an_overdue_notice(
    relay_env: tuple[Services, MemoryTransport], web_server: str, clock: FixedClock
) -> None:
    services, transport = relay_env
    clock.set(datetime(2026, 4, 14, 9, tzinfo=UTC))  # two weeks past INV-1042's due date
    await services.sending.send_invoice("INV-1042", kind="late_payment_reminder", tenant="acme")
    overdue = transport.sent[-1]
    assert DUNNING.search(_parts(overdue)[0])  # the email the customer had: "Overdue: ..."
    services.desk.place_hold(
        tenant="acme",
        customer=None,
        invoice="INV-1042",
        reason=HoldReason.DISPUTE,
        until=None,
        note="customer disputes line 1",
        by="test",
    )
    view = _view_token(overdue, services)
    revoke_links(services, tenant="acme", token=view, reason="forwarded by mistake", by="test")
    async with httpx.AsyncClient(base_url=web_server, timeout=10) as client:
        assert (await client.get(f"/l/{view}")).status_code == 410
        assert (await client.post(f"/l/{view}/refresh")).status_code == 200
        await services.sending.deliver()
        fresh = transport.sent[-1]
        assert fresh is not overdue
        subject, text, html = _parts(fresh)
        assert subject == "Your new link: Invoice INV-1042"
        for part in (subject, text, html):
            assert not DUNNING.search(part), DUNNING.search(part)
        assert "Here is the new link you asked for: Invoice INV-1042." in text
        # Its links are the document's, and work.
        new_view = _view_token(fresh, services)
        assert new_view != view
        assert (await client.get(f"/l/{new_view}")).status_code == 200


@pytest.mark.parametrize("locale", ["en", "de", "es", "fr", "ro"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_fresh_link_email_is_neutral_for_every_kind_in_every_language(
    kind: str, locale: str, renderer: Renderer
) -> None:
    context = {**sample_context(kind, locale=locale), "fresh_link": True}
    context["customer"] = {**context["customer"], "name": "Globex <script>x</script>"}
    fresh = renderer.render(kind, context)
    usual = renderer.render(kind, sample_context(kind, locale=locale))
    assert fresh.subject != usual.subject
    first = {"en": "Your", "de": "Ihr", "es": "Su", "fr": "Votre", "ro": "Noul"}[locale]
    assert fresh.subject.split()[0] == first
    assert fresh.html is not None and "<script>x" not in fresh.html
    for url in (u for u in context["links"].values() if u):
        assert url in fresh.text and url in fresh.html


# -- 9b. row ids past the database's integers ------------------------------------------------

HUGE = "99999999999999999999"  # 2**66 and a bit: no database integer holds it
# (2**31 is past PostgreSQL's INTEGER, the type of every id column there.)


def _api_key(services: Services, slug: str) -> str:
    with session_scope(services.engine) as session:
        _, key = create_key(
            session, tenant_id=services.tenants.id(slug), name="erp", now=services.clock.now()
        )
    return key


async def test_ids_past_64_bits_are_refused_not_a_server_error(
    relay_env: tuple[Services, MemoryTransport], web_server: str, fast_argon2: None
) -> None:
    services, _ = relay_env
    add_user(services, "ana@acme.example")
    api = {"Authorization": f"Bearer {_api_key(services, 'acme')}"}
    async with httpx.AsyncClient(base_url=web_server, timeout=10) as client:
        assert (await login(client, "ana@acme.example", PASSWORD)).status_code == 303
        csrf = csrf_of((await client.get("/inbox")).text)
        for huge in (HUGE, str(2**63), str(2**31), "-" + HUGE):
            page = await client.get(f"/inbox/threads/{huge}")
            assert page.status_code in (404, 422), (huge, page.status_code)
            for action, form in (
                ("assign", {"assignee": ""}),
                ("status", {"status": "resolved"}),
                ("note", {"text": "x"}),
                ("resend", {}),
                ("send", {"what": "reminder"}),
                ("hold", {"reason": "dispute"}),
                ("contact", {"old": "a@b.example", "new": "c@d.example"}),
            ):
                posted = await client.post(
                    f"/inbox/threads/{huge}/{action}", data={"csrf": csrf, **form}
                )
                assert posted.status_code in (404, 422), (action, huge, posted.status_code)
            lifted = await client.post(f"/inbox/holds/{huge}/lift", data={"csrf": csrf})
            assert lifted.status_code in (404, 422)
            for path in (f"/api/v1/threads/{huge}", f"/api/v1/messages?offset={huge}"):
                got = await client.get(path, headers=api)
                assert got.status_code in (404, 422), (path, got.status_code)
            for method in ("POST", "DELETE"):
                suffix = "/lift" if method == "POST" else ""
                got = await client.request(method, f"/api/v1/holds/{huge}{suffix}", headers=api)
                assert got.status_code in (404, 422), (method, got.status_code)
        # The largest id an INTEGER column holds on both databases is just not found.
        assert (await client.get(f"/inbox/threads/{2**31 - 1}")).status_code == 404
        assert (await client.get("/healthz")).status_code == 200


# -- 9c. the SQLite file's mode ------------------------------------------------------------------


def test_the_sqlite_file_and_its_wal_and_shm_are_private(tmp_path: Path) -> None:
    path = tmp_path / "var" / "dunmail.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x)")
            connection.exec_driver_sql("INSERT INTO t VALUES (1)")
        with engine.connect() as reader:
            reader.exec_driver_sql("SELECT * FROM t").all()
            files = sorted(path.parent.iterdir())
            assert [f.name for f in files] == ["dunmail.db", "dunmail.db-shm", "dunmail.db-wal"]
            modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
    finally:
        engine.dispose()
    assert modes == dict.fromkeys(modes, 0o600), {k: oct(v) for k, v in modes.items()}


# -- 9d. the secret key in production ------------------------------------------------------------


def test_production_refuses_a_short_secret_key_and_dev_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "config.toml"
    file.write_text('env = "production"\n[database]\nurl = "sqlite:///x.db"\n')
    for short in ("x", "s" * 31, "é" * 15):  # 1, 31 and 30 bytes (15 characters)
        monkeypatch.setenv("DUNMAIL_SECRET_KEY", short)
        with pytest.raises(ConfigError) as refused:
            load_config(file)
        message = str(refused.value)
        assert "DUNMAIL_SECRET_KEY" in message and "at least 32" in message
        assert short not in message.replace("DUNMAIL_SECRET_KEY", "")  # never echoes the key
    monkeypatch.setenv("DUNMAIL_SECRET_KEY", "k" * 32)
    assert load_config(file).secret_key() == b"k" * 32
    file.write_text('env = "dev"\n[database]\nurl = "sqlite:///x.db"\n')
    monkeypatch.setenv("DUNMAIL_SECRET_KEY", "x")
    assert load_config(file).secret_key() == b"x"  # development is unchanged


# -- 9e. the assignee ----------------------------------------------------------------------------


async def test_a_thread_is_assigned_only_to_a_user_of_its_tenant(
    replied: tuple[Services, SentMail, Path],
) -> None:
    services, sent, config = replied
    raw = _encoded_reply(sent, n=1, subject="Re: invoice", body="Paid yesterday.\n")
    assert services.inbound.ingest([("file:r.eml", raw)]).matched == 1
    (row,) = services.inbox.threads(tenant="acme", status=None)
    thread = row["id"]
    add_clerk(services, "ana@acme.example")
    add_clerk(services, "eve@beta.example", tenant="beta")
    for who in ("eve@beta.example", "Eve", "ana@acme.example.evil", "<script>"):
        with pytest.raises(MailerError, match="not a user of this tenant"):
            services.inbox.update(thread, tenant="acme", assignee=who)
    assert services.inbox.thread(thread, tenant="acme")["assignee"] is None
    assigned = services.inbox.update(thread, tenant="acme", assignee="Ana@ACME.example")
    assert assigned["assignee"] == "ana@acme.example"
    assert services.inbox.update(thread, tenant="acme", assignee="")["assignee"] is None
    # The CLI: one clear line, exit 2, nothing changed.
    refused = dunmail(config, "inbox", "assign", str(thread), "eve@beta.example")
    assert refused.returncode == 2
    assert "cannot assign it to 'eve@beta.example': not a user of this tenant" in refused.stderr
    assert "eve@beta.example" not in refused.stderr.split("its users:")[-1]
    assert dunmail(config, "inbox", "assign", str(thread), "ana@acme.example").returncode == 0
    assert services.inbox.thread(thread, tenant="acme")["assignee"] == "ana@acme.example"


async def test_the_inbox_page_refuses_another_tenants_user_as_assignee(
    relay_env: tuple[Services, MemoryTransport], web_server: str, fast_argon2: None
) -> None:
    services, transport = relay_env
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    raw = _encoded_reply(transport.sent[-1], n=1, subject="Re: invoice", body="Paid.\n")
    assert services.inbound.ingest([("file:r.eml", raw)]).matched == 1
    (row,) = services.inbox.threads(tenant="acme", status=None)
    add_user(services, "ana@acme.example")
    add_user(services, "eve@beta.example", tenant="beta")
    async with httpx.AsyncClient(base_url=web_server, timeout=10) as client:
        assert (await login(client, "ana@acme.example", PASSWORD)).status_code == 303
        url = f"/inbox/threads/{row['id']}"
        csrf = csrf_of((await client.get(url)).text)
        posted = await client.post(
            f"{url}/assign", data={"csrf": csrf, "assignee": "eve@beta.example"}
        )
        page = (await client.get(posted.headers["location"])).text
        assert "not a user of this tenant" in page
        assert 'id="assignee">nobody' in page
    assert services.inbox.thread(row["id"], tenant="acme")["assignee"] is None
