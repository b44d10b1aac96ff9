"""resource presets

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 16:00:00.000000

The original's ``resource_presets`` table: a named slot map (decimal strings) and an optional
shared-memory size in bytes.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'resource_presets',
        sa.Column('name', sa.String(256), primary_key=True),
        sa.Column('resource_slots', JSONB, nullable=False, server_default='{}'),
        sa.Column('shared_memory', sa.BigInteger),
        sa.PrimaryKeyConstraint('name', name='pk_resource_presets'),
    )


def downgrade() -> None:
    op.drop_table('resource_presets')
