"""virtual folders

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 17:05:00.000000

The original's vfolders, vfolder_permissions and vfolder_invitations tables (24.03 columns; see
store/tables.py). A live folder's name is unique per owner (user or project) among folders not in
the dead delete-* statuses.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'vfolders',
        sa.Column('id', UUID(as_uuid=True), nullable=False),
        sa.Column('host', sa.String(128), nullable=False),
        sa.Column('quota_scope_id', sa.String(64), nullable=False),
        sa.Column('name', sa.String(128), nullable=False),
        sa.Column('usage_mode', sa.String(16), server_default='general', nullable=False),
        sa.Column('permission', sa.String(2), server_default='wd', nullable=False),
        sa.Column('max_files', sa.Integer, server_default='0', nullable=False),
        sa.Column('max_size', sa.Integer, server_default='0', nullable=False),
        sa.Column('num_files', sa.Integer, server_default='0', nullable=False),
        sa.Column('cur_size', sa.BigInteger, server_default='0', nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column('last_used', sa.DateTime(timezone=True)),
        sa.Column('creator', sa.String(128)),
        sa.Column('unmanaged_path', sa.String(512)),
        sa.Column('ownership_type', sa.String(8), server_default='user', nullable=False),
        sa.Column('user', UUID(as_uuid=True)),
        sa.Column('group', UUID(as_uuid=True)),
        sa.Column('cloneable', sa.Boolean, server_default=sa.false(), nullable=False),
        sa.Column('status', sa.String(16), server_default='ready', nullable=False),
        sa.Column('status_changed', sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column('status_history', JSONB, server_default='{}', nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_vfolders'),
        sa.ForeignKeyConstraint(['user'], ['users.uuid'], name='fk_vfolders_user_users', ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['group'], ['groups.id'], name='fk_vfolders_group_groups', ondelete='CASCADE'),
        sa.CheckConstraint('("user" IS NULL) <> ("group" IS NULL)', name='ck_vfolders_ownership_one_of_user_group'),
    )
    op.create_index('ix_vfolders_host', 'vfolders', ['host'])
    op.create_index('ix_vfolders_name', 'vfolders', ['name'])
    op.create_index('ix_vfolders_user', 'vfolders', ['user'])
    op.create_index('ix_vfolders_group', 'vfolders', ['group'])
    op.create_index('ix_vfolders_status', 'vfolders', ['status'])
    # one live folder of a name per owner (trash and deleted rows do not count)
    op.execute("CREATE UNIQUE INDEX uq_vfolders_live_name ON vfolders "
               "(name, COALESCE(\"user\", \"group\")) WHERE status NOT LIKE 'delete-%'")
    op.create_table(
        'vfolder_permissions',
        sa.Column('vfolder', UUID(as_uuid=True), nullable=False),
        sa.Column('user', UUID(as_uuid=True), nullable=False),
        sa.Column('permission', sa.String(2), server_default='rw', nullable=False),
        sa.PrimaryKeyConstraint('vfolder', 'user', name='pk_vfolder_permissions'),
        sa.ForeignKeyConstraint(['vfolder'], ['vfolders.id'], name='fk_vfolder_permissions_vfolder_vfolders',
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user'], ['users.uuid'], name='fk_vfolder_permissions_user_users',
                                ondelete='CASCADE'),
    )
    op.create_table(
        'vfolder_invitations',
        sa.Column('id', UUID(as_uuid=True), nullable=False),
        sa.Column('permission', sa.String(2), server_default='rw', nullable=False),
        sa.Column('inviter', sa.String(256), nullable=False),
        sa.Column('invitee', sa.String(256), nullable=False),
        sa.Column('state', sa.String(10), server_default='pending', nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column('modified_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column('vfolder', UUID(as_uuid=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_vfolder_invitations'),
        sa.ForeignKeyConstraint(['vfolder'], ['vfolders.id'], name='fk_vfolder_invitations_vfolder_vfolders',
                                ondelete='CASCADE'),
    )
    op.create_index('ix_vfolder_invitations_vfolder', 'vfolder_invitations', ['vfolder'])


def downgrade() -> None:
    op.drop_table('vfolder_invitations')
    op.drop_table('vfolder_permissions')
    op.execute("DROP INDEX IF EXISTS uq_vfolders_live_name")
    op.drop_table('vfolders')
