"""customer queries on invoices: the query, its history and its attached files

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04 17:20:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401  (AutoString columns)

import mailer.columns


# revision identifiers, used by Alembic.
revision: str = '0021'
down_revision: Union[str, Sequence[str], None] = '0020'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    text = sqlmodel.sql.sqltypes.AutoString
    op.create_table('invoice_query',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('invoice_id', sa.Integer(), nullable=False),
    sa.Column('thread_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Enum('wrong_amount', 'not_received', 'already_paid', 'other', name='queryreason', native_enum=False, length=20), nullable=False),
    sa.Column('status', sa.Enum('open', 'resolved', name='querystatus', native_enum=False, length=20), nullable=False),
    sa.Column('hold_id', sa.Integer(), nullable=True),
    sa.Column('created_at', mailer.columns.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', mailer.columns.UTCDateTime(timezone=True), nullable=True),
    sa.Column('resolved_by', text(length=200), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], ),
    sa.ForeignKeyConstraint(['hold_id'], ['hold.id'], ),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoice.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.ForeignKeyConstraint(['thread_id'], ['thread.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('invoice_query', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_invoice_query_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_invoice_query_invoice_id'), ['invoice_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_invoice_query_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_invoice_query_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_invoice_query_thread_id'), ['thread_id'], unique=False)

    op.create_table('query_entry',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('query_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('message', 'answer', 'resolved', name='entrykind', native_enum=False, length=20), nullable=False),
    sa.Column('reason', text(length=20), nullable=True),
    sa.Column('author', text(length=200), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('link_hash', text(length=64), nullable=True),
    sa.Column('message_id', sa.Integer(), nullable=True),
    sa.Column('created_at', mailer.columns.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['message.id'], ),
    sa.ForeignKeyConstraint(['query_id'], ['invoice_query.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('query_entry', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_query_entry_query_id'), ['query_id'], unique=False)

    op.create_table('query_attachment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('entry_id', sa.Integer(), nullable=False),
    sa.Column('filename', text(length=120), nullable=False),
    sa.Column('content_type', text(length=40), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('sha256', text(length=64), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['entry_id'], ['query_entry.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('query_attachment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_query_attachment_entry_id'), ['entry_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_query_attachment_tenant_id'), ['tenant_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('query_attachment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_query_attachment_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_query_attachment_entry_id'))

    op.drop_table('query_attachment')
    with op.batch_alter_table('query_entry', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_query_entry_query_id'))

    op.drop_table('query_entry')
    with op.batch_alter_table('invoice_query', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_invoice_query_thread_id'))
        batch_op.drop_index(batch_op.f('ix_invoice_query_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_invoice_query_status'))
        batch_op.drop_index(batch_op.f('ix_invoice_query_invoice_id'))
        batch_op.drop_index(batch_op.f('ix_invoice_query_customer_id'))

    op.drop_table('invoice_query')
