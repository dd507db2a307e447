"""The AR inbox pages through real HTTP: sign-in, sessions, CSRF, tenant isolation, escaping.

A real uvicorn (conftest's ``web_server``) serves the app; an ``httpx.AsyncClient`` keeps the
cookies like a browser would. Mail is sent through the outbox into memory and bounced with DSNs
built as an MTA builds them (tests/test_bounce_ingest.py), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from sqlmodel import Session, select
from typer.testing import CliRunner

from dunmail.app import Services
from dunmail.cli import app as cli
from dunmail.web import auth, ui, users
from dunmail.web.models import User, WebSession
from mailer.clock import FixedClock
from mailer.db import session_scope
from mailer.errors import AddressError
from mailer.ledger.models import Tenant
from mailer.outbound.memory import MemoryTransport, SentMail
from tests.test_bounce_ingest import dsn
from tests.test_inbox import _three_threads

PASSWORD = "correct horse battery"
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"


@pytest.fixture
def fast_argon2(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """argon2id with the smallest cost: the same code paths, a millisecond per hash instead of
    tens (the real parameters are checked in test_passwords_are_argon2id...)."""
    monkeypatch.setattr(
        users, "HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )
    users._dummy_hash.cache_clear()
    yield
    users._dummy_hash.cache_clear()


@pytest.fixture
def relay_env(
    two_tenant_env: tuple[Services, MemoryTransport],
) -> tuple[Services, MemoryTransport]:
    """conftest's ``relay_env`` plus a second tenant, "beta", whose clerks must see nothing of
    acme's (``web_server`` serves these services)."""
    return two_tenant_env


def add_user(services: Services, email: str, tenant: str = "acme") -> None:
    with session_scope(services.engine) as session:
        users.create_user(
            session,
            tenant_id=services.tenants.id(tenant),
            email=email,
            name="Clerk",
            password=PASSWORD,
            now=services.clock.now(),
        )


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    form = await client.get("/login")
    data = {"email": email, "password": password, "csrf": csrf_of(form.text), "next": "/inbox"}
    return await client.post("/login", data=data)


async def bounced(services: Services, transport: MemoryTransport, diagnostic: str) -> int:
    """Send INV-1042, bounce it hard with ``diagnostic``; the thread's id."""
    await services.sending.send_invoice("INV-1042", kind="new_invoice", tenant="acme")
    # ap@'s copy: each recipient has its own envelope and VERP return path.
    sent = next(m for m in transport.sent if m.recipients == ("ap@globex.example",))
    raw = dsn(sent, diagnostic=diagnostic)
    assert services.inbound.ingest([("file:b.eml", raw)]).matched == 1
    (row,) = services.inbox.threads(tenant="acme", status=None)
    return int(row["id"])


def reply(sent: SentMail, subject: str, body: str) -> bytes:
    message_id = next(
        line.split(b":", 1)[1].strip().decode()
        for line in sent.data.split(b"\r\n")
        if line.lower().startswith(b"message-id:")
    )
    return (
        "From: Pat <billing@globex.example>\r\n"
        "To: ar@acme.example\r\n"
        f"Subject: {subject}\r\n"
        "Date: Tue, 03 Mar 2026 10:00:00 +0000\r\n"
        "Message-ID: <reply-1@globex.example>\r\n"
        f"In-Reply-To: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body
    ).encode()


@pytest.fixture
async def client(web_server: str, fast_argon2: None) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web_server, timeout=10) as client:
        yield client


