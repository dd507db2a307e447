"""a customer's choice of invoices to pay, handed off to the payment provider

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04 15:40:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401  (AutoString columns)

import mailer.columns


# revision identifiers, used by Alembic.
revision: str = '0020'
down_revision: Union[str, Sequence[str], None] = '0019'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    text = sqlmodel.sql.sqltypes.AutoString
    op.create_table('payment_intent',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('nonce', text(length=64), nullable=False),
    sa.Column('provider', text(length=20), nullable=False),
    sa.Column('currency', text(length=3), nullable=False),
    sa.Column('total_minor', sa.BigInteger(), nullable=False),
    sa.Column('allocations', sa.JSON(), nullable=False),
    sa.Column('provider_ref', text(length=200), nullable=True),
    sa.Column('created_at', mailer.columns.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', mailer.columns.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('nonce')
    )
    with op.batch_alter_table('payment_intent', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_payment_intent_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_payment_intent_tenant_id'), ['tenant_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('payment_intent', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_payment_intent_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_payment_intent_customer_id'))
    op.drop_table('payment_intent')
