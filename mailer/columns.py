"""Column types every room's tables share: aware-UTC timestamps, StrEnum states stored by
value, JSON.

Migrations name ``mailer.columns.UTCDateTime`` by its path, so it stays in this module.
"""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import JSON, Column, Field


class UTCDateTime(TypeDecorator[datetime]):
    """An aware-UTC timestamp on every backend.

    PostgreSQL keeps the offset; SQLite stores text and hands back naive values, so this type
    normalises both directions and the rest of the code only ever sees aware UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# The timestamp and JSON helpers give SQLModel a type, not a ready ``Column``: a Column joins
# one table only, and these also declare the columns a non-table base shares with each of its
# tables (mailer/ledger/models.py's ``PricedDocument``).


def at_column(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


def state_column(
    enum: type[StrEnum], default: StrEnum | None = None, *, index: bool = False
) -> Any:
    """A StrEnum column stored by its lowercase *value* ("queued"), not SQLAlchemy's default
    of the member *name* ("QUEUED"), so SQL, reports and other tools read the same words."""
    column_type = sa.Enum(
        enum,
        values_callable=lambda members: [m.value for m in members],
        native_enum=False,
        length=20,
        validate_strings=True,
    )
    column: Column[Any] = Column(column_type, nullable=False, index=index)
    if default is None:
        return Field(sa_column=column)
    return Field(default=default, sa_column=column)


def json_column(default: Any) -> Any:
    # The model fills in ``default``; the column keeps no default of its own, as before.
    return Field(
        default_factory=default, sa_type=JSON, nullable=False, sa_column_kwargs={"default": None}
    )
