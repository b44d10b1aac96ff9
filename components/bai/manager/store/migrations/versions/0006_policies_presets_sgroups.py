"""resource policies, resource group associations and the columns their mutations write

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-01 16:45:00.000000

As the original (24.03):

* ``keypair_resource_policies`` gains ``max_concurrent_sftp_sessions`` (1),
  ``allowed_vfolder_hosts`` ({}), ``max_pending_session_count`` and
  ``max_pending_session_resource_slots`` (both nullable: no limit).
* ``user_resource_policies`` and ``project_resource_policies`` are new, each with a ``default``
  row; ``users.resource_policy`` and the new ``groups.resource_policy`` refer to them. Users whose
  policy name has no row yet get a row of that name with the defaults, so the foreign key holds
  on databases that already have users.
* ``scaling_groups`` gains ``wsproxy_api_token`` and ``driver_opts``.
* ``sgroups_for_groups`` (project -> resource group) and ``sgroups_for_keypairs`` (access key ->
  resource group) are new; rows go with their resource group, project or keypair.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = '0006'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('keypair_resource_policies', sa.Column(
        'max_concurrent_sftp_sessions', sa.Integer, nullable=False, server_default='1'))
    op.add_column('keypair_resource_policies', sa.Column(
        'allowed_vfolder_hosts', JSONB, nullable=False, server_default='{}'))
    op.add_column('keypair_resource_policies', sa.Column('max_pending_session_count', sa.Integer))
    op.add_column('keypair_resource_policies', sa.Column('max_pending_session_resource_slots', JSONB))

    op.create_table(
        'user_resource_policies',
        sa.Column('name', sa.String(256), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column('max_vfolder_count', sa.Integer, nullable=False, server_default='0'),
        sa.Column('max_quota_scope_size', sa.BigInteger, nullable=False, server_default='-1'),
        sa.Column('max_session_count_per_model_session', sa.Integer, nullable=False, server_default='10'),
        sa.Column('max_customized_image_count', sa.Integer, nullable=False, server_default='3'),
        sa.PrimaryKeyConstraint('name', name='pk_user_resource_policies'),
    )
    op.execute("INSERT INTO user_resource_policies (name) VALUES ('default')")
    op.execute("INSERT INTO user_resource_policies (name) SELECT DISTINCT resource_policy FROM users "
               "ON CONFLICT (name) DO NOTHING")
    op.create_foreign_key('fk_users_resource_policy_user_resource_policies', 'users', 'user_resource_policies',
                          ['resource_policy'], ['name'], onupdate='CASCADE')

    op.create_table(
        'project_resource_policies',
        sa.Column('name', sa.String(256), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column('max_vfolder_count', sa.Integer, nullable=False, server_default='0'),
        sa.Column('max_quota_scope_size', sa.BigInteger, nullable=False, server_default='-1'),
        sa.PrimaryKeyConstraint('name', name='pk_project_resource_policies'),
    )
    op.execute("INSERT INTO project_resource_policies (name) VALUES ('default')")
    op.add_column('groups', sa.Column('resource_policy', sa.String(256), nullable=False, server_default='default'))
    op.create_foreign_key('fk_groups_resource_policy_project_resource_policies', 'groups',
                          'project_resource_policies', ['resource_policy'], ['name'], onupdate='CASCADE')

    op.add_column('scaling_groups', sa.Column('wsproxy_api_token', sa.String(128)))
    op.add_column('scaling_groups', sa.Column('driver_opts', JSONB, nullable=False, server_default='{}'))

    op.create_table(
        'sgroups_for_groups',
        sa.Column('scaling_group', sa.String(64), nullable=False),
        sa.Column('group', UUID(as_uuid=True), nullable=False),
        sa.ForeignKeyConstraint(['scaling_group'], ['scaling_groups.name'], onupdate='CASCADE', ondelete='CASCADE',
                                name='fk_sgroups_for_groups_scaling_group_scaling_groups'),
        sa.ForeignKeyConstraint(['group'], ['groups.id'], onupdate='CASCADE', ondelete='CASCADE',
                                name='fk_sgroups_for_groups_group_groups'),
        sa.PrimaryKeyConstraint('scaling_group', 'group', name='pk_sgroups_for_groups'),
    )
    op.create_index('ix_sgroups_for_groups_group', 'sgroups_for_groups', ['group'])
    op.create_table(
        'sgroups_for_keypairs',
        sa.Column('scaling_group', sa.String(64), nullable=False),
        sa.Column('access_key', sa.String(20), nullable=False),
        sa.ForeignKeyConstraint(['scaling_group'], ['scaling_groups.name'], onupdate='CASCADE', ondelete='CASCADE',
                                name='fk_sgroups_for_keypairs_scaling_group_scaling_groups'),
        sa.ForeignKeyConstraint(['access_key'], ['keypairs.access_key'], onupdate='CASCADE', ondelete='CASCADE',
                                name='fk_sgroups_for_keypairs_access_key_keypairs'),
        sa.PrimaryKeyConstraint('scaling_group', 'access_key', name='pk_sgroups_for_keypairs'),
    )
    op.create_index('ix_sgroups_for_keypairs_access_key', 'sgroups_for_keypairs', ['access_key'])


def downgrade() -> None:
    op.drop_table('sgroups_for_keypairs')
    op.drop_table('sgroups_for_groups')
    op.drop_column('scaling_groups', 'driver_opts')
    op.drop_column('scaling_groups', 'wsproxy_api_token')
    op.drop_constraint('fk_groups_resource_policy_project_resource_policies', 'groups', type_='foreignkey')
    op.drop_column('groups', 'resource_policy')
    op.drop_table('project_resource_policies')
    op.drop_constraint('fk_users_resource_policy_user_resource_policies', 'users', type_='foreignkey')
    op.drop_table('user_resource_policies')
    op.drop_column('keypair_resource_policies', 'max_pending_session_resource_slots')
    op.drop_column('keypair_resource_policies', 'max_pending_session_count')
    op.drop_column('keypair_resource_policies', 'allowed_vfolder_hosts')
    op.drop_column('keypair_resource_policies', 'max_concurrent_sftp_sessions')
