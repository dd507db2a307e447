"""rate limits and back-offs shared by every delivery process: one GCRA row per key

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 12:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401  (AutoString columns)


# revision identifiers, used by Alembic.
revision: str = '0015'
down_revision: Union[str, Sequence[str], None] = '0014'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # Times are whole microseconds since the Unix epoch: the take is integer arithmetic in one
    # statement on both databases (mailer/outbound/throttle.py).
    op.create_table('throttle',
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=330), nullable=False),
    sa.Column('scope', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('tat', sa.BigInteger(), nullable=False),
    sa.Column('paused_until', sa.BigInteger(), nullable=True),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('throttle')
