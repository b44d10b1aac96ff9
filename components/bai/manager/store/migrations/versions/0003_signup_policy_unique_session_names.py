"""sign-up resource policy and unique live session names per owner

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 14:30:00.000000

Live (not TERMINATED/CANCELLED) sessions of one access key must have distinct names; the partial
unique index makes the database enforce it, so concurrent creates with one name cannot all win.
Databases that already hold such duplicates (created before this index) keep the oldest session
of each name as it is and rename the younger ones to ``<name[:27]>-<id hex>`` (still a valid
session name, unique by construction), in the sessions and their kernels, so the upgrade never
fails on them.

The ``signup-default`` keypair resource policy (2 CPUs, 4 GiB, two sessions of one container)
is what signed-up users get by default (``[auth] signup-resource-policy``); an existing policy
of that name is left as it is.
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

LIVE = "status NOT IN ('TERMINATED', 'CANCELLED')"


def upgrade() -> None:
    op.execute(f"""
        WITH ranked AS (
            SELECT id, row_number() OVER (PARTITION BY access_key, name ORDER BY created_at, id) AS n
            FROM sessions WHERE name IS NOT NULL AND {LIVE}
        ), renamed AS (
            UPDATE sessions s SET name = left(s.name, 27) || '-' || replace(s.id::text, '-', '')
            FROM ranked WHERE s.id = ranked.id AND ranked.n > 1
            RETURNING s.id, s.name
        )
        UPDATE kernels k SET session_name = renamed.name FROM renamed WHERE k.session_id = renamed.id
    """)
    op.create_index('uq_sessions_access_key_name_live', 'sessions', ['access_key', 'name'], unique=True,
                    postgresql_where=sa.text(LIVE))
    op.execute("""
        INSERT INTO keypair_resource_policies
            (name, default_for_unspecified, total_resource_slots, max_session_lifetime,
             max_concurrent_sessions, max_containers_per_session, idle_timeout)
        VALUES ('signup-default', 'LIMITED', '{"cpu": "2", "mem": "4294967296"}', 0, 2, 1, 3600)
        ON CONFLICT (name) DO NOTHING
    """)


def downgrade() -> None:
    op.drop_index('uq_sessions_access_key_name_live', table_name='sessions')
    # The policy stays: keypairs may refer to it.
