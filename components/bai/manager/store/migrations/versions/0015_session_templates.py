"""session templates

Revision ID: 0015
Revises: 0014d
Create Date: 2026-12-02 04:50:00.000000

The original's ``session_templates``: a user's (or a project's) stored session or cluster
template, ``type`` ``TASK`` or ``CLUSTER``, its document in ``template``; deleting sets
``is_active`` false.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = '0015'
down_revision = '0014d'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'session_templates',
        sa.Column('id', UUID(as_uuid=True), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('is_active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
        sa.Column('domain_name', sa.String(64), nullable=False),
        sa.Column('group_id', UUID(as_uuid=True), nullable=True),
        sa.Column('user_uuid', UUID(as_uuid=True), nullable=False),
        sa.Column('type', sa.String(16), server_default='TASK', nullable=False),
        sa.Column('name', sa.String(128), nullable=True),
        sa.Column('template', JSONB(), nullable=False),
        sa.CheckConstraint("type in ('TASK', 'CLUSTER')", name=op.f('ck_session_templates_type')),
        sa.ForeignKeyConstraint(['domain_name'], ['domains.name'], onupdate='CASCADE', ondelete='CASCADE',
                                name=op.f('fk_session_templates_domain_name_domains')),
        sa.ForeignKeyConstraint(['group_id'], ['groups.id'], onupdate='CASCADE', ondelete='CASCADE',
                                name=op.f('fk_session_templates_group_id_groups')),
        sa.ForeignKeyConstraint(['user_uuid'], ['users.uuid'], onupdate='CASCADE', ondelete='CASCADE',
                                name=op.f('fk_session_templates_user_uuid_users')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_session_templates')),
    )
    op.create_index(op.f('ix_session_templates_user_uuid'), 'session_templates', ['user_uuid'])
    op.create_index(op.f('ix_session_templates_group_id'), 'session_templates', ['group_id'])


def downgrade() -> None:
    op.drop_index(op.f('ix_session_templates_group_id'), table_name='session_templates')
    op.drop_index(op.f('ix_session_templates_user_uuid'), table_name='session_templates')
    op.drop_table('session_templates')
