"""Attacks on sign-in: other spellings of a locked name, bursts, spraying, floods.

Findings 2 and 3 of issue 14, each reproduced through a real uvicorn (conftest's ``web_server``)
on SQLite and PostgreSQL, with requests from several real loopback source addresses
(127.0.0.x) where a limit is per client:

* a name counted under the text as typed, but looked up after IDNA, let every spelling
  (soft hyphen, fullwidth letters, U+3002, zero-width joiner, ...) guess apart, and the right
  password signed in while the name was locked;
* a check, then a count, let 59 of 60 concurrent guesses through; there was no limit per client
  or overall, so spraying many names was free; and a flood of failed sign-ins made SQLite
  answer 500 (argon2 ran inside a write transaction).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from argon2 import PasswordHasher
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from dunmail.app import Services
from dunmail.web import auth, users
from dunmail.web.models import User
from dunmail.web.throttle import plan_keys
from mailer.address import canonical_login
from mailer.clock import FixedClock
from mailer.config import LoginConfig
from mailer.db import MIGRATIONS, make_engine, session_scope
from mailer.ledger.models import Tenant
from mailer.outbound.memory import MemoryTransport

PASSWORD = "correct horse battery"
WRONG = "wrong password here"
# The limits of this module's server, unless a test asks for others (``login_limits``).
LIMITS: dict[str, int] = {
    "per_address_and_client": 5,
    "per_address": 20,
    "per_client": 30,
    "overall": 60,
}

# Default_Ignorable_Code_Point samples, written out here rather than read from the code under
# test: soft hyphen, zero-width space, ZWNJ, ZWJ, word joiner, BOM, VS1, VS16, VS17, CGJ, LRM,
# Mongolian FVS1, left-to-right isolate, tag letter A, Hangul filler.
IGNORABLES = [
    "\u00ad", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\ufe00", "\ufe0f",
    "\U000e0100", "\u034f", "\u200e", "\u180b", "\u2066", "\U000e0041", "\u3164",
]  # fmt: skip


def _variants(ch: str) -> list[str]:
    """Ways to write one character that sign-in must read as that character."""
    options = [ch, ch.upper()]
    if "!" <= ch <= "~":
        options.append(chr(ord(ch) + 0xFEE0))  # fullwidth form (NFKC)
    if "a" <= ch <= "z":
        options.append(chr(0x1D41A + ord(ch) - ord("a")))  # mathematical bold (NFKC)
        options.append(chr(0x24D0 + ord(ch) - ord("a")))  # circled (NFKC)
    if ch == "k":
        options.append("\u212a")  # KELVIN SIGN
    if ch == ".":
        options += [
            "\u3002",
            "\uff0e",
            "\uff61",
            "\ufe52",
        ]  # ideographic, fullwidth, halfwidth, small
    if ch == "ü":
        options += ["u\u0308", "U\u0308", "u\u00ad\u0308"]  # decomposed, with a hyphen inside
    return options


def spellings(name: str) -> st.SearchStrategy[str]:
    """``name`` with any mix of case, compatibility forms, dot variants, invisible code points
    between any two characters, and blanks around it."""
    pieces = [
        st.tuples(
            st.sampled_from(_variants(ch)),
            st.lists(st.sampled_from(IGNORABLES), max_size=2).map("".join),
        ).map("".join)
        for ch in name
    ]
    blank = st.sampled_from(["", " ", "\t", "\u3000"])
    return st.tuples(blank, st.lists(st.sampled_from(IGNORABLES), max_size=2), *pieces, blank).map(
        lambda parts: parts[0] + "".join(parts[1]) + "".join(parts[2:])
    )


# -- the one spelling -----------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        spellings("clerk@acme.example").map(lambda s: (s, "clerk@acme.example")),
        spellings("ar@bücher.example").map(lambda s: (s, "ar@xn--bcher-kva.example")),
    )
)
def test_every_spelling_of_a_name_is_one_sign_in_name(case: tuple[str, str]) -> None:
    typed, stored = case
    assert canonical_login(typed) == stored
    assert plan_keys(typed, "10.0.0.1", LoginConfig()) == plan_keys(
        stored, "10.0.0.1", LoginConfig()
    )


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_the_spelling_of_any_text_is_stable(text: str) -> None:
    once = canonical_login(text)
    assert canonical_login(once) == once
    assert not re.search("[\u00ad\u200b-\u200f\u2060\ufeff\ufe00-\ufe0f\u3002]", once)


@pytest.fixture
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """argon2id at its smallest cost: the same code paths, a millisecond per hash (the real
    parameters are checked in tests/test_web_ui.py)."""
    monkeypatch.setattr(
        users, "HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )
    users._dummy_hash.cache_clear()
    yield
    users._dummy_hash.cache_clear()


def test_lookup_throttle_and_stored_name_agree_for_every_spelling(
    session: Session, clock: FixedClock, cheap_argon2: None
) -> None:
    tenant = Tenant(slug="acme", name="Acme", email="ar@acme.example", created_at=clock.now())
    session.add(tenant)
    session.flush()
    user = users.create_user(
        session,
        tenant_id=tenant.id or 0,
        email="Ｃｌｅｒｋ@ac\u00adme\u3002example",
        name="",
        password=PASSWORD,
        now=clock.now(),
    )
    session.commit()
    assert user.email == "clerk@acme.example"
    with pytest.raises(users.AuthError, match="already a user"):
        users.create_user(
            session,
            tenant_id=tenant.id or 0,
            email="clerk@ac\u200dme.example",
            name="",
            password=PASSWORD,
            now=clock.now(),
        )

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(spellings("clerk@acme.example"))
    def found(typed: str) -> None:
        assert users.authenticate(session, typed, PASSWORD) == user
        keys = plan_keys(typed, "10.0.0.1", LoginConfig())
        assert f"a:{user.email}" in keys.limits

    found()


def test_the_migration_stores_existing_users_under_their_sign_in_name(blank_db_url: str) -> None:
    """Users added before the one spelling keep signing in: the migration rewrites their
    stored names, and leaves a name another user already holds alone."""
    engine = make_engine(blank_db_url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "0010")
            connection.exec_driver_sql(
                "INSERT INTO tenant (slug, name, email, delivery, time_zone, locale, created_at) "
                "VALUES ('acme', 'Acme', 'ar@acme.example', 'relay', 'UTC', 'en', "
                "'2026-03-02 09:00:00')"
            )
            for n, email in enumerate(
                ["ana@acme.example", "clerk@ac\u00adme.example", "ana@ac\u200bme.example"]
            ):
                connection.exec_driver_sql(
                    'INSERT INTO "user" (tenant_id, email, name, password_hash, created_at) '
                    f"VALUES (1, '{email}', '', 'x{n}', '2026-03-02 09:00:00')"
                )
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
        with Session(engine) as session:
            stored = sorted(u.email for u in session.exec(select(User)))
        assert stored == ["ana@acme.example", "ana@ac\u200bme.example", "clerk@acme.example"]
    finally:
        engine.dispose()


# -- through HTTP ---------------------------------------------------------------------------


@pytest.fixture
def login_limits(request: pytest.FixtureRequest) -> dict[str, int]:
    """This test's [web.login] limits (``indirect`` parametrization), else LIMITS."""
    return {**LIMITS, **getattr(request, "param", {})}


