"""modify_agent on a whole node: an agent marked unschedulable takes no new session (it waits in
PENDING with the scheduler's reason) and keeps that mark across its heartbeats; marked
schedulable again, the waiting session starts at once."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable

import sqlalchemy as sa

from bai.manager.store import tables as t

from .conftest import Node
from .test_sessions import wait_status

MODIFY_AGENT = "mutation($id: String!, $p: ModifyAgentInput!) { modify_agent(id: $id, props: $p) { ok msg } }"


async def until(check: Callable[[], Awaitable[bool]], what: str, deadline: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not await check():
        assert loop.time() < end, what
        await asyncio.sleep(0.05)


async def test_unschedulable_agent_takes_no_new_session(node: Node) -> None:
    async with node.db.connect() as conn:
        agent_id, seen = (await conn.execute(sa.select(t.agents.c.id, t.agents.c.last_seen)
                                             .where(t.agents.c.status == "ALIVE"))).one()

    async def set_schedulable(value: bool) -> None:
        st, body = await node.call("POST", "/admin/gql", {"query": MODIFY_AGENT,
                                                          "variables": {"id": agent_id, "p": {"schedulable": value}}})
        assert st == 200 and body == {"data": {"modify_agent": {"ok": True, "msg": "success"}}}, body

    async def agent() -> sa.Row:  # type: ignore[type-arg]
        async with node.db.connect() as conn:
            return (await conn.execute(sa.select(t.agents).where(t.agents.c.id == agent_id))).one()

    await set_schedulable(False)
    try:
        name = f"unsched-{secrets.token_hex(3)}"
        st, body = await node.call("POST", "/session", {"name": name, "image": "python", "enqueueOnly": True,
                                                        "config": {"resources": {"cpu": "1", "mem": "256m"}}})
        assert st == 201 and body["status"] == "PENDING", body
        session_id = body["sessionId"]

        async def noted() -> bool:
            async with node.db.connect() as conn:
                row = (await conn.execute(sa.select(t.sessions.c.status, t.sessions.c.status_info)
                                          .where(t.sessions.c.id == session_id))).one()
            return tuple(row) == ("PENDING", "no-available-instances")
        await until(noted, "the scheduler never passed over the session")
        # a heartbeat does not undo the mark
        await until(lambda: _later(agent, seen), "no heartbeat arrived")
        assert (await agent()).schedulable is False
        await set_schedulable(True)
        assert await wait_status(node, session_id, {"RUNNING", "ERROR", "CANCELLED"}) == "RUNNING"
        assert (await node.call("DELETE", f"/session/{name}"))[0] == 200
    finally:
        await set_schedulable(True)


async def _later(agent: Callable[[], Awaitable[sa.Row]], seen: object) -> bool:  # type: ignore[type-arg]
    row = await agent()
    return bool(row.last_seen > seen)
