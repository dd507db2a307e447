"""contact corrections that survive imports

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 20:30:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401  (AutoString columns)

import mailer.columns  # noqa: F401  (UTCDateTime columns)


# revision identifiers, used by Alembic.
revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('contact', schema=None) as batch_op:
        batch_op.add_column(sa.Column('erp_email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True))
        batch_op.add_column(sa.Column('corrected_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
        batch_op.add_column(sa.Column('corrected_at', mailer.columns.UTCDateTime(timezone=True), nullable=True))



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('contact', schema=None) as batch_op:
        batch_op.drop_column('corrected_at')
        batch_op.drop_column('corrected_by')
        batch_op.drop_column('erp_email')

