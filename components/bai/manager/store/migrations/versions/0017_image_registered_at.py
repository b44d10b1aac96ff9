"""when a commit registered an image on its agent

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 12:00:00.000000

``images.registered_at``: set when a session's commit records its image as held by the agent that
committed it. A heartbeat whose image list was taken before that commit may be handled after it;
such a heartbeat must not take the agent off the new image's holders (see
``store.images.note_installed``).
"""
import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('images', sa.Column('registered_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('images', 'registered_at')
