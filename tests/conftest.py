"""Shared fixtures: an injected clock, real databases (SQLite file and PostgreSQL), test keys."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from dunmail.app import Services, build_services
from dunmail.config import Config
from mailer.clock import FixedClock
from mailer.config import DKIMAlgorithm
from mailer.content.kinds import KINDS
from mailer.content.render import Renderer
from mailer.db import create_schema, make_engine
from mailer.outbound.identity import signing_keys
from mailer.outbound.memory import MemoryTransport, SentMail

pytest_plugins = ["tests.smtpd", "tests.long_first"]

PG_ADMIN_URL = os.environ.get(
    "DUNMAIL_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday morning, far from any DST change


def _postgres_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can."""
    try:
        engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # any failure means "not here"; the reason is shown in the skip
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"
    return None


_PG_SKIP = _postgres_reason()


def _weasyprint_reason() -> str | None:
    """Why PDFs cannot be rendered here (WeasyPrint needs Debian's Pango), or None."""
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"WeasyPrint cannot load (Debian packages libpango-1.0-0 libpangoft2-1.0-0): {exc}"
    return None


WEASYPRINT_SKIP = _weasyprint_reason()


_TEMPLATE: list[Path] = []


def _sqlite_template(factory: pytest.TempPathFactory) -> Path:
    if not _TEMPLATE:
        path = factory.mktemp("template") / "migrated.db"
        engine = make_engine(f"sqlite:///{path}")
        create_schema(engine)
        engine.dispose()  # closing the last connection checkpoints the WAL into the file
        if Path(f"{path}-wal").exists():
            raise RuntimeError("the template database kept a WAL file; copying it would lose data")
        _TEMPLATE.append(path)
    return _TEMPLATE[0]


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh, empty database URL per test: a SQLite file, or a private PostgreSQL schema."""
    if request.param == "sqlite":
        # Copy a database migrated once per session: the same schema, without re-running
        # Alembic for every test.
        path = tmp_path_factory.mktemp("db") / "dunmail.db"
        shutil.copyfile(_sqlite_template(tmp_path_factory), path)
        yield f"sqlite:///{path}"
        return
    if _PG_SKIP:
        pytest.skip(_PG_SKIP)
    # A database of its own, copied from this worker's template database, migrated once per
    # session: CREATE DATABASE ... TEMPLATE takes a fifth of a second where running Alembic's
    # migrations into an empty schema took a second and a half, for every PostgreSQL test.
    name = f"t_{secrets.token_hex(6)}"
    admin = _pg_admin()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{_pg_template()}"'))
    try:
        yield _pg_url(name)
    finally:
        # Dropped behind the next test's back: DROP DATABASE waits on the disk.
        _pg_dropper().submit(_drop_pg_database, name)


_PG: dict[str, Any] = {}


def _pg_admin() -> Engine:
    """An AUTOCOMMIT engine on the admin database (CREATE/DROP DATABASE run outside a
    transaction), one per worker process."""
    if "admin" not in _PG:
        _PG["admin"] = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    engine: Engine = _PG["admin"]
    return engine


def _pg_url(database: str) -> str:
    return sa.make_url(PG_ADMIN_URL).set(database=database).render_as_string(hide_password=False)


def _pg_template() -> str:
    """This worker's migrated template database (made on first use, dropped at exit). No
    connection to it may stay open: PostgreSQL copies only a database nobody is using."""
    if "template" not in _PG:
        name = f"dm_tpl_{os.getpid()}_{secrets.token_hex(3)}"
        with _pg_admin().connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine = make_engine(_pg_url(name))
        create_schema(engine)
        engine.dispose()
        _PG["template"] = name
        atexit.register(_drop_pg_template, name)
    template: str = _PG["template"]
    return template


def _drop_pg_database(name: str) -> None:
    with _pg_admin().connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _pg_dropper() -> ThreadPoolExecutor:
    """One thread per worker that drops the tests' databases in the order they finished."""
    if "dropper" not in _PG:
        _PG["dropper"] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-drop")
    dropper: ThreadPoolExecutor = _PG["dropper"]
    return dropper


def _drop_pg_template(name: str) -> None:
    if "dropper" in _PG:
        _PG["dropper"].shutdown(wait=True)  # every test database first
    _drop_pg_database(name)
    _pg_admin().dispose()