async def test_pages_need_a_sign_in_and_the_password_decides(
    relay_env: tuple[Services, MemoryTransport], client: httpx.AsyncClient
) -> None:
    services, _ = relay_env
    add_user(services, "Ana@Acme.example")
    for path in ("/inbox", "/inbox/threads/1", "/inbox/outbox", "/inbox/report.csv"):
        page = await client.get(path)
        assert page.status_code == 303
        assert page.headers["location"].startswith("/login?next=/inbox")

    refused = await login(client, "ana@acme.example", "wrong password here")
    assert refused.status_code == 401 and "Wrong email or password" in refused.text
    assert auth.COOKIE not in client.cookies
    unknown = await login(client, "nobody@acme.example")
    assert unknown.status_code == 401 and "Wrong email or password" in unknown.text
    # The login form has its own CSRF token: a post from elsewhere carries none.
    forged = await client.post(
        "/login", data={"email": "ana@acme.example", "password": PASSWORD, "csrf": "x" * 43}
    )
    assert forged.status_code == 403

    signed = await login(client, "ana@acme.example")
    assert signed.status_code == 303 and signed.headers["location"] == "/inbox"
    cookie = next(
        v for v in signed.headers.get_list("set-cookie") if v.startswith(f"{auth.COOKIE}=")
    )
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower() and "Path=/" in cookie
    assert "Secure" not in cookie  # http public_url; https turns it on (config.secure_cookies)
    token = client.cookies[auth.COOKIE]
    with Session(services.engine) as session:
        (web,) = session.exec(select(WebSession)).all()  # only the SHA-256 of the token is stored
        assert web.token_hash == users.token_hash(token) and token not in web.token_hash
    inbox = await client.get("/inbox")
    assert inbox.status_code == 200 and "ana@acme.example" in inbox.text
    assert "script-src" not in inbox.headers["content-security-policy"]  # default-src 'none'

    # Five failures for one email from one client, and even its right password waits.
    add_user(services, "bo@acme.example")
    client.cookies.clear()
    for _ in range(5):
        assert (await login(client, "bo@acme.example", "wrong password here")).status_code == 401
    assert (await login(client, "bo@acme.example")).status_code == 429


