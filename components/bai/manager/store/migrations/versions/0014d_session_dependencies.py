"""session dependencies

Revision ID: 0014d
Revises: 0013
Create Date: 2026-12-01 19:30:00.000000

The original's ``session_dependencies``: a session waits (PENDING) until every session it
depends on has TERMINATED with result SUCCESS. Both ends are sessions; a pair is stored once.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = '0014d'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'session_dependencies',
        sa.Column('session_id', UUID(as_uuid=True), nullable=False),
        sa.Column('depends_on', UUID(as_uuid=True), nullable=False),
        sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], onupdate='CASCADE', ondelete='CASCADE',
                                name=op.f('fk_session_dependencies_session_id_sessions')),
        sa.ForeignKeyConstraint(['depends_on'], ['sessions.id'], onupdate='CASCADE', ondelete='CASCADE',
                                name=op.f('fk_session_dependencies_depends_on_sessions')),
        sa.PrimaryKeyConstraint('session_id', 'depends_on', name=op.f('pk_session_dependencies')),
    )
    # The cancellation cascade looks dependents up by the session they depend on.
    op.create_index(op.f('ix_session_dependencies_depends_on'), 'session_dependencies', ['depends_on'])


def downgrade() -> None:
    op.drop_index(op.f('ix_session_dependencies_depends_on'), table_name='session_dependencies')
    op.drop_table('session_dependencies')
