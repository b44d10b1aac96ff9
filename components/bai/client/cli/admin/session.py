"""``backend.ai admin session list|info``: ``list`` is ``backend.ai session list`` (the official
``ps`` query, with ``--status`` and ``--access-key`` for admins); ``info`` reads the session
through GraphQL ``compute_session`` with its containers and dependencies, as the original."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from .base import Field, call, fail, json_row, nested, nested_text, plain, print_item, slots

if TYPE_CHECKING:
    from ...request import APISession

#: the official container (kernel) subfields of ``admin session info``
CONTAINER_FIELDS = [
    plain("id", "Kernel ID", "kernel_id"), plain("cluster_role"), plain("cluster_idx"),
    plain("cluster_hostname"), plain("session_id", "Session ID"), plain("image"), plain("registry"),
    plain("status"), plain("status_info"), nested("status_data"), plain("status_changed"), plain("agent"),
    plain("container_id"), nested("resource_opts"), slots("occupied_slots"),
    plain("preopen_ports", "Preopen Ports"), nested_text("live_stat"), nested_text("last_stat"),
]


def _containers_console(value: Any) -> str:
    if not value:
        return "(no sub-containers belonging to the session)"
    lines: list[str] = []
    for item in value:
        lines.append(f"+ {item.get('id')}")
        for f in CONTAINER_FIELDS[1:]:
            text = f.console(item.get(f.name))
            if "\n" in text:
                text = "\n" + "\n".join("    " + ln for ln in text.splitlines())
            lines.append(f"  - {f.header}: {text}")
    return "\n".join(lines)


def _dependencies_console(value: Any) -> str:
    if not value:
        return "(no dependency tasks)"
    return "\n".join(f"+ {d.get('name')} ({d.get('id')})" for d in value)


def _rows(fields: Sequence[Field]) -> Any:
    return lambda value: [json_row(item, fields) for item in value or []]


_CONTAINERS = Field("containers { " + " ".join(f.ref for f in CONTAINER_FIELDS) + " }",
                    console=_containers_console, to_json=_rows(CONTAINER_FIELDS))
_DEPENDENCIES = Field("dependencies { name id }", console=_dependencies_console,
                      to_json=_rows([plain("name"), plain("id")]))
#: the official ``admin session info`` fields
INFO_FIELDS = [
    plain("name"), plain("id", "Session ID", "session_id"), plain("main_kernel_id", "Main Kernel ID"),
    plain("image"), plain("tag"), plain("created_at"), plain("terminated_at"), plain("status"),
    plain("status_info"), nested("status_data"), slots("occupying_slots"), nested_text("idle_checks"),
    _CONTAINERS, _DEPENDENCIES,
]


def make_info_cmd(name: str = "info") -> click.Command:
    @click.command(name=name)
    @click.argument("session_id", metavar="SESSID")
    def info(session_id: str) -> None:
        """
        Show detailed information for a compute session (by its ID), with its containers.
        """
        from .base import is_uuid

        if not is_uuid(session_id):
            fail("The session ID must be given in the UUID format.")

        async def _go(api: APISession) -> Any:
            from ...gql import query

            doc = ("query($id: UUID!) { compute_session(id: $id) { "
                   + " ".join(f.ref for f in INFO_FIELDS) + " } }")
            return (await query(api, doc, {"id": session_id}))["compute_session"]

        print_item(call(_go, action="session info"), INFO_FIELDS, what="compute session")

    return info


def make_group(name: str = "session", help_text: str | None = None) -> click.Group:
    from ..session import make_list_cmd

    @click.group(name=name, help=help_text)
    def session() -> None:
        """Session administration commands."""

    session.add_command(make_list_cmd(name="list"), "list")
    session.add_command(make_info_cmd(), "info")
    return session
