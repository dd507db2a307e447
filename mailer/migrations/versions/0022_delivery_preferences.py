"""a customer's delivery preferences: chosen language, PDF as a link, contact requests, changes

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-04 17:20:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401  (AutoString columns)

import mailer.columns


# revision identifiers, used by Alembic.
revision: str = '0022'
down_revision: Union[str, Sequence[str], None] = '0021'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_STATUS = ('pending', 'confirmed', 'withdrawn')
_KINDS = (
    'contact_requested', 'contact_added', 'contact_changed', 'contact_removed',
    'pdf_delivery', 'language',
)


def upgrade() -> None:
    """Upgrade schema."""
    text = sqlmodel.sql.sqltypes.AutoString
    at = mailer.columns.UTCDateTime(timezone=True)
    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.add_column(sa.Column('chosen_locale', text(length=35), nullable=True))
        # A string default, not sa.false(): an expression makes Alembic rebuild the table on
        # SQLite, and dropping the old customer table then breaks its foreign keys. '0' reads
        # as false on both backends.
        batch_op.add_column(
            sa.Column('pdf_link_only', sa.Boolean(), nullable=False, server_default='0')
        )
    op.create_table('contact_request',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('email', text(length=320), nullable=False),
    sa.Column('name', text(length=300), nullable=True),
    sa.Column('replaces', text(length=320), nullable=True),
    sa.Column('status', sa.Enum(*_STATUS, name='requeststatus', native_enum=False, length=20), nullable=False),
    sa.Column('requested_by', text(length=200), nullable=False),
    sa.Column('requested_at', at, nullable=False),
    sa.Column('expires_at', at, nullable=False),
    sa.Column('confirmed_at', at, nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('contact_request', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contact_request_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_contact_request_tenant_id'), ['tenant_id'], unique=False)
    op.create_table('preference_change',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum(*_KINDS, name='changekind', native_enum=False, length=20), nullable=False),
    sa.Column('old', text(length=320), nullable=True),
    sa.Column('new', text(length=320), nullable=True),
    sa.Column('by', text(length=200), nullable=False),
    sa.Column('at', at, nullable=False),
    sa.Column('erp_listed', sa.JSON(), nullable=True),
    sa.Column('standing', sa.Boolean(), nullable=False),
    sa.Column('ended_at', at, nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customer.id'], ),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenant.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('preference_change', schema=None) as batch_op:
        batch_op.create_index('ix_preference_change_customer_at', ['customer_id', 'at'], unique=False)
        batch_op.create_index(batch_op.f('ix_preference_change_tenant_id'), ['tenant_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('preference_change', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_preference_change_tenant_id'))
        batch_op.drop_index('ix_preference_change_customer_at')
    op.drop_table('preference_change')
    with op.batch_alter_table('contact_request', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_contact_request_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_contact_request_customer_id'))
    op.drop_table('contact_request')
    with op.batch_alter_table('customer', schema=None) as batch_op:
        batch_op.drop_column('pdf_link_only')
        batch_op.drop_column('chosen_locale')