@pytest.fixture
def services_config(login_limits: dict[str, int]) -> dict[str, Any]:
    """This module's shared ``services``: its sign-in limits."""
    return {"web": {"port": 0, "login": login_limits}}


@pytest.fixture
def relay_env(
    services: Services, transport: MemoryTransport, clock: FixedClock, cheap_argon2: None
) -> tuple[Services, MemoryTransport]:
    """The services ``web_server`` serves, with this module's sign-in limits and one clerk."""
    with session_scope(services.engine) as session:
        users.create_user(
            session,
            tenant_id=services.tenants.id("acme"),
            email="clerk@acme.example",
            name="Clerk",
            password=PASSWORD,
            now=clock.now(),
        )
    return services, transport


def _client(base_url: str, source: str = "127.0.0.1", **kwargs: Any) -> httpx.AsyncClient:
    """A browser at loopback address ``source``: each is its own client to the throttle."""
    transport = httpx.AsyncHTTPTransport(local_address=source, **kwargs)
    return httpx.AsyncClient(base_url=base_url, transport=transport, timeout=60)


async def _csrf(client: httpx.AsyncClient) -> str:
    form = await client.get("/login")
    found = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert found, form.text
    return found.group(1)


async def _post(client: httpx.AsyncClient, csrf: str, email: str, password: str) -> httpx.Response:
    data = {"email": email, "password": password, "csrf": csrf, "next": "/inbox"}
    return await client.post("/login", data=data)


def _waits(response: httpx.Response, window_minutes: int = 15) -> bool:
    """A 429 that says how long to wait, within the window."""
    retry = response.headers.get("retry-after", "")
    return (
        response.status_code == 429 and retry.isdigit() and 1 <= int(retry) <= window_minutes * 60
    )


