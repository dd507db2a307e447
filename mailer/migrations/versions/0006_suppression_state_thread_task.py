"""suppression state (kind, expiry, unblock) and thread task

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 18:10:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401  (AutoString columns)

import mailer.columns  # noqa: F401  (UTCDateTime columns)


# revision identifiers, used by Alembic.
revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column('suppression', sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False, server_default='hard'))
    op.add_column('suppression', sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False, server_default='bounce'))
    op.add_column('suppression', sa.Column('expires_at', mailer.columns.UTCDateTime(), nullable=True))
    op.add_column('suppression', sa.Column('lifted_at', mailer.columns.UTCDateTime(), nullable=True))
    op.add_column('suppression', sa.Column('lifted_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
    op.add_column('suppression', sa.Column('lift_reason', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True))
    op.add_column('thread', sa.Column('task', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=True))
    # Suppressions compare addresses in lower case from now on (mailer/outbound/suppression.py).
    op.execute("UPDATE suppression SET address = lower(address)")
    op.execute("UPDATE suppression SET kind = 'complaint' WHERE reason = 'complaint'")


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column('thread', 'task')
    for column in ('lift_reason', 'lifted_by', 'lifted_at', 'expires_at', 'created_by', 'kind'):
        op.drop_column('suppression', column)
