"""inbound mail keeps its SMTP envelope recipients: one stored copy per message

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0013'
down_revision: Union[str, Sequence[str], None] = '0012'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # NULL on rows stored before this revision: one copy per recipient, each with its own
    # Delivered-To header, which ingest still reads.
    with op.batch_alter_table('inboundmail', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recipients', sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('inboundmail', schema=None) as batch_op:
        batch_op.drop_column('recipients')
