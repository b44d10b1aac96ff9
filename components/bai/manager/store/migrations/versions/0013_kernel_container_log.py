"""kernel container log

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01 18:00:00.000000

The original's ``kernels.container_log``: the last of a kernel's container log (the newest
lines, at most 1 MiB), which the agent reads right before it removes the container, so that
``GET /session/{ref}/logs`` still answers once the session has ended.
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('kernels', sa.Column('container_log', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('kernels', 'container_log')
