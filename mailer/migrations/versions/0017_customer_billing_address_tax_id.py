"""a customer's billing address and tax id, printed on its documents

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 16:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401  (AutoString columns)


# revision identifiers, used by Alembic.
revision: str = '0017'
down_revision: Union[str, Sequence[str], None] = '0016'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # NULL on customers imported before this revision: the ERP had not sent them yet.
    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.add_column(sa.Column('billing_address', sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column('tax_id', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=True)
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.drop_column('tax_id')
        batch_op.drop_column('billing_address')
