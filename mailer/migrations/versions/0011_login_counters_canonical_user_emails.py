"""login counters (atomic check-and-count) and users stored under canonical sign-in names

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 10:00:00

"""
import logging
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401  (AutoString columns)

import mailer.columns  # noqa: F401  (UTCDateTime columns)
from mailer.address import canonical_login


# revision identifiers, used by Alembic.
revision: str = '0011'
down_revision: Union[str, Sequence[str], None] = '0010'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

log = logging.getLogger(__name__)


def upgrade() -> None:
    """Upgrade schema."""
    # One row per throttle key replaces one row per failure: one upsert checks and counts.
    # The failures of the last window are dropped with the old table (15 minutes at most).
    op.create_table('logincounter',
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
    sa.Column('window_start', mailer.columns.UTCDateTime(timezone=True), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('logincounter', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_logincounter_window_start'), ['window_start'], unique=False
        )
    with op.batch_alter_table('loginfailure', schema=None) as batch_op:
        batch_op.drop_index('ix_loginfailure_email_at')
        batch_op.drop_index(batch_op.f('ix_loginfailure_at'))
    op.drop_table('loginfailure')

    # Users are looked up by canonical_login(typed name): store theirs in that spelling. A row
    # whose canonical spelling another row already holds keeps its own (it could only have
    # been created by hand); it is reported, not merged.
    connection = op.get_bind()
    user = sa.table('user', sa.column('id', sa.Integer), sa.column('email', sa.String))
    rows = connection.execute(sa.select(user.c.id, user.c.email)).all()
    taken = {email for _, email in rows}
    for user_id, email in rows:
        canonical = canonical_login(email)
        if canonical == email:
            continue
        if canonical in taken:
            log.warning('user %s keeps its email: %s is another user', user_id, canonical)
            continue
        connection.execute(user.update().where(user.c.id == user_id).values(email=canonical))
        taken.discard(email)
        taken.add(canonical)


def downgrade() -> None:
    """Downgrade schema."""
    op.create_table('loginfailure',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('client', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('at', mailer.columns.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('loginfailure', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_loginfailure_at'), ['at'], unique=False)
        batch_op.create_index('ix_loginfailure_email_at', ['email', 'at'], unique=False)
    with op.batch_alter_table('logincounter', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_logincounter_window_start'))
    op.drop_table('logincounter')
