"""study proposal errors: studies.last_proposal_error, last_proposal_error_at, proposal_failures

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 12:00:00.000000

A strategy that raises while proposing is replaced by a random proposal for that round;
these columns keep the failure visible on the study (API and dashboard) in every server
process. Existing studies start with no error and a count of 0 (server default, so no
backfill).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_proposal_error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('last_proposal_error_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('proposal_failures', sa.Integer(), nullable=False,
                                      server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_column('proposal_failures')
        batch_op.drop_column('last_proposal_error_at')
        batch_op.drop_column('last_proposal_error')
