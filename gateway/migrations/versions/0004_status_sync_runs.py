"""status sync runs: one replica asks a site for its jobs' states each interval, whatever the replica count

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('status_sync_runs',
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('leased_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_run_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('site', name=op.f('pk_status_sync_runs'))
    )


def downgrade() -> None:
    op.drop_table('status_sync_runs')
