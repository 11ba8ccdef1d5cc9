"""jobs: when a person asked to cancel a job whose submission may already be at the site

Such a job keeps its reservation until the forwarder has looked it up at the site: found, it is cancelled
there and settled as usual; provably absent, it is cancelled here and voided.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('cancel_requested_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('jobs', 'cancel_requested_at')
