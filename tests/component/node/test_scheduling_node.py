"""Scheduling on a whole node: a resource group switched at run time to another scheduler and
agent-selection strategy still starts sessions, and a batch session reserved for later waits in
PENDING ("Before start time") until its time, then runs."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import datetime

import sqlalchemy as sa

from bai.manager.store import tables as t

from .conftest import Node
from .test_sessions import wait_status

SG_MODIFY = ("mutation($name: String!, $p: ModifyScalingGroupInput!) { "
             "modify_scaling_group(name: $name, props: $p) { ok msg } }")


async def set_scheduler(node: Node, scheduler: str, opts: dict[str, object]) -> None:
    st, body = await node.call("POST", "/admin/gql", {"query": SG_MODIFY, "variables": {
        "name": "default", "p": {"scheduler": scheduler, "scheduler_opts": json.dumps(opts)}}})
    assert st == 200 and body == {"data": {"modify_scaling_group": {"ok": True, "msg": "success"}}}, body


async def test_non_default_scheduler_and_reserved_batch(node: Node) -> None:
    await set_scheduler(node, "lifo", {"agent_selection_strategy": "roundrobin"})
    try:
        name = f"rr-{secrets.token_hex(3)}"
        st, body = await node.call("POST", "/session", {"name": name, "image": "python",
                                                        "config": {"resources": {"cpu": "1", "mem": "256m"}}})
        assert st == 201 and body["status"] == "RUNNING", body
        assert (await node.call("DELETE", f"/session/{name}"))[0] == 200

        batch = f"later-{secrets.token_hex(3)}"
        st, body = await node.call("POST", "/session", {
            "name": batch, "image": "python", "type": "batch", "startupCommand": "true", "startsAt": "2s",
            "enqueueOnly": True, "config": {"resources": {"cpu": "1", "mem": "256m"}}})
        assert st == 201 and body["status"] == "PENDING", body
        sid = body["sessionId"]
        async with node.db.connect() as conn:
            starts_at = await conn.scalar(sa.select(t.sessions.c.starts_at).where(t.sessions.c.id == sid))
        assert starts_at is not None

        loop = asyncio.get_running_loop()
        end = loop.time() + 20
        while True:  # the scheduler looks at it (the create woke it) and holds it back
            async with node.db.connect() as conn:
                row = (await conn.execute(sa.select(t.sessions.c.status, t.sessions.c.status_info,
                                                    t.sessions.c.status_data)
                                          .where(t.sessions.c.id == sid))).one()
            if row.status_info == "predicate-checks-failed":
                break
            assert row.status == "PENDING" and loop.time() < end, tuple(row)
            await asyncio.sleep(0.05)
        assert row.status_data["scheduler"]["failed_predicates"] == [
            {"name": "reserved_time", "msg": "Before start time"}]

        assert await wait_status(node, sid, {"RUNNING", "TERMINATED", "ERROR", "CANCELLED"}) in {
            "RUNNING", "TERMINATED"}
        async with node.db.connect() as conn:
            history = await conn.scalar(sa.select(t.sessions.c.status_history).where(t.sessions.c.id == sid))
        assert history is not None and datetime.fromisoformat(history["SCHEDULED"]) >= starts_at
        await node.call("DELETE", f"/session/{batch}")
    finally:
        await set_scheduler(node, "fifo", {})
