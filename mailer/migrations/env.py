"""Alembic environment: runs on the connection ``mailer.db.create_schema`` hands it.

``target_metadata`` holds mailer's tables; the web accounts' tables (dunmail/web/models.py) join
it only where the shell is imported, so autogenerate from the bare CLI would propose dropping
them. tests/test_db.py compares the migrated schema with every table.
"""

from alembic import context
from sqlmodel import SQLModel

import mailer.db  # noqa: F401  (registers mailer's tables on SQLModel.metadata)

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # the alembic CLI, for autogenerate during development
    from sqlalchemy import create_engine

    connection = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://").connect()

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
