"""audit log and keypair rotations

Revision ID: 0008
Revises: 0004
Create Date: 2026-12-01 16:40:00.000000

``audit_logs``: one row per GraphQL mutation field, admin REST call and failed authentication
(who, when, from where, what, with which arguments, secrets redacted, and the outcome); beyond
the original. ``keypair_rotations``: a keypair replaced by ``POST /auth/rotate-keypair``, its
successor and when it stops working.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = '0008'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'audit_logs',
        sa.Column('id', sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column('access_key', sa.String(20)),
        sa.Column('user_id', UUID(as_uuid=True)),
        sa.Column('email', sa.String(64)),
        sa.Column('role', sa.String(32)),
        sa.Column('client_ip', sa.String(64)),
        sa.Column('kind', sa.String(16), nullable=False),
        sa.Column('operation', sa.String(256), nullable=False),
        sa.Column('target', sa.Text),
        sa.Column('args', JSONB, nullable=False, server_default='{}'),
        sa.Column('outcome', sa.String(16), nullable=False),
        sa.Column('message', sa.Text),
        sa.Column('duration_ms', sa.Float),
        sa.PrimaryKeyConstraint('id', name='pk_audit_logs'),
    )
    op.create_index('ix_audit_logs_created_at', 'audit_logs', ['created_at'])
    op.create_index('ix_audit_logs_access_key', 'audit_logs', ['access_key'])
    op.create_index('ix_audit_logs_user_id', 'audit_logs', ['user_id'])
    op.create_table(
        'keypair_rotations',
        sa.Column('old_access_key', sa.String(20), nullable=False),
        sa.Column('new_access_key', sa.String(20), nullable=False),
        sa.Column('rotated_by', sa.String(20)),
        sa.Column('rotated_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('retired_at', sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint('old_access_key', name='pk_keypair_rotations'),
        sa.ForeignKeyConstraint(['old_access_key'], ['keypairs.access_key'], ondelete='CASCADE',
                                name='fk_keypair_rotations_old_access_key_keypairs'),
        sa.ForeignKeyConstraint(['new_access_key'], ['keypairs.access_key'], ondelete='CASCADE',
                                name='fk_keypair_rotations_new_access_key_keypairs'),
    )
    op.create_index('ix_keypair_rotations_expires_at', 'keypair_rotations', ['expires_at'])
    op.create_index('ix_keypair_rotations_new_access_key', 'keypair_rotations', ['new_access_key'])


def downgrade() -> None:
    op.drop_table('keypair_rotations')
    op.drop_table('audit_logs')
