"""a customer's reply keeps what it means and the action proposed to the clerk

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 16:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401  (AutoString columns)

import mailer.columns


# revision identifiers, used by Alembic.
revision: str = '0019'
down_revision: Union[str, Sequence[str], None] = '0018'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    text = sqlmodel.sql.sqltypes.AutoString
    op.create_table('replyproposal',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('thread_id', sa.Integer(), nullable=False),
    sa.Column('inbound_id', sa.Integer(), nullable=False),
    sa.Column('intent', text(length=20), nullable=False),
    sa.Column('language', text(length=10), nullable=True),
    sa.Column('promised_on', sa.Date(), nullable=True),
    sa.Column('new_address', text(length=320), nullable=True),
    sa.Column('evidence', text(length=300), nullable=False),
    sa.Column('hold_until', mailer.columns.UTCDateTime(timezone=True), nullable=True),
    sa.Column('status', sa.Enum('proposed', 'accepted', 'auto', 'none', name='proposalstatus', native_enum=False, length=20), nullable=False),
    sa.Column('hold_id', sa.Integer(), nullable=True),
    sa.Column('decided_by', text(length=200), nullable=True),
    sa.Column('decided_at', mailer.columns.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', mailer.columns.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['hold_id'], ['hold.id'], ),
    sa.ForeignKeyConstraint(['inbound_id'], ['inboundmail.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.ForeignKeyConstraint(['thread_id'], ['thread.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('inbound_id')
    )
    with op.batch_alter_table('replyproposal', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_replyproposal_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_replyproposal_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_replyproposal_thread_id'), ['thread_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('replyproposal', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_replyproposal_thread_id'))
        batch_op.drop_index(batch_op.f('ix_replyproposal_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_replyproposal_status'))
    op.drop_table('replyproposal')