@pytest.fixture
def blank_db_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database (no tables, no Alembic revision) of ``db_url``'s kind, for the tests
    that migrate step by step from an old revision: ``db_url`` is migrated already."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'blank.db'}"
        return
    name = f"t_{secrets.token_hex(6)}"
    with _pg_admin().connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield _pg_url(name)
    finally:
        _pg_dropper().submit(_drop_pg_database, name)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    """One template renderer per module: its environments are costly to build."""
    return Renderer()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a migrated, empty database (``db_url`` copies a migrated one)."""
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session on a migrated, empty database whose rows stay readable after commit."""
    with Session(engine, expire_on_commit=False) as session:
        yield session


# [tenants.<slug>.emails]: every PDF switched off, so tests that are not about PDFs start no
# WeasyPrint process pool.
NO_PDFS: dict[str, dict[str, bool]] = {
    kind: {"attach_pdf": False} for kind, spec in KINDS.items() if spec.pdf is not None
}


def make_config(tmp_path: Path, db_url: str, *, pdfs: bool = False, **overrides: Any) -> Config:
    """A dev config with one relay tenant ("acme") and DKIM keys under ``tmp_path``
    (``seed_dev_keys``: each missing RSA key file is written with this worker's key of that
    file name, instead of ``env = "dev"`` generating a fresh one per test).

    Tenants attach no PDFs unless ``pdfs`` is set or their own ``emails`` table says so.
    """
    data: dict[str, Any] = {
        "env": "dev",
        "database": {"url": db_url},
        "relay": {"host": "127.0.0.1", "port": 2525, "domain": "relay.example"},
        "web": {"port": 0},  # dunmail run in a test: any free port
        "tenants": {
            "acme": {
                "name": "Acme Supplies",
                "email": "ar@acme.example",
                "dkim": [
                    {
                        "domain": "acme.example",
                        "selector": "s1",
                        "key_file": str(tmp_path / "keys" / "s1.pem"),
                    }
                ],
            }
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    if not pdfs:
        data["tenants"] = {
            slug: {**tenant, "emails": NO_PDFS}
            if isinstance(tenant, dict) and "emails" not in tenant
            else tenant
            for slug, tenant in data["tenants"].items()
        }
    config = Config(**data)
    seed_dev_keys(config)
    return config


_DEV_KEYS: dict[str, bytes] = {}


def seed_dev_keys(config: Config) -> None:
    """Write each missing RSA key file of ``config``'s tenants (and relay) with a key made
    once per worker for that file name, mode 0600 as ``generate_key`` writes it.

    Making a 2048-bit RSA key takes 40 ms and more on a busy machine, and ``env = "dev"``
    made one for every test's fresh ``tmp_path``. Keys of different file names differ, so
    two tenants of one config still sign with different keys. A test of the generation
    itself uses a config whose key file is missing (tests/test_cli.py's init test)."""
    for tenant in config.tenants.values():
        for key in signing_keys(tenant, config.relay):
            path = key.key_file
            if key.algorithm is not DKIMAlgorithm.RSA_SHA256 or path.exists():
                continue
            if path.name not in _DEV_KEYS:
                private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                _DEV_KEYS[path.name] = private.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.TraditionalOpenSSL,
                    serialization.NoEncryption(),
                )
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(_DEV_KEYS[path.name])


DEMO_DOC: dict[str, Any] = {
    "customers": [
        {
            "id": "C-1",
            "name": "Globex",
            "locale": "en",
            "time_zone": "UTC",
            "contacts": [
                {"email": "ap@globex.example", "name": "AP", "roles": ["ap"]},
                {"email": "billing@globex.example", "name": "Bill", "roles": ["billing"]},
            ],
        },
    ],
    "invoices": [
        {
            "id": "i-1042",
            "number": "INV-1042",
            "customer": "C-1",
            "currency": "EUR",
            "issued_at": "2026-03-01",
            "due_at": "2026-03-31",
            "status": "open",
            "lines": [{"description": "Support", "quantity": "1", "unit_price": "120.00"}],
        },
    ],
}


@pytest.fixture
def postfix() -> Iterator[Any]:
    """A private Postfix on 127.0.0.1 (tests/postfix.py), or a skip that says why."""
    from tests.postfix import postfix_fixture

    yield from postfix_fixture()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "services_config(**overrides): keyword arguments of make_config for the shared "
        "`services` fixture",
    )


@pytest.fixture
def transport() -> MemoryTransport:
    """Where the shared ``services`` send: memory, serialised as on the wire."""
    return MemoryTransport()


