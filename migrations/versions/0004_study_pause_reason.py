"""study pause reason: studies.pause_reason, paused_at

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 17:00:00.000000

A study whose trials keep failing before they report any loss (a misconfigured worker) is
paused by the service; these columns say why and since when, in every server process.
Existing studies start with neither.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pause_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('paused_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_column('paused_at')
        batch_op.drop_column('pause_reason')
