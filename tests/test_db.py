"""The schema: Alembic's migrations produce exactly the models, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select, text

import dunmail.web.models  # noqa: F401  (the web accounts' tables join the metadata compared)
from mailer.db import MIGRATIONS, create_schema
from mailer.ledger.models import Tenant


def test_migrations_match_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []


def _head() -> str:
    """The newest revision file's id: one head, numbered after the files (0001, 0002, ...)."""
    script = ScriptDirectory.from_config(_alembic_config())
    [head] = script.get_heads()
    newest = max(p.name[:4] for p in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))
    assert head == newest, "the revision chain's head is not the newest file"
    return head


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def test_migrating_twice_is_a_no_op(engine: Engine) -> None:
    create_schema(engine)
    with engine.connect() as conn:
        assert conn.execute(text("select version_num from alembic_version")).scalar() == _head()


def test_times_come_back_aware_utc_and_states_as_words(engine: Engine) -> None:
    cet = timezone(timedelta(hours=1))
    with Session(engine) as session:
        session.add(
            Tenant(
                slug="t",
                name="T",
                email="t@t.example",
                created_at=datetime(2026, 3, 2, 10, 0, tzinfo=cet),
            )
        )
        session.commit()
    with Session(engine) as session:
        tenant = session.exec(select(Tenant)).one()
        assert tenant.created_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
        assert tenant.created_at.tzinfo is not None
        stored = session.execute(text("select delivery from tenant")).scalar()
    assert stored == "relay"
