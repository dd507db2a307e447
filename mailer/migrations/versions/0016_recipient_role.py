"""each outbox recipient's role: the customer (to) or the AR team's cc / bcc copy

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 15:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0016'
down_revision: Union[str, Sequence[str], None] = '0015'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # Every row queued before this revision was a customer's address: 'to'.
    with op.batch_alter_table('messagerecipient', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                'role',
                sa.Enum('to', 'cc', 'bcc', name='recipientrole', native_enum=False, length=20),
                nullable=False,
                server_default='to',
            )
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('messagerecipient', schema=None) as batch_op:
        batch_op.drop_column('role')
