"""images: size, accelerators and the agents that have them

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-01 16:50:00.000000

As the original (24.03), ``images`` gains ``size_bytes`` (0 until a registry scan or an agent
reports it) and ``accelerators`` (the ``ai.backend.accelerators`` label, comma list). Ours:
``installed_agents``, the ids of agents whose heartbeat lists the image (the original keeps that
set in Redis; a JSON array here costs no extra service), read together with the agents' status.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = '0007'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('images', sa.Column('size_bytes', sa.BigInteger(), server_default='0', nullable=False))
    op.add_column('images', sa.Column('accelerators', sa.String(128), nullable=True))
    op.add_column('images', sa.Column('installed_agents', JSONB(), server_default='[]', nullable=False))
    op.create_index('ix_images_registry', 'images', ['registry'])


def downgrade() -> None:
    op.drop_index('ix_images_registry', table_name='images')
    op.drop_column('images', 'installed_agents')
    op.drop_column('images', 'accelerators')
    op.drop_column('images', 'size_bytes')
