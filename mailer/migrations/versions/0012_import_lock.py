"""one import per tenant at a time: the import lock's leased row

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 23:55:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401  (AutoString columns)

import mailer.columns  # noqa: F401  (UTCDateTime columns)


# revision identifiers, used by Alembic.
revision: str = '0012'
down_revision: Union[str, Sequence[str], None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('import_lock',
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('token', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('holder', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('started_at', mailer.columns.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', mailer.columns.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('tenant_id')
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('import_lock')
