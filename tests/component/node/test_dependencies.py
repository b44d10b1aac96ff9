"""Session dependencies on the whole node: a dependent session waits PENDING (with the original's
predicate message) until its dependencies TERMINATED with SUCCESS, is cancelled (naming the
dependency, down the chain) when one fails, and an unknown or foreign dependency is refused at
create time with nothing enqueued."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from bai.manager.store import tables as t

from .conftest import Node
from .test_sessions import wait_status

WAITING = "Waiting dependency sessions to finish as success."


def name() -> str:
    return f"d-{secrets.token_hex(5)}"


async def enqueue_batch(node: Node, n: str, command: str, depends: list[str] | None = None,
                        keys: tuple[str, str] | None = None, **extra: Any) -> str:
    st, body = await node.call("POST", "/session", {
        "name": n, "image": "python", "type": "batch", "startupCommand": command, "enqueueOnly": True,
        "dependencies": depends, **extra}, keys=keys)
    assert st == 201, body
    return str(body["sessionId"])


async def row(node: Node, sid: str) -> Any:
    async with node.db.connect() as conn:
        return (await conn.execute(sa.select(t.sessions).where(t.sessions.c.id == sid))).one()


async def wait_predicate_message(node: Node, sid: str, deadline: float = 20.0) -> str:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        r = await row(node, sid)
        failed = ((r.status_data or {}).get("scheduler") or {}).get("failed_predicates") or []
        msgs = [f["msg"] for f in failed if f["name"] == "dependencies"]
        if msgs:
            assert r.status == "PENDING" and r.status_info == "predicate-checks-failed", r
            return str(msgs[0])
        assert loop.time() < end, f"no dependencies predicate failure on {sid}: {r.status_data}"
        await asyncio.sleep(0.05)


def entered(r: Any, status: str) -> datetime:
    return datetime.fromisoformat(r.status_history[status])


async def test_a_chain_runs_in_order_once_each_dependency_succeeded(node: Node) -> None:
    first, second, third = name(), name(), name()
    a = await enqueue_batch(node, first, "sleep 1.5")
    # by name and by id, as the official client sends either
    b = await enqueue_batch(node, second, "true", [first])
    c = await enqueue_batch(node, third, "true", [b, first])
    msg = await wait_predicate_message(node, b)
    assert msg == f"{WAITING} ({first} ({a}))"
    assert (await wait_predicate_message(node, c)).startswith(f"{WAITING} (")
    assert (await row(node, b)).status == "PENDING"

    for sid in (a, b, c):
        assert await wait_status(node, sid, {"TERMINATED", "CANCELLED"}, deadline=60) == "TERMINATED"
    ra, rb, rc = [await row(node, s) for s in (a, b, c)]
    assert (ra.result, rb.result, rc.result) == ("SUCCESS", "SUCCESS", "SUCCESS")
    # each started only after what it depends on had ended
    assert entered(ra, "TERMINATED") <= entered(rb, "SCHEDULED")
    assert entered(rb, "TERMINATED") <= entered(rc, "SCHEDULED")
    assert {p["name"] for p in rc.status_data["scheduler"]["passed_predicates"]} >= {"dependencies"}

    # the graph, as the official CLI's `session show-graph` reads it (ended sessions included)
    st, root = await node.call("GET", f"/session/{third}/dependency-graph")
    assert st == 200, root
    assert (root["session_name"], root["session_id"], root["status"]) == (third, c, "KernelStatus.TERMINATED")
    datetime.strptime(root["status_changed"].split(".")[0], "%Y-%m-%d %H:%M:%S")
    deps = {d["session_name"]: d for d in root["depends_on"]}
    assert set(deps) == {first, second}
    assert [d["session_name"] for d in deps[second]["depends_on"]] == [first]
    assert deps[first]["depends_on"] == []
    other = await node.add_keypair({"total_resource_slots": {}, "max_concurrent_sessions": 5})
    st, body = await node.call("GET", f"/session/{third}/dependency-graph", keys=other)
    assert st == 404, body


async def test_a_failing_dependency_cancels_its_dependents_down_the_chain(node: Node) -> None:
    first, second, third = name(), name(), name()
    a = await enqueue_batch(node, first, "sleep 0.5; exit 3")
    b = await enqueue_batch(node, second, "true", [first])
    c = await enqueue_batch(node, third, "true", [second])
    assert await wait_status(node, a, {"TERMINATED"}, deadline=60) == "TERMINATED"
    assert (await row(node, a)).result == "FAILURE"
    for sid, dep_name, dep_id in ((b, first, a), (c, second, b)):
        assert await wait_status(node, sid, {"CANCELLED", "TERMINATED"}) == "CANCELLED"
        r = await row(node, sid)
        assert r.status_info == f"dependency-failed ({dep_name})", r.status_info
        assert r.status_data["dependency"]["id"] == dep_id and r.status_data["dependency"]["name"] == dep_name
        assert "SCHEDULED" not in r.status_history  # it never got an agent


async def test_a_cancelled_dependency_cancels_its_dependents(node: Node) -> None:
    first, second = name(), name()
    a = await enqueue_batch(node, first, "true", startsAt="1h")  # waits an hour
    b = await enqueue_batch(node, second, "true", [a])
    await wait_predicate_message(node, b)
    assert (await node.call("DELETE", f"/session/{first}"))[0] == 200
    assert await wait_status(node, b, {"CANCELLED", "TERMINATED"}) == "CANCELLED"
    assert (await row(node, b)).status_info == f"dependency-failed ({first})"


async def test_unknown_or_foreign_dependencies_are_refused_and_nothing_is_enqueued(node: Node) -> None:
    other = await node.add_keypair({"total_resource_slots": {}, "max_concurrent_sessions": 5})
    foreign_name = name()
    foreign = await enqueue_batch(node, foreign_name, "true", keys=other, startsAt="1h")
    before = await node.rows(t.sessions), await node.rows(t.session_dependencies)
    for deps in (["no-such-session"], [foreign], [foreign_name], [str(foreign).replace("-", "")[:8]], [""],
                 ["x" * 200]):
        st, body = await node.call("POST", "/session", {
            "name": name(), "image": "python", "type": "batch", "startupCommand": "true",
            "enqueueOnly": True, "dependencies": deps})
        assert st == 400, (deps, body)
        assert body["type"].endswith("invalid-api-params") and "dependency" in body["title"] + body.get("msg", "")
    st, body = await node.call("POST", "/session", {"name": name(), "image": "python", "dependencies": "abc"})
    assert st == 400, body
    st, body = await node.call("POST", "/session", {"name": name(), "image": "python",
                                                    "dependencies": [f"s{i}" for i in range(65)]})
    assert st == 400, body
    assert (await node.rows(t.sessions), await node.rows(t.session_dependencies)) == before
    assert (await node.call("DELETE", f"/session/{foreign_name}", keys=other))[0] == 200
