"""account columns: client-IP allow lists, sudo sessions, TOTP flag, container ids, modified_at

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 16:40:00.000000

What the GraphQL account mutations write (the original's 24.03 columns): users get
``allowed_client_ip`` (normalised addresses / CIDRs; NULL or empty = any address),
``sudo_session_enabled``, ``totp_activated`` / ``totp_activated_at``, ``container_uid`` /
``container_main_gid`` / ``container_gids`` and ``modified_at``; keypairs get ``modified_at``;
domains and projects get ``modified_at``, ``integration_id`` and ``allowed_vfolder_hosts``.
Existing rows get the defaults (``modified_at`` = their ``created_at``).
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def _modified_at(table: str) -> None:
    op.add_column(table, sa.Column('modified_at', sa.DateTime(timezone=True),
                                   server_default=sa.text('now()'), nullable=False))
    op.execute(f'UPDATE {table} SET modified_at = created_at')


def upgrade() -> None:
    op.add_column('users', sa.Column('allowed_client_ip', ARRAY(sa.String(64)), nullable=True))
    op.add_column('users', sa.Column('sudo_session_enabled', sa.Boolean(), server_default=sa.false(),
                                     nullable=False))
    op.add_column('users', sa.Column('totp_activated', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column('users', sa.Column('totp_activated_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('users', sa.Column('container_uid', sa.Integer(), nullable=True))
    op.add_column('users', sa.Column('container_main_gid', sa.Integer(), nullable=True))
    op.add_column('users', sa.Column('container_gids', ARRAY(sa.Integer()), nullable=True))
    for table in ('users', 'keypairs', 'domains', 'groups'):
        _modified_at(table)
    for table in ('domains', 'groups'):
        op.add_column(table, sa.Column('integration_id', sa.String(512), nullable=True))
        op.add_column(table, sa.Column('allowed_vfolder_hosts', JSONB, server_default='{}', nullable=False))


def downgrade() -> None:
    for table in ('domains', 'groups'):
        op.drop_column(table, 'allowed_vfolder_hosts')
        op.drop_column(table, 'integration_id')
    for table in ('users', 'keypairs', 'domains', 'groups'):
        op.drop_column(table, 'modified_at')
    for column in ('container_gids', 'container_main_gid', 'container_uid', 'totp_activated_at',
                   'totp_activated', 'sudo_session_enabled', 'allowed_client_ip'):
        op.drop_column('users', column)