async def test_a_post_without_the_sessions_csrf_token_is_refused(
    relay_env: tuple[Services, MemoryTransport], client: httpx.AsyncClient
) -> None:
    services, transport = relay_env
    thread_id = await bounced(services, transport, "smtp; 550 5.1.1 user unknown")
    add_user(services, "ana@acme.example")
    await login(client, "ana@acme.example")
    page = await client.get(f"/inbox/threads/{thread_id}")
    token = csrf_of(page.text)
    url = f"/inbox/threads/{thread_id}/note"

    assert (await client.post(url, data={"text": "no token"})).status_code == 403
    assert (await client.post(url, data={"text": "bad", "csrf": "x" * 43})).status_code == 403
    elsewhere = await client.post(
        url, data={"text": "cross-site", "csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert elsewhere.status_code == 403
    cross_site = await client.post(
        url, data={"text": "cross-site", "csrf": token}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross_site.status_code == 403
    assert (await client.post("/logout")).status_code == 403
    assert "note by" not in (await client.get(f"/inbox/threads/{thread_id}")).text

    # Our own pages send "Origin: null" (their Referrer-Policy is no-referrer): the token decides.
    done = await client.post(
        url,
        data={"text": "called Globex", "csrf": token},
        headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"},
    )
    assert done.status_code == 303 and done.headers["location"] == f"/inbox/threads/{thread_id}"
    after = await client.get(done.headers["location"])
    assert "note by ana@acme.example: called Globex" in after.text
    assert "note added" in after.text  # the one-time message of the action
    own = await client.post(
        url, data={"text": "again", "csrf": token}, headers={"Origin": str(client.base_url)}
    )
    assert own.status_code == 303


async def test_a_clerk_of_another_tenant_sees_and_touches_nothing(
    relay_env: tuple[Services, MemoryTransport], client: httpx.AsyncClient
) -> None:
    services, transport = relay_env
    thread_id = await bounced(services, transport, "smtp; 550 5.1.1 user unknown")
    add_user(services, "eve@beta.example", tenant="beta")
    await login(client, "eve@beta.example")
    for filter_ in ("all", "open", "bounced", "fix_contact", "unmatched"):
        listing = await client.get("/inbox", params={"filter": filter_})
        assert listing.status_code == 200
        assert "INV-1042" not in listing.text and "Globex" not in listing.text
    page = await client.get(f"/inbox/threads/{thread_id}")
    assert page.status_code == 404 and "INV-1042" not in page.text
    token = csrf_of((await client.get("/inbox")).text)
    for action, data in [
        ("note", {"text": "x"}),
        ("status", {"status": "resolved"}),
        ("resend", {}),
        ("contact", {"old": "ap@globex.example", "new": "eve@evil.example"}),
    ]:
        posted = await client.post(
            f"/inbox/threads/{thread_id}/{action}", data={**data, "csrf": token}
        )
        assert posted.status_code == 404, action
    assert services.inbox.thread(thread_id, tenant="acme")["status"] == "open"
    assert "ap@globex.example" not in (await client.get("/inbox/suppressions")).text
    assert "ap@globex.example" not in (await client.get("/inbox/outbox")).text
    report = await client.get("/inbox/report.csv", params={"since": "2026-01-01"})
    assert "ap@globex.example" not in report.text


async def test_text_from_mail_is_shown_escaped(
    relay_env: tuple[Services, MemoryTransport], client: httpx.AsyncClient
) -> None:
    services, transport = relay_env
    thread_id = await bounced(services, transport, f"smtp; 550 5.1.1 {SCRIPT} unknown")
    raw = reply(transport.sent[0], f"Re: invoice {IMG}", f"We paid. {SCRIPT}\r\n")
    assert services.inbound.ingest([("file:r.eml", raw)]).matched == 1
    add_user(services, "ana@acme.example")
    await login(client, "ana@acme.example")

    for page in (
        await client.get(f"/inbox/threads/{thread_id}"),
        await client.get("/inbox", params={"filter": "all"}),
        await client.get("/inbox/report", params={"since": "2026-01-01"}),
    ):
        assert page.status_code == 200
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
    thread = (await client.get(f"/inbox/threads/{thread_id}")).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in thread  # the diagnostic and the body
    assert "&lt;img src=x onerror=alert(1)&gt;" in thread  # the reply's subject
    assert '<pre class="mail-text reply-body">We paid. &lt;script&gt;' in thread
    # A filter that needs each thread's timeline finds the reply and the bounce.
    assert f"/inbox/threads/{thread_id}" in (await client.get("/inbox?filter=replied")).text
    assert f"/inbox/threads/{thread_id}" in (await client.get("/inbox?filter=bounced")).text


async def test_logout_revokes_the_session(
    relay_env: tuple[Services, MemoryTransport], client: httpx.AsyncClient
) -> None:
    services, _ = relay_env
    add_user(services, "ana@acme.example")
    await login(client, "ana@acme.example")
    stolen = client.cookies[auth.COOKIE]
    token = csrf_of((await client.get("/inbox")).text)
    out = await client.post("/logout", data={"csrf": token})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    client.cookies.set(auth.COOKIE, stolen)  # the old cookie, replayed
    again = await client.get("/inbox")
    assert again.status_code == 303 and again.headers["location"].startswith("/login")


async def test_actions_work_the_thread(
    relay_env: tuple[Services, MemoryTransport], client: httpx.AsyncClient
) -> None:
    services, transport = relay_env
    thread_id = await bounced(services, transport, "smtp; 550 5.1.1 user unknown")
    add_user(services, "ana@acme.example")
    await login(client, "ana@acme.example")
    url = f"/inbox/threads/{thread_id}"
    token = csrf_of((await client.get(url)).text)

    async def post(path: str, **data: str) -> str:
        done = await client.post(path, data={**data, "csrf": token})
        assert done.status_code == 303, done.text
        return (await client.get(done.headers["location"])).text

    assert 'id="assignee">ana@acme.example' in await post(
        f"{url}/assign", assignee="ana@acme.example"
    )
    assert 'id="status">resolved' in await post(f"{url}/status", status="resolved")
    assert 'id="status">open' in await post(f"{url}/status", status="open")

    page = await post(f"{url}/hold", scope="invoice", reason="dispute", note="wrong qty")
    assert "hold placed" in page and "wrong qty" in page
    (hold,) = services.desk.holds(tenant="acme")
    assert "lifted" in await post(f"/inbox/holds/{hold['id']}/lift", back=url)
    assert services.desk.holds(tenant="acme") == []

    # The bounce blocked ap@; billing@ got the email instead. Unblock ap@ with a reason.
    assert "ap@globex.example" in (await client.get("/inbox/suppressions")).text
    page = await post("/inbox/suppressions/unblock", address="ap@globex.example", reason="fixed")
    assert "ap@globex.example unblocked" in page
    assert services.suppressions.blocked(tenant="acme") == []

    page = await post(f"{url}/send", what="reminder")
    assert "Reminder before the due date sent" in page  # the clerk's words, not the code
    outbox = (await client.get("/inbox/outbox")).text
    assert outbox.count("Reminder before the due date") == 1 and "New invoice" in outbox
    assert "invoice_reminder" not in outbox and "new_invoice" not in outbox

    csv = await client.get("/inbox/report.csv", params={"since": "2026-03-01"})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.headers["content-disposition"] == (
        'attachment; filename="bounces-acme-since-2026-03-01.csv"'
    )
    header, row = csv.text.splitlines()
    assert header.startswith("at,document,customer") and "ap@globex.example" in row


def test_cli_adds_lists_and_disables_users(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'env = "dev"\n[database]\nurl = "sqlite:///{tmp_path / "d.db"}"\n'
        '[tenants.acme]\nname = "Acme"\nemail = "ar@acme.example"\n'
        f'[[tenants.acme.dkim]]\ndomain = "acme.example"\nselector = "s1"\n'
        f'key_file = "{tmp_path / "s1.pem"}"\n'
    )
    runner = CliRunner()
    base = ["--config", str(config)]
    added = runner.invoke(
        cli,
        ["user", "add", "Ana@Acme.example", "--name", "Ana", "--password-env", "PW", *base],
        env={"PW": PASSWORD},
    )
    assert added.exit_code == 0, added.output
    assert "user ana@acme.example added to tenant acme" in added.output
    short = runner.invoke(cli, ["user", "add", "bo@acme.example", *base], input="short\nshort\n")
    assert short.exit_code == 2 and "at least 12 characters" in short.output
    prompted = runner.invoke(
        cli, ["user", "add", "bo@acme.example", *base], input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert prompted.exit_code == 0 and PASSWORD not in prompted.output
    unset = runner.invoke(cli, ["user", "add", "cy@acme.example", "--password-env", "NOPE", *base])
    assert unset.exit_code == 2

    listed = runner.invoke(cli, ["user", "list", *base])
    assert "ana@acme.example  acme  Ana" in listed.output and "bo@acme.example" in listed.output
    disabled = runner.invoke(cli, ["user", "disable", "ana@acme.example", *base])
    assert disabled.exit_code == 0 and "disabled" in disabled.output
    assert "disabled 20" in runner.invoke(cli, ["user", "list", *base]).output


def test_passwords_are_argon2id_and_rehashed_when_parameters_change(
    session: Session, clock: FixedClock
) -> None:
    tenant = Tenant(slug="acme", name="Acme", email="ar@acme.example", created_at=clock.now())
    session.add(tenant)
    session.flush()

    def new(email: str, password: str = PASSWORD) -> User:
        return users.create_user(
            session,
            tenant_id=tenant.id or 0,
            email=email,
            name="",
            password=password,
            now=clock.now(),
        )

    user = new("ana@acme.example")
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    with pytest.raises(users.AuthError, match="already a user"):
        new("ANA@acme.example")
    with pytest.raises(users.AuthError, match="at least 12"):
        new("bo@acme.example", "short")
    with pytest.raises(AddressError):
        new("bo@acme.example\r\nBcc: x@y.example")
    # Hashed with other (older) parameters: it still verifies and is replaced on sign-in.
    user.password_hash = PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORD)
    old = user.password_hash
    assert users.authenticate(session, "ana@acme.example", PASSWORD) is not None
    (stored,) = session.exec(select(User)).all()
    assert stored.password_hash != old and not users.HASHER.check_needs_rehash(stored.password_hash)
    assert users.authenticate(session, "ana@acme.example", "wrong password!!") is None
    assert users.authenticate(session, "not an address", PASSWORD) is None


async def test_the_inbox_pages_through_threads_and_filters_in_sql(
    relay_env: tuple[Services, MemoryTransport],
    client: httpx.AsyncClient,
    clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services, transport = relay_env
    await _three_threads(services, transport, clock)
    monkeypatch.setattr(ui, "PAGE", 2)
    add_user(services, "ana@acme.example")
    await login(client, "ana@acme.example")

    first = await client.get("/inbox", params={"filter": "all"})
    assert re.findall(r">(INV-\d)</a>", first.text) == ["INV-3", "INV-2"]
    older = re.search(r'id="older" href="([^"]+)"', first.text)
    assert older is not None
    second = await client.get(older.group(1).replace("&amp;", "&"))
    assert re.findall(r">(INV-\d)</a>", second.text) == ["INV-1"]
    assert 'id="older"' not in second.text
    bounced_only = await client.get("/inbox", params={"filter": "bounced"})
    assert re.findall(r">(INV-\d)</a>", bounced_only.text) == ["INV-1"]
    # A cursor edited by hand shows the first page, not an error.
    edited = await client.get("/inbox", params={"filter": "all", "before": "<script>~1"})
    assert edited.status_code == 200 and "&lt;script&gt;" not in edited.text
    assert re.findall(r">(INV-\d)</a>", edited.text) == ["INV-3", "INV-2"]