async def test_every_spelling_counts_against_one_lock_and_it_holds_the_right_password(
    web_server: str,
) -> None:
    spelled = [
        "clerk@ac\u00adme.example",  # soft hyphen
        "clerk@ａｃｍｅ.example",  # fullwidth
        "clerk@acme\u3002example",  # ideographic full stop
        "clerk@ac\u200dme.example",  # zero-width joiner
        "CLERK@Acme.Example",
    ]
    async with _client(web_server) as browser, _client(web_server, "127.0.0.2") as other:
        # Another client signs in with a spelling of its own: the lookup reads it as the name.
        token = await _csrf(other)
        signed = await _post(other, token, "ｃｌｅｒｋ＠acme\uff0eexample\ufe0f", PASSWORD)
        assert signed.status_code == 303 and auth.COOKIE in signed.cookies

        token = await _csrf(browser)
        for typed in spelled:
            assert (await _post(browser, token, typed, WRONG)).status_code == 401
        for typed in ["clerk@acme.example", "\u2060clerk@acme\uff61example"]:
            locked = await _post(browser, token, typed, PASSWORD)
            assert _waits(locked), (typed, locked.status_code)
            assert auth.COOKIE not in locked.cookies and "Too many sign-in attempts" in locked.text


async def test_sixty_concurrent_wrong_passwords_let_exactly_the_limit_through(
    web_server: str,
) -> None:
    async with _client(web_server, limits=httpx.Limits(max_connections=60)) as browser:
        token = await _csrf(browser)
        answers = await asyncio.gather(
            *(_post(browser, token, "clerk@acme.example", WRONG) for _ in range(60))
        )
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {401: LIMITS["per_address_and_client"], 429: 55}, statuses
    assert all(_waits(a) for a in answers if a.status_code == 429)


async def test_spraying_meets_the_client_limit_and_then_the_overall_limit(
    web_server: str,
) -> None:
    """One client tries one password on 40 names: 30 are checked (per_client), then 429.
    A second client takes the overall count to 60; then even a third client's right
    password for the real clerk waits."""
    async with _client(web_server, "127.0.0.2") as one, _client(web_server, "127.0.0.3") as two:
        token = await _csrf(one)
        first = await asyncio.gather(
            *(_post(one, token, f"user{n}@acme.example", WRONG) for n in range(40))
        )
        assert Counter(a.status_code for a in first) == {401: 30, 429: 10}
        assert all(_waits(a) for a in first if a.status_code == 429)

        token = await _csrf(two)
        second = await asyncio.gather(
            *(_post(two, token, f"other{n}@acme.example", WRONG) for n in range(35))
        )
        assert Counter(a.status_code for a in second) == {401: 30, 429: 5}
    async with _client(web_server, "127.0.0.4") as third:
        refused = await _post(third, await _csrf(third), "clerk@acme.example", PASSWORD)
        assert _waits(refused) and auth.COOKIE not in refused.cookies


FLOOD = {"per_client": 20, "overall": 300}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # one writer: SQLite's problem
@pytest.mark.parametrize("login_limits", [FLOOD], indirect=True)
async def test_a_flood_of_failed_sign_ins_gets_401_or_429_never_500(web_server: str) -> None:
    """600 failed sign-ins at once from 20 clients over 50 names, while /healthz is asked
    every few milliseconds: every answer is 401 or 429 (never 500), exactly ``overall`` are
    checked, no client gets more than ``per_client``, and the health check always answers 200."""
    clients = [_client(web_server, f"127.0.0.{10 + n}") for n in range(20)]
    health: list[int] = []
    done = asyncio.Event()

    async def probe() -> None:
        async with _client(web_server, "127.0.0.99") as watcher:
            while not done.is_set():
                health.append((await watcher.get("/healthz")).status_code)
                await asyncio.sleep(0.005)

    async def attack(n: int, browser: httpx.AsyncClient) -> list[httpx.Response]:
        token = await _csrf(browser)
        names = [f"user{(n * 30 + k) % 50}@acme.example" for k in range(30)]
        return list(await asyncio.gather(*(_post(browser, token, name, WRONG) for name in names)))

    watcher = asyncio.create_task(probe())
    try:
        per_client = await asyncio.gather(*(attack(n, c) for n, c in enumerate(clients)))
    finally:
        done.set()
        await watcher
        for browser in clients:
            await browser.aclose()
    answers = [a for batch in per_client for a in batch]
    assert len(answers) == 600
    assert Counter(a.status_code for a in answers) == {401: 300, 429: 300}
    assert all(_waits(a) for a in answers if a.status_code == 429)
    assert all(sum(a.status_code == 401 for a in batch) <= 20 for batch in per_client)
    assert health and set(health) == {200}
