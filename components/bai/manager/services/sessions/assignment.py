"""Manual agent assignment at create (``config.agentList``, the official client's
``--assign-agent``): superadmins only; one agent for a single-node session (it holds every
kernel), one per kernel for a multi-node one. The agents are checked here (known, alive,
schedulable, in the session's resource group, of the image's architecture) and recorded on the
kernels (``kernels.agent`` while PENDING); the scheduler then places the kernels exactly there
when the agents' free capacity allows, and otherwise leaves the session PENDING saying why."""

from __future__ import annotations

from typing import Any

from bai.manager import errors
from bai.manager.store import cluster as cluster_store
from bai.manager.store.keypairs import Requester

from .. import cluster_networks
from ..context import ManagerContext
from ..schemas import CreateSession

__all__ = ["check_privilege", "resolve"]

MAX_AGENT_ID_LENGTH = 64  # agents.id


def check_privilege(requester: Requester, req: CreateSession) -> None:
    if req.config.agent_list is not None and not requester.is_superadmin:
        raise errors.InsufficientPrivilege("Only superadmins may assign agents to a session (agentList).")


async def resolve(ctx: ManagerContext, conn: Any, req: CreateSession, scaling_group: str,
                  architecture: str) -> list[str] | None:
    """The agent of each kernel in local-rank order (None: the scheduler chooses)."""
    wanted = req.config.agent_list
    if wanted is None:
        return None
    multi = req.cluster_mode == "multi-node"
    expected = req.cluster_size if multi else 1
    if len(wanted) != expected:
        rule = (f"one agent per kernel ({req.cluster_size}) for a multi-node session" if multi
                else "exactly one agent for a single-node session")
        raise errors.InvalidAPIParameters(
            "Input validation error", {"config.agentList": f"{len(wanted)} agents given; {rule}"})
    for aid in wanted:
        if not aid or len(aid) > MAX_AGENT_ID_LENGTH:
            raise errors.InvalidAPIParameters(
                "Input validation error", {"config.agentList": f"not an agent id: {aid[:80]!r}"})
    rows = await cluster_store.agents_by_id(conn, wanted)
    for aid in dict.fromkeys(wanted):
        row = rows.get(aid)
        problem = None
        if row is None:
            problem = f"Unknown agent: {aid}"
        elif row.status != "ALIVE":
            problem = f"Agent {aid} is not alive ({row.status})"
        elif not row.schedulable:
            problem = f"Agent {aid} is not schedulable"
        elif row.scaling_group != scaling_group:
            problem = f"Agent {aid} is in resource group {row.scaling_group!r}, not {scaling_group!r}"
        elif row.architecture != architecture:
            problem = f"Agent {aid} runs {row.architecture}, the image is for {architecture}"
        if problem is not None:
            raise errors.InvalidAPIParameters(problem, {"config.agentList": problem})
    if multi and cluster_networks.spans_hosts([rows[a].addr or "" for a in wanted]) \
            and not (await cluster_networks.of(ctx).overlay()).enabled:
        problem = ("These agents are on different hosts: a multi-node session across hosts needs the "
                   f"overlay network (etcd {cluster_networks.OVERLAY_ENABLED_KEY})")
        raise errors.InvalidAPIParameters(problem, {"config.agentList": problem})
    return list(wanted)
