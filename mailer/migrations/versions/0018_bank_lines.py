"""bank statement lines: matched to payments, or queued for a clerk (dunmail bank)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 15:30:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401  (AutoString columns)

import mailer.columns


# revision identifiers, used by Alembic.
revision: str = '0018'
down_revision: Union[str, Sequence[str], None] = '0017'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    text = sqlmodel.sql.sqltypes.AutoString
    op.create_table('bankline',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('account', text(length=70), nullable=False),
    sa.Column('entry_ref', text(length=140), nullable=False),
    sa.Column('booked_on', sa.Date(), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', text(length=3), nullable=False),
    sa.Column('direction', text(length=10), nullable=False),
    sa.Column('reversal', sa.Boolean(), nullable=False),
    sa.Column('reference', text(length=35), nullable=True),
    sa.Column('remittance', text(length=1000), nullable=False),
    sa.Column('debtor_name', text(length=140), nullable=True),
    sa.Column('debtor_iban', text(length=34), nullable=True),
    sa.Column('end_to_end_id', text(length=35), nullable=True),
    sa.Column('source', text(length=10), nullable=False),
    sa.Column(
        'status',
        sa.Enum('matched', 'unmatched', 'ignored', name='banklinestatus', native_enum=False,
                length=20),
        nullable=False,
    ),
    sa.Column('reason', text(length=300), nullable=False),
    sa.Column('confidence', text(length=10), nullable=True),
    sa.Column('customer_id', sa.Integer(), nullable=True),
    sa.Column('payment_id', sa.Integer(), nullable=True),
    sa.Column('credit_minor', sa.BigInteger(), nullable=False),
    sa.Column('imported_at', mailer.columns.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resolved_by', text(length=200), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], ),
    sa.ForeignKeyConstraint(['payment_id'], ['payment.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'account', 'entry_ref', 'booked_on', 'amount_minor',
                        'direction')
    )
    with op.batch_alter_table('bankline', schema=None) as batch_op:
        batch_op.create_index('ix_bankline_queue', ['tenant_id', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_bankline_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_bankline_debtor_iban'), ['debtor_iban'], unique=False)
        batch_op.create_index(batch_op.f('ix_bankline_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_bankline_payment_id'), ['payment_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('bankline')
