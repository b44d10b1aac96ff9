"""session vfolder mounts

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 17:20:00.000000

The original's ``sessions.vfolder_mounts``: the virtual folders a session mounts, resolved at
creation (``[{"name", "vfid", "vfsubpath", "host_path", "kernel_path", "mount_perm",
"usage_mode"}]``), read again when the session's kernels are created and shown in its info.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('sessions', sa.Column('vfolder_mounts', JSONB, nullable=False, server_default='[]'))


def downgrade() -> None:
    op.drop_column('sessions', 'vfolder_mounts')
