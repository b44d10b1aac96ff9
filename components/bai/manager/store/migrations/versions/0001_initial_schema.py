"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 18:48:59.410485
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('domains',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('description', sa.String(length=512), nullable=True),
    sa.Column('is_active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('total_resource_slots', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('allowed_docker_registries', postgresql.JSONB(astext_type=sa.Text()), server_default='[]', nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_domains'))
    )
    op.create_table('image_aliases',
    sa.Column('alias', sa.String(length=256), nullable=False),
    sa.Column('image', sa.String(length=512), nullable=False),
    sa.PrimaryKeyConstraint('alias', name=op.f('pk_image_aliases'))
    )
    op.create_table('images',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('name', sa.String(length=512), nullable=False),
    sa.Column('architecture', sa.String(length=32), server_default='x86_64', nullable=False),
    sa.Column('registry', sa.String(length=256), nullable=False),
    sa.Column('tag', sa.String(length=128), nullable=True),
    sa.Column('config_digest', sa.String(length=128), nullable=True),
    sa.Column('labels', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('resources', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('is_local', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_images')),
    sa.UniqueConstraint('name', 'architecture', name='uq_images_name_architecture')
    )
    op.create_index(op.f('ix_images_name'), 'images', ['name'], unique=False)
    op.create_table('keypair_resource_policies',
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('default_for_unspecified', sa.String(length=32), server_default='UNLIMITED', nullable=False),
    sa.Column('total_resource_slots', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('max_session_lifetime', sa.Integer(), server_default='0', nullable=False),
    sa.Column('max_concurrent_sessions', sa.Integer(), server_default='30', nullable=False),
    sa.Column('max_containers_per_session', sa.Integer(), server_default='1', nullable=False),
    sa.Column('idle_timeout', sa.BigInteger(), server_default='3600', nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_keypair_resource_policies'))
    )
    op.create_table('scaling_groups',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('description', sa.String(length=512), nullable=True),
    sa.Column('is_active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('is_public', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('driver', sa.String(length=64), server_default='static', nullable=False),
    sa.Column('scheduler', sa.String(length=64), server_default='fifo', nullable=False),
    sa.Column('scheduler_opts', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('wsproxy_addr', sa.String(length=1024), nullable=True),
    sa.Column('use_host_network', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_scaling_groups'))
    )
    op.create_table('agents',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('status_changed', sa.DateTime(timezone=True), nullable=True),
    sa.Column('region', sa.String(length=64), nullable=True),
    sa.Column('scaling_group', sa.String(length=64), nullable=False),
    sa.Column('schedulable', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('available_slots', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('occupied_slots', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('addr', sa.String(length=128), nullable=False),
    sa.Column('architecture', sa.String(length=32), server_default='x86_64', nullable=False),
    sa.Column('version', sa.String(length=64), nullable=True),
    sa.Column('compute_plugins', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('first_contact', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=True),
    sa.Column('last_seen', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=True),
    sa.Column('lost_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['scaling_group'], ['scaling_groups.name'], name=op.f('fk_agents_scaling_group_scaling_groups')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agents'))
    )
    op.create_index(op.f('ix_agents_last_seen'), 'agents', ['last_seen'], unique=False)
    op.create_index(op.f('ix_agents_scaling_group'), 'agents', ['scaling_group'], unique=False)
    op.create_index(op.f('ix_agents_status'), 'agents', ['status'], unique=False)
    op.create_table('groups',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('description', sa.String(length=512), nullable=True),
    sa.Column('is_active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('domain_name', sa.String(length=64), nullable=False),
    sa.Column('total_resource_slots', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['domain_name'], ['domains.name'], name=op.f('fk_groups_domain_name_domains')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_groups')),
    sa.UniqueConstraint('name', 'domain_name', name='uq_groups_name_domain_name')
    )
    op.create_index(op.f('ix_groups_domain_name'), 'groups', ['domain_name'], unique=False)
    op.create_table('sgroups_for_domains',
    sa.Column('scaling_group', sa.String(length=64), nullable=False),
    sa.Column('domain', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['domain'], ['domains.name'], name=op.f('fk_sgroups_for_domains_domain_domains'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['scaling_group'], ['scaling_groups.name'], name=op.f('fk_sgroups_for_domains_scaling_group_scaling_groups'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('scaling_group', 'domain', name='pk_sgroups_for_domains')
    )
    op.create_table('users',
    sa.Column('uuid', sa.UUID(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=True),
    sa.Column('email', sa.String(length=64), nullable=False),
    sa.Column('password', sa.String(length=256), nullable=True),
    sa.Column('full_name', sa.String(length=64), nullable=True),
    sa.Column('description', sa.String(length=500), nullable=True),
    sa.Column('status', sa.String(length=32), server_default='active', nullable=False),
    sa.Column('domain_name', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=32), server_default='user', nullable=False),
    sa.Column('resource_policy', sa.String(length=256), server_default='default', nullable=False),
    sa.Column('main_access_key', sa.String(length=20), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['domain_name'], ['domains.name'], name=op.f('fk_users_domain_name_domains')),
    sa.PrimaryKeyConstraint('uuid', name=op.f('pk_users')),
    sa.UniqueConstraint('email', name=op.f('uq_users_email')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_index(op.f('ix_users_domain_name'), 'users', ['domain_name'], unique=False)
    op.create_table('association_groups_users',
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('group_id', sa.UUID(), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_association_groups_users_group_id_groups'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.uuid'], name=op.f('fk_association_groups_users_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'group_id', name='pk_association_groups_users')
    )
    op.create_table('keypairs',
    sa.Column('access_key', sa.String(length=20), nullable=False),
    sa.Column('secret_key', sa.String(length=40), nullable=False),
    sa.Column('user_id', sa.String(length=256), nullable=True),
    sa.Column('user', sa.UUID(), nullable=False),
    sa.Column('is_active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('is_admin', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('rate_limit', sa.Integer(), nullable=True),
    sa.Column('num_queries', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('resource_policy', sa.String(length=256), nullable=False),
    sa.Column('last_used', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['resource_policy'], ['keypair_resource_policies.name'], name=op.f('fk_keypairs_resource_policy_keypair_resource_policies')),
    sa.ForeignKeyConstraint(['user'], ['users.uuid'], name=op.f('fk_keypairs_user_users')),
    sa.PrimaryKeyConstraint('access_key', name=op.f('pk_keypairs'))
    )
    op.create_index(op.f('ix_keypairs_is_active'), 'keypairs', ['is_active'], unique=False)
    op.create_index(op.f('ix_keypairs_is_admin'), 'keypairs', ['is_admin'], unique=False)
    op.create_index(op.f('ix_keypairs_user'), 'keypairs', ['user'], unique=False)
    op.create_index(op.f('ix_keypairs_user_id'), 'keypairs', ['user_id'], unique=False)
    op.create_table('sessions',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('creation_id', sa.String(length=32), nullable=True),
    sa.Column('name', sa.String(length=64), nullable=True),
    sa.Column('session_type', sa.String(length=32), server_default='interactive', nullable=False),
    sa.Column('cluster_mode', sa.String(length=16), server_default='single-node', nullable=False),
    sa.Column('cluster_size', sa.Integer(), server_default='1', nullable=False),
    sa.Column('domain_name', sa.String(length=64), nullable=False),
    sa.Column('group_id', sa.UUID(), nullable=False),
    sa.Column('user_uuid', sa.UUID(), nullable=False),
    sa.Column('access_key', sa.String(length=20), nullable=True),
    sa.Column('image', sa.String(length=512), nullable=True),
    sa.Column('architecture', sa.String(length=32), nullable=True),
    sa.Column('tag', sa.String(length=64), nullable=True),
    sa.Column('scaling_group_name', sa.String(length=64), nullable=True),
    sa.Column('requested_slots', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('occupying_slots', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('environ', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('bootstrap_script', sa.Text(), nullable=True),
    sa.Column('startup_command', sa.Text(), nullable=True),
    sa.Column('callback_url', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=32), server_default='PENDING', nullable=False),
    sa.Column('status_info', sa.Text(), nullable=True),
    sa.Column('status_data', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('status_history', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('result', sa.String(length=16), server_default='UNDEFINED', nullable=False),
    sa.Column('num_queries', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('terminated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['access_key'], ['keypairs.access_key'], name=op.f('fk_sessions_access_key_keypairs')),
    sa.ForeignKeyConstraint(['domain_name'], ['domains.name'], name=op.f('fk_sessions_domain_name_domains')),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_sessions_group_id_groups')),
    sa.ForeignKeyConstraint(['scaling_group_name'], ['scaling_groups.name'], name=op.f('fk_sessions_scaling_group_name_scaling_groups')),
    sa.ForeignKeyConstraint(['user_uuid'], ['users.uuid'], name=op.f('fk_sessions_user_uuid_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sessions'))
    )
    op.create_index(op.f('ix_sessions_access_key'), 'sessions', ['access_key'], unique=False)
    op.create_index(op.f('ix_sessions_name'), 'sessions', ['name'], unique=False)
    op.create_index(op.f('ix_sessions_scaling_group_name'), 'sessions', ['scaling_group_name'], unique=False)
    op.create_index(op.f('ix_sessions_status'), 'sessions', ['status'], unique=False)
    op.create_table('kernels',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('session_id', sa.UUID(), nullable=False),
    sa.Column('session_name', sa.String(length=64), nullable=True),
    sa.Column('session_type', sa.String(length=32), server_default='interactive', nullable=False),
    sa.Column('cluster_role', sa.String(length=16), server_default='main', nullable=False),
    sa.Column('cluster_idx', sa.Integer(), server_default='1', nullable=False),
    sa.Column('local_rank', sa.Integer(), server_default='0', nullable=False),
    sa.Column('cluster_hostname', sa.String(length=64), nullable=True),
    sa.Column('scaling_group', sa.String(length=64), nullable=True),
    sa.Column('agent', sa.String(length=64), nullable=True),
    sa.Column('agent_addr', sa.String(length=128), nullable=True),
    sa.Column('domain_name', sa.String(length=64), nullable=False),
    sa.Column('group_id', sa.UUID(), nullable=False),
    sa.Column('user_uuid', sa.UUID(), nullable=False),
    sa.Column('access_key', sa.String(length=20), nullable=True),
    sa.Column('image', sa.String(length=512), nullable=True),
    sa.Column('architecture', sa.String(length=32), nullable=True),
    sa.Column('registry', sa.String(length=256), nullable=True),
    sa.Column('container_id', sa.String(length=64), nullable=True),
    sa.Column('kernel_host', sa.String(length=128), nullable=True),
    sa.Column('requested_slots', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('occupied_slots', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('resource_opts', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('environ', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('service_ports', postgresql.JSONB(astext_type=sa.Text()), server_default='[]', nullable=False),
    sa.Column('status', sa.String(length=32), server_default='PENDING', nullable=False),
    sa.Column('status_changed', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status_info', sa.Text(), nullable=True),
    sa.Column('status_data', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('status_history', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('result', sa.String(length=16), server_default='UNDEFINED', nullable=False),
    sa.Column('num_queries', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('last_stat', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('terminated_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['agent'], ['agents.id'], name=op.f('fk_kernels_agent_agents')),
    sa.ForeignKeyConstraint(['scaling_group'], ['scaling_groups.name'], name=op.f('fk_kernels_scaling_group_scaling_groups')),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_kernels_session_id_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_kernels'))
    )
    op.create_index(op.f('ix_kernels_access_key'), 'kernels', ['access_key'], unique=False)
    op.create_index(op.f('ix_kernels_agent'), 'kernels', ['agent'], unique=False)
    op.create_index(op.f('ix_kernels_session_id'), 'kernels', ['session_id'], unique=False)
    op.create_index(op.f('ix_kernels_status'), 'kernels', ['status'], unique=False)



def downgrade() -> None:

    op.drop_index(op.f('ix_kernels_status'), table_name='kernels')
    op.drop_index(op.f('ix_kernels_session_id'), table_name='kernels')
    op.drop_index(op.f('ix_kernels_agent'), table_name='kernels')
    op.drop_index(op.f('ix_kernels_access_key'), table_name='kernels')
    op.drop_table('kernels')
    op.drop_index(op.f('ix_sessions_status'), table_name='sessions')
    op.drop_index(op.f('ix_sessions_scaling_group_name'), table_name='sessions')
    op.drop_index(op.f('ix_sessions_name'), table_name='sessions')
    op.drop_index(op.f('ix_sessions_access_key'), table_name='sessions')
    op.drop_table('sessions')
    op.drop_index(op.f('ix_keypairs_user_id'), table_name='keypairs')
    op.drop_index(op.f('ix_keypairs_user'), table_name='keypairs')
    op.drop_index(op.f('ix_keypairs_is_admin'), table_name='keypairs')
    op.drop_index(op.f('ix_keypairs_is_active'), table_name='keypairs')
    op.drop_table('keypairs')
    op.drop_table('association_groups_users')
    op.drop_index(op.f('ix_users_domain_name'), table_name='users')
    op.drop_table('users')
    op.drop_table('sgroups_for_domains')
    op.drop_index(op.f('ix_groups_domain_name'), table_name='groups')
    op.drop_table('groups')
    op.drop_index(op.f('ix_agents_status'), table_name='agents')
    op.drop_index(op.f('ix_agents_scaling_group'), table_name='agents')
    op.drop_index(op.f('ix_agents_last_seen'), table_name='agents')
    op.drop_table('agents')
    op.drop_table('scaling_groups')
    op.drop_table('keypair_resource_policies')
    op.drop_index(op.f('ix_images_name'), table_name='images')
    op.drop_table('images')
    op.drop_table('image_aliases')
    op.drop_table('domains')

