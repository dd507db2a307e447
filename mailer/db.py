"""Engine and session factory; no module-level engine, the composition root makes one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

# Importing each room's tables registers them on SQLModel.metadata (the web accounts' tables
# are the shell's: dunmail/web/models.py registers them when the shell imports it).
import mailer.content.models  # noqa: F401
import mailer.inbox_models  # noqa: F401
import mailer.ledger.bank_models  # noqa: F401
import mailer.ledger.intent_models  # noqa: F401
import mailer.ledger.models  # noqa: F401
import mailer.ledger.preference_models  # noqa: F401
import mailer.outbound.models  # noqa: F401
import mailer.query_models  # noqa: F401
from mailer.errors import ConfigError

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine for ``url``, tuned per backend.

    SQLite gets WAL (readers never block the writer), ``synchronous=NORMAL`` (durable at each
    checkpoint, and a crash cannot corrupt) and a busy timeout so two processes queue rather than
    fail. PostgreSQL URLs are pointed at psycopg 3.
    """
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        engine = sa.create_engine(url, **kwargs)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise ConfigError(f"[database] url is not usable: {exc}") from exc
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            _create_private(Path(database))
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
    return engine


def _create_private(path: Path) -> None:
    """Create the SQLite file readable by its owner only (0600) before SQLite opens it.

    It holds customers' addresses, password hashes and session hashes; SQLite would create it
    0644 (less the umask), readable by every local account. SQLite gives the ``-wal`` and
    ``-shm`` files it makes beside it the database file's own mode, so they are 0600 too. An
    existing file keeps the mode its owner gave it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(descriptor)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not pysqlite, decide when transactions begin (pysqlite's own
    # handling defers BEGIN and breaks the claim's read-then-write atomicity).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin_immediate(connection: sa.Connection) -> None:
    # BEGIN IMMEDIATE takes the write lock up front: two workers claiming at once serialise
    # here instead of both reading the same due rows (SQLite has no SKIP LOCKED).
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_schema(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (creates it on an empty database)."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


def create_all(engine: Engine) -> None:
    """Create tables straight from the models; for throwaway databases in benchmarks."""
    SQLModel.metadata.create_all(engine)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
