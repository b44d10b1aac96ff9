"""``backend.ai admin ...``: the administrative command groups of the official client 24.03, one
module per noun, each imported only when its group is used (``--help`` imports none of them)."""

from __future__ import annotations

import click

from ..common import LazyGroup

#: name -> (module, factory, short help); the factory takes ``name`` and ``help_text``.
ADMIN_GROUPS: dict[str, tuple[str, str, str]] = {
    "agent": ("bai.client.cli.admin.agent", "make_group", "Agent administration commands."),
    "audit-log": ("bai.client.cli.admin.audit_log", "make_group",
                  "Audit log of administrative actions (superadmin; beyond the original)."),
    "domain": ("bai.client.cli.admin.domain", "make_group", "Domain administration commands."),
    "group": ("bai.client.cli.admin.group", "make_group",
              "User group (project) administration commands"),
    "image": ("bai.client.cli.admin.image", "make_group", "Image administration commands."),
    "keypair": ("bai.client.cli.admin.keypair", "make_group", "KeyPair administration commands."),
    "keypair-resource-policy": ("bai.client.cli.admin.resource_policy", "make_group",
                                "KeyPair resource policy administration commands."),
    "resource-preset": ("bai.client.cli.admin.resource_preset", "make_group",
                        "Resource preset administration commands."),
    "scaling-group": ("bai.client.cli.admin.scaling_group", "make_group",
                      "Scaling group (resource group) administration commands."),
    "session": ("bai.client.cli.admin.session", "make_group", "Session administration commands."),
    "user": ("bai.client.cli.admin.user", "make_group", "User administration commands."),
    "vfolder": ("bai.client.cli.admin.vfolder", "make_group", "VFolder administration commands."),
}


def make_admin_group(name: str = "admin", help_text: str | None = None) -> click.Group:
    return LazyGroup(
        name=name,
        help=(help_text or "Administrative command set") + "\n\n"
        "Lists print tables (or, with the global --output json, "
        '{"count", "total_count", "items"}); a failure exits non-zero with one line on stderr.',
        short_help=help_text,
        lazy_commands=ADMIN_GROUPS,
    )
