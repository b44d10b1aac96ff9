"""Agent: SDL, resolvers and row -> object mapping (superadmins only); ``modify_agent`` marks an
agent (un)schedulable or moves it to another resource group (services.scaling_groups)."""

from __future__ import annotations

from typing import Any

from ariadne import MutationType, QueryType

from bai.common import protocol as proto
from bai.manager import errors
from bai.manager.services import gql_queries as svc
from bai.manager.services import scaling_groups as sgroups
from bai.manager.store.agents import AGENT_STATUSES, decode_version

from .context import GQLContext, context_of

QUERIES = '''
  "One agent (superadmins and monitors)."
  agent(agent_id: String!): Agent

  "Agents (superadmins and monitors)."
  agent_list(
    limit: Int!
    offset: Int!
    filter: String
    order: String
    scaling_group: String
    status: String
  ): AgentList
'''

MUTATIONS = '''
  "Marks an agent schedulable or not, or moves it to another scaling group (superadmin only)."
  modify_agent(id: String!, props: ModifyAgentInput!): ModifyAgent
'''

SDL = '''
type Agent implements Item {
  id: ID
  status: String
  status_changed: DateTime
  region: String
  scaling_group: String
  schedulable: Boolean
  available_slots: JSONString
  occupied_slots: JSONString
  addr: String
  architecture: String
  first_contact: DateTime
  lost_at: DateTime
  version: String
  compute_plugins: JSONString
  live_stat: JSONString
  cpu_cur_pct: Float
  mem_cur_bytes: Float
  container_count: Int
  "Per compute plugin: its status and what it reports about its devices."
  hardware_metadata: JSONString
  "What the agent announced about itself: id, region, resource group, address, architecture, version, protocol (and protocol_refused: why an INCOMPATIBLE agent is not used)."
  local_config: JSONString
}

type AgentList implements PaginatedList {
  items: [Agent]!
  total_count: Int!
}

input ModifyAgentInput {
  "false: the scheduler places no new session on the agent (running ones stay)."
  schedulable: Boolean
  "Moves a live agent: it switches at once and keeps the group in its agent.toml (ok=false, nothing changed, when it cannot)."
  scaling_group: String
}

type ModifyAgent {
  ok: Boolean
  msg: String
}
'''

query = QueryType()
mutation = MutationType()
BINDABLES = (query, mutation)


def agent_obj(row: dict[str, Any]) -> dict[str, Any]:
    """An agent's columns (services.gql_queries.agent_page) as an Agent (live statistics are not
    collected yet)."""
    alive = row.get("status") == "ALIVE"
    plugins = row.get("compute_plugins") or {}
    version, protocol = decode_version(row.get("version"))
    row = {**row, "version": version}
    announced: dict[str, Any] = {}
    if protocol is not None:
        announced["protocol"] = protocol
        if row.get("status") == "INCOMPATIBLE":
            announced["protocol_refused"] = proto.incompatibility(proto.advertised(), proto.peer_version(protocol))
    return {
        **row, "cpu_cur_pct": None, "mem_cur_bytes": None, "live_stat": None,
        "hardware_metadata": {
            name: {"status": "healthy" if alive else "unavailable", "status_info": None,
                   "metadata": info if isinstance(info, dict) else {}}
            for name, info in plugins.items()},
        "local_config": {"agent": {**{k: row.get(k) for k in (
            "id", "region", "scaling_group", "addr", "architecture", "version")}, **announced}},
    }


def _require_reader(ctx: GQLContext) -> None:
    if not svc.reads_all(ctx.requester):  # superadmins, and monitors (who read everything)
        raise errors.GenericForbidden("Only superadmins and monitors may list agents.")


@query.field("agent")
async def resolve_agent(_: Any, info: Any, agent_id: str) -> dict[str, Any] | None:
    ctx = context_of(info)
    _require_reader(ctx)
    row = await svc.agent(ctx.manager.db, agent_id)
    return None if row is None else agent_obj(row)


@query.field("agent_list")
async def resolve_agent_list(
    _: Any, info: Any, limit: int, offset: int, filter: str | None = None, order: str | None = None,
    scaling_group: str | None = None, status: str | None = None,
) -> dict[str, Any]:
    ctx = context_of(info)
    _require_reader(ctx)
    svc.check_page(limit, offset, ctx.max_page_size)
    page = await svc.agent_page(
        ctx.manager.db, limit=limit, offset=offset, scaling_group=scaling_group,
        statuses=svc.statuses(status, AGENT_STATUSES, "agent"), filter_=filter, order=order)
    return {"items": [agent_obj(r) for r in page.rows], "total_count": page.total_count}


@mutation.field("modify_agent")
async def resolve_modify_agent(_: Any, info: Any, id: str, props: dict[str, Any]) -> dict[str, Any]:  # noqa: A002
    ctx = context_of(info)
    out = await sgroups.modify_agent(ctx.manager, ctx.requester, id, props)
    return {"ok": out.ok, "msg": out.msg}
