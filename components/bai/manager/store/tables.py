"""SQLAlchemy Core tables: the single definition of the manager's database schema.

Names follow the original's schema (24.03) so operators and migration tooling find what they
expect; only the columns our features use exist so far. Resource slots are JSONB maps of slot
name -> decimal string. Statuses are stored as their enum names.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_now = sa.func.now()


def _created() -> sa.Column[object]:
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now, nullable=False)


domains = sa.Table(
    "domains", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("description", sa.String(512)),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    _created(),
    sa.Column("total_resource_slots", JSONB, nullable=False, server_default="{}"),
    sa.Column("allowed_docker_registries", JSONB, nullable=False, server_default="[]"),
    # 0005: account columns
    sa.Column("modified_at", sa.DateTime(timezone=True), server_default=_now, nullable=False),
    sa.Column("integration_id", sa.String(512)),
    sa.Column("allowed_vfolder_hosts", JSONB, nullable=False, server_default="{}"),
    # 0016: [{path, perm, data}] written into every new session's home in the domain
    sa.Column("dotfiles", JSONB, nullable=False, server_default="[]"),
)

keypair_resource_policies = sa.Table(
    "keypair_resource_policies", metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    _created(),
    sa.Column("default_for_unspecified", sa.String(32), nullable=False, server_default="UNLIMITED"),
    sa.Column("total_resource_slots", JSONB, nullable=False, server_default="{}"),
    sa.Column("max_session_lifetime", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_concurrent_sessions", sa.Integer, nullable=False, server_default="30"),
    sa.Column("max_containers_per_session", sa.Integer, nullable=False, server_default="1"),
    sa.Column("idle_timeout", sa.BigInteger, nullable=False, server_default="3600"),
    # 0006: the rest of the original's columns
    sa.Column("max_concurrent_sftp_sessions", sa.Integer, nullable=False, server_default="1"),
    sa.Column("allowed_vfolder_hosts", JSONB, nullable=False, server_default="{}"),
    sa.Column("max_pending_session_count", sa.Integer),
    sa.Column("max_pending_session_resource_slots", JSONB),
)

# 0006: user and project resource policies (users.resource_policy, groups.resource_policy)
user_resource_policies = sa.Table(
    "user_resource_policies", metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    _created(),
    sa.Column("max_vfolder_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_quota_scope_size", sa.BigInteger, nullable=False, server_default="-1"),
    sa.Column("max_session_count_per_model_session", sa.Integer, nullable=False, server_default="10"),
    sa.Column("max_customized_image_count", sa.Integer, nullable=False, server_default="3"),
)

project_resource_policies = sa.Table(
    "project_resource_policies", metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    _created(),
    sa.Column("max_vfolder_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_quota_scope_size", sa.BigInteger, nullable=False, server_default="-1"),
)

users = sa.Table(
    "users", metadata,
    sa.Column("uuid", UUID(as_uuid=True), primary_key=True),
    sa.Column("username", sa.String(64), unique=True),
    sa.Column("email", sa.String(64), nullable=False, unique=True),
    sa.Column("password", sa.String(256)),
    sa.Column("full_name", sa.String(64)),
    sa.Column("description", sa.String(500)),
    sa.Column("status", sa.String(32), nullable=False, server_default="active"),
    sa.Column("domain_name", sa.String(64), sa.ForeignKey("domains.name"), nullable=False, index=True),
    sa.Column("role", sa.String(32), nullable=False, server_default="user"),
    sa.Column("resource_policy", sa.String(256),
              sa.ForeignKey("user_resource_policies.name", onupdate="CASCADE"),  # 0006
              nullable=False, server_default="default"),
    sa.Column("main_access_key", sa.String(20)),
    _created(),
    # 0002: auth columns
    sa.Column("status_info", sa.Unicode),
    sa.Column("need_password_change", sa.Boolean),
    sa.Column("password_changed_at", sa.DateTime(timezone=True), server_default=_now),
    # 0005: account columns (allowed_client_ip: normalised addresses/CIDRs; NULL or empty = any)
    sa.Column("allowed_client_ip", ARRAY(sa.String(64))),
    sa.Column("sudo_session_enabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("totp_activated", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("totp_activated_at", sa.DateTime(timezone=True)),
    sa.Column("container_uid", sa.Integer),
    sa.Column("container_main_gid", sa.Integer),
    sa.Column("container_gids", ARRAY(sa.Integer)),
    sa.Column("modified_at", sa.DateTime(timezone=True), server_default=_now, nullable=False),
)

keypairs = sa.Table(
    "keypairs", metadata,
    sa.Column("access_key", sa.String(20), primary_key=True),
    sa.Column("secret_key", sa.String(40), nullable=False),
    sa.Column("user_id", sa.String(256), index=True),
    sa.Column("user", UUID(as_uuid=True), sa.ForeignKey("users.uuid"), nullable=False, index=True),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true(), index=True),
    sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false(), index=True),
    sa.Column("rate_limit", sa.Integer),
    sa.Column("num_queries", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column(
        "resource_policy", sa.String(256),
        sa.ForeignKey("keypair_resource_policies.name"), nullable=False,
    ),
    sa.Column("last_used", sa.DateTime(timezone=True)),
    _created(),
    # 0002: auth columns
    sa.Column("ssh_public_key", sa.String(750)),
    sa.Column("ssh_private_key", sa.String(2000)),
    # 0005: account columns
    sa.Column("modified_at", sa.DateTime(timezone=True), server_default=_now, nullable=False),
    # 0016: the keypair's dotfiles ([{path, perm, data}]) and the bootstrap script its
    # sessions run when the create request brings none
    sa.Column("dotfiles", JSONB, nullable=False, server_default="[]"),
    sa.Column("bootstrap_script", sa.Text, nullable=False, server_default=""),
)

groups = sa.Table(
    "groups", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("description", sa.String(512)),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("domain_name", sa.String(64), sa.ForeignKey("domains.name"), nullable=False, index=True),
    sa.Column("total_resource_slots", JSONB, nullable=False, server_default="{}"),
    _created(),
    sa.UniqueConstraint("name", "domain_name", name="uq_groups_name_domain_name"),
    # 0005: account columns
    sa.Column("modified_at", sa.DateTime(timezone=True), server_default=_now, nullable=False),
    sa.Column("integration_id", sa.String(512)),
    sa.Column("allowed_vfolder_hosts", JSONB, nullable=False, server_default="{}"),
    # 0006
    sa.Column("resource_policy", sa.String(256),
              sa.ForeignKey("project_resource_policies.name", onupdate="CASCADE"),
              nullable=False, server_default="default"),
    # 0010: the project's own registry ({"registry": host, "project": name}); its images are
    # allowed for the project's sessions on top of the domain's allowed_docker_registries
    sa.Column("container_registry", JSONB),
    # 0016: the project's dotfiles ([{path, perm, data}])
    sa.Column("dotfiles", JSONB, nullable=False, server_default="[]"),
)

association_groups_users = sa.Table(
    "association_groups_users", metadata,
    sa.Column("user_id", UUID(as_uuid=True), sa.ForeignKey("users.uuid", ondelete="CASCADE"), nullable=False),
    sa.Column("group_id", UUID(as_uuid=True), sa.ForeignKey("groups.id", ondelete="CASCADE"), nullable=False),
    sa.PrimaryKeyConstraint("user_id", "group_id", name="pk_association_groups_users"),
)

scaling_groups = sa.Table(
    "scaling_groups", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("description", sa.String(512)),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("is_public", sa.Boolean, nullable=False, server_default=sa.true()),
    _created(),
    sa.Column("driver", sa.String(64), nullable=False, server_default="static"),
    sa.Column("scheduler", sa.String(64), nullable=False, server_default="fifo"),
    sa.Column("scheduler_opts", JSONB, nullable=False, server_default="{}"),
    sa.Column("wsproxy_addr", sa.String(1024)),
    sa.Column("use_host_network", sa.Boolean, nullable=False, server_default=sa.false()),
    # 0006
    sa.Column("wsproxy_api_token", sa.String(128)),
    sa.Column("driver_opts", JSONB, nullable=False, server_default="{}"),
)

sgroups_for_domains = sa.Table(
    "sgroups_for_domains", metadata,
    sa.Column("scaling_group", sa.String(64), sa.ForeignKey("scaling_groups.name", ondelete="CASCADE"), nullable=False),
    sa.Column("domain", sa.String(64), sa.ForeignKey("domains.name", ondelete="CASCADE"), nullable=False),
    sa.PrimaryKeyConstraint("scaling_group", "domain", name="pk_sgroups_for_domains"),
)

# 0006: the resource groups a project / an access key may use, besides its domain's
sgroups_for_groups = sa.Table(
    "sgroups_for_groups", metadata,
    sa.Column("scaling_group", sa.String(64),
              sa.ForeignKey("scaling_groups.name", onupdate="CASCADE", ondelete="CASCADE"), nullable=False),
    sa.Column("group", UUID(as_uuid=True), sa.ForeignKey("groups.id", onupdate="CASCADE", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.PrimaryKeyConstraint("scaling_group", "group", name="pk_sgroups_for_groups"),
)

sgroups_for_keypairs = sa.Table(
    "sgroups_for_keypairs", metadata,
    sa.Column("scaling_group", sa.String(64),
              sa.ForeignKey("scaling_groups.name", onupdate="CASCADE", ondelete="CASCADE"), nullable=False),
    sa.Column("access_key", sa.String(20),
              sa.ForeignKey("keypairs.access_key", onupdate="CASCADE", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.PrimaryKeyConstraint("scaling_group", "access_key", name="pk_sgroups_for_keypairs"),
)

# 0004: resource presets (GraphQL resource_preset(s))
resource_presets = sa.Table(
    "resource_presets", metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("resource_slots", JSONB, nullable=False, server_default="{}"),
    sa.Column("shared_memory", sa.BigInteger),
)

agents = sa.Table(
    "agents", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(32), nullable=False, index=True),
    sa.Column("status_changed", sa.DateTime(timezone=True)),
    sa.Column("region", sa.String(64)),
    sa.Column("scaling_group", sa.String(64), sa.ForeignKey("scaling_groups.name"), nullable=False, index=True),
    sa.Column("schedulable", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("available_slots", JSONB, nullable=False, server_default="{}"),
    sa.Column("occupied_slots", JSONB, nullable=False, server_default="{}"),
    sa.Column("addr", sa.String(128), nullable=False),
    sa.Column("architecture", sa.String(32), nullable=False, server_default="x86_64"),
    sa.Column("version", sa.String(64)),
    sa.Column("compute_plugins", JSONB, nullable=False, server_default="{}"),
    sa.Column("first_contact", sa.DateTime(timezone=True), server_default=_now),
    sa.Column("last_seen", sa.DateTime(timezone=True), server_default=_now, index=True),
    sa.Column("lost_at", sa.DateTime(timezone=True)),
)

images = sa.Table(
    "images", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("name", sa.String(512), nullable=False, index=True),
    sa.Column("architecture", sa.String(32), nullable=False, server_default="x86_64"),
    sa.Column("registry", sa.String(256), nullable=False),
    sa.Column("tag", sa.String(128)),
    sa.Column("config_digest", sa.String(128)),
    sa.Column("labels", JSONB, nullable=False, server_default="{}"),
    sa.Column("resources", JSONB, nullable=False, server_default="{}"),
    sa.Column("is_local", sa.Boolean, nullable=False, server_default=sa.false()),
    _created(),
    # 0007: what registry scans and heartbeats report (installed_agents: agent ids, see the migration)
    sa.Column("size_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("accelerators", sa.String(128)),
    sa.Column("installed_agents", JSONB, nullable=False, server_default="[]"),
    # 0017: when a commit recorded the image as held by its agent (see store.images.note_installed)
    sa.Column("registered_at", sa.DateTime(timezone=True)),
    sa.Index("ix_images_registry", "registry"),
    sa.UniqueConstraint("name", "architecture", name="uq_images_name_architecture"),
)

image_aliases = sa.Table(
    "image_aliases", metadata,
    sa.Column("alias", sa.String(256), primary_key=True),
    sa.Column("image", sa.String(512), nullable=False),
)

sessions = sa.Table(
    "sessions", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("creation_id", sa.String(32)),
    sa.Column("name", sa.String(64), index=True),
    sa.Column("session_type", sa.String(32), nullable=False, server_default="interactive"),
    sa.Column("cluster_mode", sa.String(16), nullable=False, server_default="single-node"),
    sa.Column("cluster_size", sa.Integer, nullable=False, server_default="1"),
    sa.Column("domain_name", sa.String(64), sa.ForeignKey("domains.name"), nullable=False),
    sa.Column("group_id", UUID(as_uuid=True), sa.ForeignKey("groups.id"), nullable=False),
    sa.Column("user_uuid", UUID(as_uuid=True), sa.ForeignKey("users.uuid"), nullable=False),
    sa.Column("access_key", sa.String(20), sa.ForeignKey("keypairs.access_key"), index=True),
    sa.Column("image", sa.String(512)),
    sa.Column("architecture", sa.String(32)),
    sa.Column("tag", sa.String(64)),
    sa.Column("scaling_group_name", sa.String(64), sa.ForeignKey("scaling_groups.name"), index=True),
    sa.Column("requested_slots", JSONB, nullable=False, server_default="{}"),
    sa.Column("occupying_slots", JSONB, nullable=False, server_default="{}"),
    sa.Column("environ", JSONB, nullable=False, server_default="{}"),
    sa.Column("bootstrap_script", sa.Text),
    sa.Column("startup_command", sa.Text),
    sa.Column("callback_url", sa.Text),
    sa.Column("status", sa.String(32), nullable=False, server_default="PENDING", index=True),
    sa.Column("status_info", sa.Text),
    sa.Column("status_data", JSONB),
    sa.Column("status_history", JSONB, nullable=False, server_default="{}"),
    sa.Column("result", sa.String(16), nullable=False, server_default="UNDEFINED"),
    sa.Column("num_queries", sa.BigInteger, nullable=False, server_default="0"),
    _created(),
    sa.Column("terminated_at", sa.DateTime(timezone=True)),
    sa.Column("starts_at", sa.DateTime(timezone=True)),
    # 0012: the folders it mounts, resolved at creation (services/vfolders/mounts.py)
    sa.Column("vfolder_mounts", JSONB, nullable=False, server_default="[]"),
    # 0003: one live session per name and owner, enforced here so concurrent creates cannot race.
    sa.Index("uq_sessions_access_key_name_live", "access_key", "name", unique=True,
             postgresql_where=sa.text("status NOT IN ('TERMINATED', 'CANCELLED')")),
)

#: The unique index a duplicate live session name violates (see ``sessions`` above).
UNIQUE_LIVE_SESSION_NAME = "uq_sessions_access_key_name_live"

# 0014d: a session is scheduled only once every session it depends on TERMINATED with SUCCESS
# (services/sessions/dependencies.py; the scheduler's ``dependencies`` predicate).
session_dependencies = sa.Table(
    "session_dependencies", metadata,
    sa.Column("session_id", UUID(as_uuid=True),
              sa.ForeignKey("sessions.id", onupdate="CASCADE", ondelete="CASCADE"), primary_key=True),
    sa.Column("depends_on", UUID(as_uuid=True),
              sa.ForeignKey("sessions.id", onupdate="CASCADE", ondelete="CASCADE"), primary_key=True,
              index=True),
)

session_templates = sa.Table(
    "session_templates", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("domain_name", sa.String(64), sa.ForeignKey("domains.name", onupdate="CASCADE", ondelete="CASCADE"),
              nullable=False),
    sa.Column("group_id", UUID(as_uuid=True), sa.ForeignKey("groups.id", onupdate="CASCADE", ondelete="CASCADE"),
              index=True),
    sa.Column("user_uuid", UUID(as_uuid=True), sa.ForeignKey("users.uuid", onupdate="CASCADE", ondelete="CASCADE"),
              nullable=False, index=True),
    #: TASK (a session template) or CLUSTER (a cluster template naming session templates)
    sa.Column("type", sa.String(16), nullable=False, server_default="TASK"),
    sa.Column("name", sa.String(128)),
    sa.Column("template", JSONB, nullable=False),
    sa.CheckConstraint("type in ('TASK', 'CLUSTER')", name="type"),
)

kernels = sa.Table(
    "kernels", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("session_id", UUID(as_uuid=True), sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("session_name", sa.String(64)),
    sa.Column("session_type", sa.String(32), nullable=False, server_default="interactive"),
    sa.Column("cluster_role", sa.String(16), nullable=False, server_default="main"),
    sa.Column("cluster_idx", sa.Integer, nullable=False, server_default="1"),
    sa.Column("local_rank", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cluster_hostname", sa.String(64)),
    sa.Column("scaling_group", sa.String(64), sa.ForeignKey("scaling_groups.name")),
    sa.Column("agent", sa.String(64), sa.ForeignKey("agents.id"), index=True),
    sa.Column("agent_addr", sa.String(128)),
    sa.Column("domain_name", sa.String(64), nullable=False),
    sa.Column("group_id", UUID(as_uuid=True), nullable=False),
    sa.Column("user_uuid", UUID(as_uuid=True), nullable=False),
    sa.Column("access_key", sa.String(20), index=True),
    sa.Column("image", sa.String(512)),
    sa.Column("architecture", sa.String(32)),
    sa.Column("registry", sa.String(256)),
    sa.Column("container_id", sa.String(64)),
    sa.Column("kernel_host", sa.String(128)),
    sa.Column("requested_slots", JSONB, nullable=False, server_default="{}"),
    sa.Column("occupied_slots", JSONB, nullable=False, server_default="{}"),
    sa.Column("resource_opts", JSONB, nullable=False, server_default="{}"),
    sa.Column("environ", JSONB, nullable=False, server_default="{}"),
    sa.Column("service_ports", JSONB, nullable=False, server_default="[]"),
    sa.Column("status", sa.String(32), nullable=False, server_default="PENDING", index=True),
    sa.Column("status_changed", sa.DateTime(timezone=True)),
    sa.Column("status_info", sa.Text),
    sa.Column("status_data", JSONB),
    sa.Column("status_history", JSONB, nullable=False, server_default="{}"),
    sa.Column("result", sa.String(16), nullable=False, server_default="UNDEFINED"),
    sa.Column("num_queries", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_stat", JSONB),
    _created(),
    sa.Column("terminated_at", sa.DateTime(timezone=True)),
    # 0013: the last of the container's log, kept when the container is removed (up to 1 MiB;
    # never selected with the other columns: see store.sessions.KERNEL_COLUMNS)
    sa.Column("container_log", sa.Text),
)

# 0008: the audit log (beyond the original): one row per GraphQL mutation field, admin REST call
# and failed authentication; ``args`` has its secrets redacted before it gets here.
audit_logs = sa.Table(
    "audit_logs", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now, nullable=False, index=True),
    sa.Column("access_key", sa.String(20), index=True),
    sa.Column("user_id", UUID(as_uuid=True), index=True),
    sa.Column("email", sa.String(64)),
    sa.Column("role", sa.String(32)),
    sa.Column("client_ip", sa.String(64)),
    sa.Column("kind", sa.String(16), nullable=False),  # graphql | rest
    sa.Column("operation", sa.String(256), nullable=False),
    sa.Column("target", sa.Text),
    sa.Column("args", JSONB, nullable=False, server_default="{}"),
    sa.Column("outcome", sa.String(16), nullable=False),  # ok | failed | denied
    sa.Column("message", sa.Text),
    sa.Column("duration_ms", sa.Float),
)

# 0008: keypairs replaced by POST /auth/rotate-keypair; the old one works until ``expires_at``.
keypair_rotations = sa.Table(
    "keypair_rotations", metadata,
    sa.Column("old_access_key", sa.String(20), sa.ForeignKey("keypairs.access_key", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("new_access_key", sa.String(20), sa.ForeignKey("keypairs.access_key", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("rotated_by", sa.String(20)),
    sa.Column("rotated_at", sa.DateTime(timezone=True), server_default=_now, nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("retired_at", sa.DateTime(timezone=True)),
)

# ------------------------------------------------------------------ 0011: virtual folders
# The original's vfolder tables (24.03): a folder lives on a storage host ("<proxy>:<volume>")
# inside a quota scope ("user:<uuid>" / "project:<uuid>"); users reach a folder they do not own
# through vfolder_permissions (accepted invitations, project overrides).

vfolders = sa.Table(
    "vfolders", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("host", sa.String(128), nullable=False, index=True),
    sa.Column("quota_scope_id", sa.String(64), nullable=False),
    sa.Column("name", sa.String(128), nullable=False, index=True),
    sa.Column("usage_mode", sa.String(16), nullable=False, server_default="general"),
    sa.Column("permission", sa.String(2), nullable=False, server_default="wd"),  # the owner's: ro/rw/wd
    sa.Column("max_files", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_size", sa.Integer, nullable=False, server_default="0"),  # obsolete since v7: always 0
    sa.Column("num_files", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cur_size", sa.BigInteger, nullable=False, server_default="0"),
    _created(),
    sa.Column("last_used", sa.DateTime(timezone=True)),
    sa.Column("creator", sa.String(128)),  # the creating user's email
    sa.Column("unmanaged_path", sa.String(512)),
    sa.Column("ownership_type", sa.String(8), nullable=False, server_default="user"),  # user | group
    sa.Column("user", UUID(as_uuid=True), sa.ForeignKey("users.uuid", ondelete="CASCADE"), index=True),
    sa.Column("group", UUID(as_uuid=True), sa.ForeignKey("groups.id", ondelete="CASCADE"), index=True),
    sa.Column("cloneable", sa.Boolean, nullable=False, server_default=sa.false()),
    # ready, performing, cloning, mounted, error, delete-pending (trash), delete-ongoing,
    # delete-complete, delete-error
    sa.Column("status", sa.String(16), nullable=False, server_default="ready", index=True),
    sa.Column("status_changed", sa.DateTime(timezone=True), server_default=_now),
    sa.Column("status_history", JSONB, nullable=False, server_default="{}"),
    sa.CheckConstraint('("user" IS NULL) <> ("group" IS NULL)', name="ownership_one_of_user_group"),
)

vfolder_permissions = sa.Table(
    "vfolder_permissions", metadata,
    sa.Column("vfolder", UUID(as_uuid=True), sa.ForeignKey("vfolders.id", ondelete="CASCADE"), nullable=False),
    sa.Column("user", UUID(as_uuid=True), sa.ForeignKey("users.uuid", ondelete="CASCADE"), nullable=False),
    sa.Column("permission", sa.String(2), nullable=False, server_default="rw"),
    sa.PrimaryKeyConstraint("vfolder", "user", name="pk_vfolder_permissions"),
)

vfolder_invitations = sa.Table(
    "vfolder_invitations", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("permission", sa.String(2), nullable=False, server_default="rw"),
    sa.Column("inviter", sa.String(256), nullable=False),  # emails, as the original stores them
    sa.Column("invitee", sa.String(256), nullable=False),
    sa.Column("state", sa.String(10), nullable=False, server_default="pending"),  # pending/canceled/accepted/rejected
    _created(),
    sa.Column("modified_at", sa.DateTime(timezone=True), server_default=_now, nullable=False),
    sa.Column("vfolder", UUID(as_uuid=True), sa.ForeignKey("vfolders.id", ondelete="CASCADE"), nullable=False,
              index=True),
)
