"""dotfiles and the stored bootstrap script

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 05:00:00.000000

The original's dotfiles: a keypair's, a domain's and a project's files written into the home
directory of every new session (JSONB lists of ``{path, perm, data}``; the original packs them
with msgpack into a bytea), and the keypair's bootstrap script used when a create request
brings none.
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('keypairs', sa.Column('dotfiles', JSONB(), server_default='[]', nullable=False))
    op.add_column('keypairs', sa.Column('bootstrap_script', sa.Text(), server_default='', nullable=False))
    op.add_column('domains', sa.Column('dotfiles', JSONB(), server_default='[]', nullable=False))
    op.add_column('groups', sa.Column('dotfiles', JSONB(), server_default='[]', nullable=False))


def downgrade() -> None:
    op.drop_column('groups', 'dotfiles')
    op.drop_column('domains', 'dotfiles')
    op.drop_column('keypairs', 'bootstrap_script')
    op.drop_column('keypairs', 'dotfiles')
