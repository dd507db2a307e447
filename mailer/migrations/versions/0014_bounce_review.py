"""a delivery event keeps the evidence of its suppression decision and an open review

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-10 10:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401  (AutoString columns)


# revision identifiers, used by Alembic.
revision: str = '0014'
down_revision: Union[str, Sequence[str], None] = '0013'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # NULL on rows recorded before this revision: they were decided on the classifier's
    # hard verdict alone, and no review is open for them.
    with op.batch_alter_table('deliveryevent', schema=None) as batch_op:
        batch_op.add_column(sa.Column('review', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True))
        batch_op.add_column(sa.Column('evidence', sa.JSON(none_as_null=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_deliveryevent_review'), ['review'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('deliveryevent', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deliveryevent_review'))
        batch_op.drop_column('evidence')
        batch_op.drop_column('review')
