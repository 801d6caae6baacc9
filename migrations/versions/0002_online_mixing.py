"""online mixing: measurements.proportions, trials.online_result

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:00:00.000000

Both columns are nullable JSON, so existing rows need no backfill: a trial run without
online mixing simply has neither.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.add_column(sa.Column('online_result', sa.JSON(), nullable=True))
    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.add_column(sa.Column('proportions', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.drop_column('proportions')
    with op.batch_alter_table('trials', schema=None) as batch_op:
        batch_op.drop_column('online_result')