@pytest.fixture
def services_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The settings ``services`` are built with, as keyword arguments of ``make_config``: the
    test's ``@pytest.mark.services_config(...)`` (a file or class may set it once), else none.

    A module whose settings need other fixtures (``tmp_path``, a receiver's URL) overrides this
    fixture instead."""
    marker = request.node.get_closest_marker("services_config")
    return dict(marker.kwargs) if marker else {}


@pytest.fixture
def services_options() -> dict[str, Any]:
    """Keyword arguments of ``build_services`` itself for the shared ``services`` (``pdfs``,
    ``pdf_renderer``, ``attach_pdf``): none, unless a module overrides this fixture."""
    return {}


@pytest.fixture
async def services(
    services_config: dict[str, Any],
    services_options: dict[str, Any],
    tmp_path: Path,
    db_url: str,
    clock: FixedClock,
    transport: MemoryTransport | None,
) -> AsyncIterator[Services]:
    """Services for the tenant "acme" (relay mode, domain relay.example) or as
    ``services_config`` says, sending into ``transport``, on every backend ``db_url`` gives
    (SQLite and PostgreSQL), with nothing imported.

    One place builds them, so a change to ``build_services`` touches one fixture instead of
    each test file. A module whose mail must cross real SMTP overrides ``transport`` to give
    None (the configured SMTPTransport) and points the relay at ``smtpd`` in its
    ``services_config``."""
    config = make_config(tmp_path, db_url, **services_config)
    # ``db_url`` is a copy of a migrated database: Alembic's upgrade to head would only read
    # its revision scripts again (a tenth of a second). Migration at start-up is tested where
    # it is the subject (tests/test_db.py, the CLI's init and run).
    built = build_services(config, clock, transport, **{"migrate": False, **services_options})
    yield built
    await built.close()


async def _demo_services(
    tmp_path: Path, db_url: str, clock: FixedClock, **tenants: dict[str, Any]
) -> AsyncIterator[tuple[Services, MemoryTransport]]:
    transport = MemoryTransport()
    config = make_config(tmp_path, db_url, relay={"domain": "relay.example"}, tenants=tenants)
    services = build_services(config, clock, transport)
    assert services.ledger.import_document(DEMO_DOC, tenant="acme").errors == []
    yield services, transport
    await services.close()


@pytest.fixture
async def relay_env(
    services: Services, transport: MemoryTransport
) -> AsyncIterator[tuple[Services, MemoryTransport]]:
    """The shared ``services`` with DEMO_DOC imported, and the ``transport`` they send into:
    what the bounce and inbox tests start from."""
    assert services.ledger.import_document(DEMO_DOC, tenant="acme").errors == []
    yield services, transport


@pytest.fixture
async def two_tenant_env(
    tmp_path: Path, db_url: str, clock: FixedClock
) -> AsyncIterator[tuple[Services, MemoryTransport]]:
    """``relay_env`` plus a second tenant, "beta", which must never see anything of acme's."""
    beta = {
        "name": "Beta Ltd",
        "email": "ar@beta.example",
        "dkim": [
            {"domain": "beta.example", "selector": "b1", "key_file": str(tmp_path / "b1.pem")}
        ],
    }
    async for pair in _demo_services(tmp_path, db_url, clock, beta=beta):
        yield pair


@pytest.fixture
async def web_server(relay_env: tuple[Services, MemoryTransport]) -> AsyncIterator[str]:
    """The web app of ``relay_env``'s services served by a real uvicorn on a free loopback
    port, on the test's event loop; yields its base URL ("http://127.0.0.1:PORT")."""
    import asyncio
    import socket

    import uvicorn

    from dunmail.web.app import create_app

    services, _ = relay_env
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(services), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


def emails(transport: MemoryTransport) -> list[SentMail]:
    """The emails among ``transport.sent``, one per message, in first-sent order.

    Each recipient gets its own SMTP transaction and VERP return path
    (mailer/outbound/envelopes.py),
    so an email to two people is two transactions carrying the same bytes: here they are one
    ``SentMail`` with both recipients (and the first one's return path)."""
    merged: dict[bytes, SentMail] = {}
    for mail in transport.sent:
        seen = merged.get(mail.data)
        recipients = mail.recipients if seen is None else seen.recipients + mail.recipients
        merged[mail.data] = SentMail(seen.sender if seen else mail.sender, recipients, mail.data)
    return list(merged.values())


def sent_to(transport: MemoryTransport, address: str = "ap@globex.example") -> SentMail:
    """The last copy sent to ``address``: each recipient has its own transaction, and a bounce
    about it comes back to that transaction's VERP return path."""
    return next(m for m in reversed(transport.sent) if m.recipients == (address,))
