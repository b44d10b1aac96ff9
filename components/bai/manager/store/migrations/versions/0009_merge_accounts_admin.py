"""merge the accounts/admin revisions

Revision ID: 0009
Revises: 0005, 0006, 0007, 0008
Create Date: 2026-12-01 17:00:00.000000

Accounts (0005), policies/presets/resource groups (0006), images/registries (0007) and the audit
log (0008) were written side by side on 0004 and touch different tables; this revision joins
them into one head again, so later revisions have a single parent.
"""

revision = '0009'
down_revision = ('0005', '0006', '0007', '0008')
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
