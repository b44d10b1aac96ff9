"""auth columns: user password bookkeeping and per-keypair SSH keys

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 10:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('users', sa.Column('status_info', sa.Unicode(), nullable=True))
    op.add_column('users', sa.Column('need_password_change', sa.Boolean(), nullable=True))
    op.add_column('users', sa.Column('password_changed_at', sa.DateTime(timezone=True),
                                     server_default=sa.text('now()'), nullable=True))
    op.add_column('keypairs', sa.Column('ssh_public_key', sa.String(length=750), nullable=True))
    op.add_column('keypairs', sa.Column('ssh_private_key', sa.String(length=2000), nullable=True))


def downgrade() -> None:
    op.drop_column('keypairs', 'ssh_private_key')
    op.drop_column('keypairs', 'ssh_public_key')
    op.drop_column('users', 'password_changed_at')
    op.drop_column('users', 'need_password_change')
    op.drop_column('users', 'status_info')
