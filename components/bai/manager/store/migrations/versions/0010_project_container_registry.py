"""project container registry

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 17:10:00.000000

The original's ``groups.container_registry``: a project's own registry (``{"registry": host,
"project": name}``), whose images the project's sessions may use besides the registries its
domain allows.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('groups', sa.Column('container_registry', JSONB))


def downgrade() -> None:
    op.drop_column('groups', 'container_registry')
