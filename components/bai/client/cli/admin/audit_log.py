"""``backend.ai admin audit-log list`` (beyond the original): who did what, when, from where, and
how it ended — every mutation and admin REST call (superadmins and monitors)."""

from __future__ import annotations

import click

from ..common import get_cli_context
from .base import Paging, call, fetch_list, nested, paging_options, plain, print_list

#: console columns; JSON adds the ids and the (secret-free) arguments
CONSOLE_FIELDS = [
    plain("created_at"), plain("email"), plain("role"), plain("client_ip"), plain("kind"), plain("operation"),
    plain("target"), plain("outcome"), plain("message"), plain("duration_ms", "Duration (ms)"),
]
JSON_FIELDS = [plain("id"), *CONSOLE_FIELDS[:2], plain("access_key"), plain("user_id"), *CONSOLE_FIELDS[2:],
               nested("args")]


def make_group(name: str = "audit-log", help_text: str | None = None) -> click.Group:
    @click.group(name=name, help=help_text)
    def audit_log() -> None:
        """Audit log of administrative actions (superadmin; beyond the original)."""

    @audit_log.command(name="list")
    @paging_options
    def list_(filter_: str | None, order: str | None, offset: int, limit: int | None) -> None:
        """
        List audit log entries, newest first (superadmins and monitors).

        \b
        EXAMPLES
            backend.ai admin audit-log list --limit 20
            backend.ai admin audit-log list --filter 'outcome == "denied"'
            backend.ai admin audit-log list --filter 'operation == "create_user"' --order '+created_at'
        """
        fields = JSON_FIELDS if get_cli_context().json_mode else CONSOLE_FIELDS
        # The log only grows: unlike other lists the console shows one page (20 unless --limit).
        paging = Paging(offset, limit or 20, filter_, order)
        items, total = call(lambda api: fetch_list(api, "audit_log_list", fields, paging),
                            action="audit-log list")
        print_list(items, fields, total)

    return audit_log
