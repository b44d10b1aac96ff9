"""``backend.ai admin agent list|info`` (superadmin)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from .base import (
    Field,
    Paging,
    call,
    fetch_list,
    nested,
    paging_options,
    plain,
    print_item,
    print_list,
    slots,
)

if TYPE_CHECKING:
    from ...request import APISession


def _mib(value: Any) -> Any:
    return None if value is None else round(float(value) / 2**20, 1)


_MEM = Field("mem_cur_bytes", "Used Memory (MiB)", console=lambda v: "(null)" if v is None else str(_mib(v)),
             to_json=_mib)
#: the official ``admin agent list`` columns
LIST_FIELDS = [
    plain("id"), plain("status"), plain("architecture"), plain("scaling_group"), plain("region"),
    plain("first_contact"), plain("cpu_cur_pct", "CPU Usage (%)"), _MEM, slots("available_slots"),
    slots("occupied_slots"),
]
#: the official ``admin agent info`` columns that this manager serves (no hardware_metadata or
#: local_config), plus where the agent listens and what it runs
DETAIL_FIELDS = [
    plain("id"), plain("status"), plain("region"), plain("architecture"), plain("scaling_group"),
    plain("addr"), plain("version"), plain("first_contact"), plain("cpu_cur_pct", "CPU Usage (%)"),
    slots("available_slots"), slots("occupied_slots"), plain("container_count"), nested("live_stat"),
]
_STATUSES = click.Choice(["ALIVE", "LOST", "RESTARTING", "TERMINATED", "INCOMPATIBLE"], case_sensitive=False)


def make_group(name: str = "agent", help_text: str | None = None) -> click.Group:
    @click.group(name=name, help=help_text)
    def agent() -> None:
        """Agent administration commands."""

    @agent.command()
    @click.argument("agent_id")
    def info(agent_id: str) -> None:
        """Show the information about the given agent (superadmin privilege required)."""
        async def _go(api: APISession) -> Any:
            from ...gql import page

            # One agent = the page of agent_list whose id matches, in any status.
            variables = {"status": (None, "String"), "filter": (f"id == {json.dumps(agent_id)}", "String")}
            found = await page(api, "agent_list", variables, [f.ref for f in DETAIL_FIELDS], limit=1, offset=0)
            return found.items[0] if found.items else None

        print_item(call(_go, action="agent info"), DETAIL_FIELDS, what="agent")

    @agent.command(name="list")
    @click.option("-s", "--status", type=_STATUSES, default="ALIVE", show_default=True,
                  help="Filter agents by the given status.")
    @click.option("--scaling-group", "--sgroup", default=None, help="Filter agents by the scaling group.")
    @paging_options
    def list_(status: str, scaling_group: str | None, filter_: str | None, order: str | None, offset: int,
              limit: int | None) -> None:
        """List agents (superadmin privilege required)."""
        paging = Paging(offset, limit, filter_, order, extra={
            "status": (status.upper(), "String"), "scaling_group": (scaling_group, "String")})
        items, total = call(lambda api: fetch_list(api, "agent_list", LIST_FIELDS, paging), action="agent list")
        print_list(items, LIST_FIELDS, total)

    return agent
