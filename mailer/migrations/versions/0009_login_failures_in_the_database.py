"""login failures in the database

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 20:50:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401  (AutoString columns)

import mailer.columns  # noqa: F401  (UTCDateTime columns)


# revision identifiers, used by Alembic.
revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('loginfailure',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('client', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('at', mailer.columns.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('loginfailure', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_loginfailure_at'), ['at'], unique=False)
        batch_op.create_index('ix_loginfailure_email_at', ['email', 'at'], unique=False)



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('loginfailure', schema=None) as batch_op:
        batch_op.drop_index('ix_loginfailure_email_at')
        batch_op.drop_index(batch_op.f('ix_loginfailure_at'))

    op.drop_table('loginfailure')
