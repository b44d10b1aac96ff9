"""Session lifecycle through the real manager and agent: create, execute, destroy, failures."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime, timedelta

import aiodocker
import sqlalchemy as sa

from bai.common.auth import sign_request
from bai.manager.store import tables as t

from .conftest import Node

PROBS = "https://api.backend.ai/probs/"


def name() -> str:
    return f"s-{secrets.token_hex(5)}"


async def containers(session_id: str) -> list[dict]:
    async with aiodocker.Docker() as docker:
        found = await docker.containers.list(
            all=True, filters=json.dumps({"label": [f"ai.backend.session-id={session_id}"]}))
        return [await c.show() for c in found]


async def wait_status(node: Node, session_id: str, wanted: set[str], deadline: float = 30.0) -> str:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        async with node.db.connect() as conn:
            status = await conn.scalar(sa.select(t.sessions.c.status).where(t.sessions.c.id == session_id))
        if status in wanted:
            return str(status)
        if loop.time() > end:
            raise TimeoutError(f"session {session_id} stuck in {status}")
        await asyncio.sleep(0.05)


async def test_create_execute_destroy(node: Node) -> None:
    n = name()
    status, body = await node.call("POST", "/session", {"name": n, "image": "python",
                                                        "config": {"resources": {"cpu": "1", "mem": "320m"}}})
    assert status == 201, body
    assert body["status"] == "RUNNING" and body["created"] is True and body["sessionName"] == n
    sid = body["sessionId"]
    [c] = await containers(sid)
    assert c["HostConfig"]["NanoCpus"] == 1_000_000_000
    assert c["HostConfig"]["Memory"] == 320 * 2**20

    st, res = await node.call("POST", f"/session/{n}", {"mode": "query", "code": "x = 6*7\nprint(x)", "runId": None})
    assert st == 200 and res["result"]["status"] == "finished" and res["result"]["exitCode"] == 0
    assert res["result"]["console"] == [["stdout", "42\n"]]
    st, res = await node.call("POST", f"/session/{sid}", {
        "mode": "query", "code": "import sys; print('o'); print('e', file=sys.stderr); x", "runId": "abcd"})
    assert res["result"]["console"] == [["stdout", "o\n"], ["stderr", "e\n"], ["stdout", "42"]]
    assert res["result"]["runId"] == "abcd"
    st, res = await node.call("POST", f"/session/{n}", {"mode": "query", "code": "1/0", "runId": None})
    assert res["result"]["status"] == "finished" and res["result"]["exitCode"] != 0
    assert "ZeroDivisionError" in res["result"]["console"][0][1]

    st, info = await node.call("GET", f"/session/{n}")
    assert st == 200 and info["status"] == "RUNNING" and info["containerId"] == c["Id"]
    assert info["requestedSlots"] == {"cpu": "1", "mem": str(320 * 2**20)}

    st, body = await node.call("DELETE", f"/session/{n}")
    assert st == 200 and "stats" in body
    assert await containers(sid) == []
    async with node.db.connect() as conn:
        row = (await conn.execute(sa.select(t.sessions).where(t.sessions.c.id == sid))).one()
        kstat = await conn.scalar(sa.select(t.kernels.c.status).where(t.kernels.c.session_id == sid))
    assert row.status == "TERMINATED" and kstat == "TERMINATED"
    assert {"PENDING", "SCHEDULED", "PREPARING", "RUNNING", "TERMINATING", "TERMINATED"} <= set(row.status_history)
    assert (await node.call("GET", f"/session/{n}"))[0] == 404


async def test_websocket_execute_matches_original_frames(node: Node) -> None:
    n = name()
    status, body = await node.call("POST", "/session", {"name": n, "image": "python"})
    assert status == 201 and body["status"] == "RUNNING"
    path = f"/stream/session/{body['sessionId']}/execute"
    host = f"{node.client.host}:{node.client.port}"
    signed = sign_request(node.access_key, node.secret_key, "GET", path, host, "application/octet-stream")
    async with node.client.ws_connect(path, headers={
            "Date": signed.date, "Authorization": signed.authorization, "X-BackendAI-Version": "v8.20240315",
            "Host": host}) as ws:
        await ws.send_json({"code": "print(1)", "mode": "query", "options": {}})
        frames = [json.loads(m.data) async for m in ws]
    assert frames == [{"status": "finished", "console": [["stdout", "1\n"]], "exitCode": 0, "options": None,
                       "files": []}]
    assert (await node.call("DELETE", f"/session/{n}"))[0] == 200


async def test_reuse_and_conflict(node: Node) -> None:
    n = name()
    st, first = await node.call("POST", "/session", {"name": n, "image": "python"})
    st, again = await node.call("POST", "/session", {"name": n, "image": "python"})
    assert st == 201 and again["created"] is False and again["sessionId"] == first["sessionId"]
    assert "service_ports" in again
    st, body = await node.call("POST", "/session", {"name": n, "image": "python", "reuseIfExists": False})
    assert st == 400 and body["type"] == PROBS + "session-already-exists"
    assert body["data"]["existingSessionId"] == first["sessionId"]
    assert (await node.call("DELETE", f"/session/{n}"))[0] == 200


async def test_enqueue_only_and_pending_cancel(node: Node) -> None:
    n = name()
    st, body = await node.call("POST", "/session", {"name": n, "image": "python", "enqueueOnly": True})
    assert st == 201 and body == {"sessionId": body["sessionId"], "sessionName": n, "status": "PENDING",
                                  "servicePorts": [], "created": True}
    assert await wait_status(node, body["sessionId"], {"RUNNING"}) == "RUNNING"
    assert (await node.call("DELETE", f"/session/{n}"))[0] == 200

    # a request no agent could ever hold is refused at once, naming the slot
    st, body = await node.call("POST", "/session", {"name": name(), "image": "python", "enqueueOnly": True,
                                                    "config": {"resources": {"cpu": "4096"}}})
    assert st == 400 and body["type"] == PROBS + "invalid-api-params" and "cpu: 4096 > " in body["msg"], body
    # one that does not fit while another session holds every core stays PENDING with the
    # scheduler's reason, and cancels cleanly
    async with node.db.connect() as conn:
        slots = await conn.scalar(sa.select(t.agents.c.available_slots).where(t.agents.c.status == "ALIVE"))
    hog = name()
    st, body = await node.call("POST", "/session", {"name": hog, "image": "python",
                                                    "config": {"resources": {"cpu": slots["cpu"], "mem": "256m"}}})
    assert st == 201 and body["status"] == "RUNNING", body
    big = name()
    st, body = await node.call("POST", "/session", {"name": big, "image": "python", "enqueueOnly": True,
                                                    "config": {"resources": {"cpu": "1", "mem": "256m"}}})
    assert st == 201

    async def noted() -> bool:
        async with node.db.connect() as conn:
            info = await conn.scalar(sa.select(t.sessions.c.status_info).where(t.sessions.c.id == body["sessionId"]))
        return info == "no-available-instances"
    loop = asyncio.get_running_loop()
    end = loop.time() + 20
    while not await noted():
        assert loop.time() < end, "scheduler never looked at the big session"
        await asyncio.sleep(0.05)
    st, res = await node.call("DELETE", f"/session/{big}")
    assert st == 200
    assert await wait_status(node, body["sessionId"], {"CANCELLED"}) == "CANCELLED"
    assert await containers(body["sessionId"]) == []
    assert (await node.call("DELETE", f"/session/{hog}"))[0] == 200


async def test_container_death_ends_session_with_reason(node: Node) -> None:
    n = name()
    st, body = await node.call("POST", "/session", {"name": n, "image": "python"})
    sid = body["sessionId"]
    [c] = await containers(sid)
    async with aiodocker.Docker() as docker:
        await docker.containers.container(c["Id"]).kill()
    assert await wait_status(node, sid, {"TERMINATED", "ERROR"}) in {"TERMINATED", "ERROR"}
    async with node.db.connect() as conn:
        row = (await conn.execute(sa.select(t.sessions).where(t.sessions.c.id == sid))).one()
    assert row.status_info == "self-terminated"
    assert row.status_data["kernel"]["exit_code"] == 137
    loop = asyncio.get_running_loop()
    end = loop.time() + 20
    while await containers(sid):
        assert loop.time() < end, "dead container was not removed"
        await asyncio.sleep(0.05)
    assert (await node.call("GET", f"/session/{n}"))[0] == 404


async def test_bad_requests_leave_nothing_behind(node: Node) -> None:
    sessions_before, kernels_before = await node.rows(t.sessions), await node.rows(t.kernels)
    cases = [
        (b"{oops", 400, "invalid-api-params"),
        (json.dumps({"name": name(), "image": "python", "sessionName": "x"}).encode(), 400, "invalid-api-params"),
        (json.dumps({"image": "python"}).encode(), 400, "invalid-api-params"),
        (json.dumps({"name": "x", "image": "python"}).encode(), 400, "invalid-api-params"),
        (json.dumps({"name": name(), "image": "no/such:image"}).encode(), 404, "object-not-found"),
        (json.dumps({"name": name(), "image": "python", "config": {"resources": {"gpu.device": 1}}}).encode(),
         400, "invalid-api-params"),
        (json.dumps({"name": name(), "image": "python", "config": {"resources": {"mem": "8m"}}}).encode(),
         400, "invalid-api-params"),
        (json.dumps({"name": name(), "image": "python", "config": {"resources": {"mem": "lots"}}}).encode(),
         400, "invalid-api-params"),
        (json.dumps({"name": name(), "image": "python", "config": {"resource_opts": {"shmem": "1g"},
                                                                  "resources": {"mem": "512m"}}}).encode(),
         400, "invalid-api-params"),
        (json.dumps(["not", "an", "object"]).encode(), 400, "invalid-api-params"),
    ]
    for raw, code, kind in cases:
        st, body = await node.call("POST", "/session", raw=raw)
        assert (st, body["type"]) == (code, PROBS + kind), (raw, body)
    assert (await node.rows(t.sessions), await node.rows(t.kernels)) == (sessions_before, kernels_before)


async def test_policy_limits_are_412_with_no_rows(node: Node) -> None:
    keys = await node.add_keypair({"total_resource_slots": {"cpu": "1", "mem": str(2**30)},
                                   "max_containers_per_session": 1})
    before = await node.rows(t.sessions)
    st, body = await node.call("POST", "/session", {"name": name(), "image": "python",
                                                    "config": {"resources": {"cpu": "2"}}}, keys=keys)
    assert st == 412 and body["type"] == PROBS + "quota-exceeded"
    st, body = await node.call("POST", "/session", {"name": name(), "image": "python", "clusterSize": 2}, keys=keys)
    assert st == 412
    assert await node.rows(t.sessions) == before
    # within the policy it works, and the user cannot see the admin's sessions
    n = name()
    st, body = await node.call("POST", "/session", {"name": n, "image": "python",
                                                    "config": {"resources": {"cpu": "1", "mem": "512m"}}}, keys=keys)
    assert st == 201 and body["status"] == "RUNNING"
    assert (await node.call("GET", f"/session/{n}"))[0] == 404  # admin's own namespace
    assert (await node.call("DELETE", f"/session/{n}", keys=keys))[0] == 200


async def test_auth_failures(node: Node) -> None:
    st, body = await node.call("GET", "/session/x", sign=False)
    assert (st, body["msg"]) == (401, "Unauthorized access")
    host = f"{node.client.host}:{node.client.port}"
    signed = sign_request(node.access_key, node.secret_key, "GET", "/session/y", host, "text/plain")
    st, body = await node.call("GET", "/session/x", sign=False, headers={
        "Date": signed.date, "Authorization": signed.authorization})
    assert (st, body["msg"]) == (401, "Signature mismatch")
    st, body = await node.call("GET", "/session/x", keys=("AKIANOSUCHKEY0000000", "nope"))
    assert (st, body["msg"]) == (401, "Access key not found")
    old = sign_request(node.access_key, node.secret_key, "GET", "/session/x", host, "text/plain",
                       now=datetime.now(UTC) - timedelta(minutes=20))
    st, body = await node.call("GET", "/session/x", sign=False, headers={
        "Date": old.date, "Authorization": old.authorization})
    assert (st, body["type"], body["msg"]) == (400, PROBS + "invalid-auth-params", "Date/time sync error")
    st, body = await node.call("GET", "/session/x", headers={"X-BackendAI-Version": "v9.20990101"})
    assert (st, body["msg"]) == (400, "Unsupported API version.")
    st, body = await node.call("GET", "/session/x", sign=False, headers={"Authorization": "Bearer x",
                                                                         "Date": signed.date})
    assert st == 400 and body["type"] == PROBS + "invalid-auth-params"
    st, body = await node.call("GET", "/")
    assert st == 200 and body == {"version": "v8.20240315", "manager": "24.03.11"}


async def test_execute_errors(node: Node) -> None:
    st, body = await node.call("POST", "/session/nope", {"mode": "query", "code": "1", "runId": None})
    assert st == 404 and body["title"] == "No such session."
    n = name()
    await node.call("POST", "/session", {"name": n, "image": "python"})
    st, body = await node.call("POST", f"/session/{n}", {"mode": "dance", "code": "1", "runId": None})
    assert st == 400 and "mode" in body["data"]
    st, body = await node.call("POST", f"/session/{n}", {"mode": "continue", "code": "", "runId": None})
    assert st == 400
    assert (await node.call("DELETE", f"/session/{n}"))[0] == 200


async def test_lifecycle_events_are_published_on_redis(node: Node) -> None:
    import redis.asyncio as aioredis

    from bai.common.events import BROADCAST_CHANNEL, REDIS_DB_STREAM, STREAM_KEY

    host, _, port = node.redis_addr.rpartition(":")
    redis = aioredis.Redis(host=host, port=int(port), db=REDIS_DB_STREAM)
    pubsub = redis.pubsub()
    await pubsub.subscribe(BROADCAST_CHANNEL)
    n = name()
    st, body = await node.call("POST", "/session", {"name": n, "image": "python"})
    sid = body["sessionId"]
    assert (await node.call("DELETE", f"/session/{n}"))[0] == 200
    seen: list[str] = []
    kernel_args: list[dict] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while "session_terminated" not in seen and loop.time() < end:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
        if msg:
            payload = json.loads(msg["data"])
            if payload["args"]["sessionId"] == sid:
                assert payload["args"]["sessionName"] == n and payload["args"]["ownerAccessKey"] == node.access_key
                seen.append(payload["name"])
                if payload["name"].startswith("kernel_"):
                    kernel_args.append(payload["args"])
    assert [e for e in seen if e.startswith("session_")] == [
        "session_enqueued", "session_scheduled", "session_started", "session_terminating", "session_terminated"]
    # kernel-level changes go on the same channel, each before the session change it leads to
    assert seen == ["session_enqueued", "session_scheduled", "kernel_started", "session_started",
                    "session_terminating", "kernel_terminating", "kernel_terminated", "session_terminated"]
    assert {a["kernelId"] for a in kernel_args} == {kernel_args[0]["kernelId"]}
    assert [(a["clusterRole"], a["clusterIdx"]) for a in kernel_args] == [("main", 1)] * 3
    assert [a["exitCode"] for a in kernel_args][:2] == [None, -1]
    # the agent's kernel events went through the stream the managers consume
    entries = await redis.xrange(STREAM_KEY)
    kernel_events = [e[1][b"name"].decode() for e in entries if sid.encode() in e[1][b"args"]]
    assert kernel_events == ["kernel_creating", "kernel_started", "kernel_terminated"]
    await pubsub.aclose()
    await redis.aclose()


async def test_rate_limit_headers_and_429(node: Node) -> None:
    st, _ = await node.call("GET", "/")
    assert node.last_headers["Server"] == "BackendAI"
    assert (node.last_headers["X-RateLimit-Limit"], node.last_headers["X-RateLimit-Window"]) == ("1000", "900")
    keys = await node.add_keypair({}, rate_limit=3)
    remaining = []
    for _ in range(3):
        st, body = await node.call("GET", "/auth/test", keys=keys)
        assert st == 200, body
        remaining.append(node.last_headers["X-RateLimit-Remaining"])
    assert remaining == ["2", "1", "0"] and node.last_headers["X-RateLimit-Limit"] == "3"
    st, body = await node.call("GET", "/auth/test", keys=keys)
    assert st == 429 and body["type"] == PROBS + "rate-limit-exceeded"
    # other keypairs are not affected
    assert (await node.call("GET", "/auth/test"))[0] == 200


async def test_sync_closes_sessions_whose_kernel_the_agent_lost(node: Node) -> None:
    """A RUNNING kernel its agent does not know (its container vanished while the agent was
    away) is found by the periodic sync, and its session ends with the reason."""
    import uuid

    from bai.manager.api.keys import CTX
    from bai.manager.services.lifecycle import LifecycleHandler, sync_with_agents
    from bai.manager.store import sessions as store

    n = name()
    st, body = await node.call("POST", "/session", {"name": n, "image": "python"})
    live_id = body["sessionId"]
    async with node.db.begin() as conn:
        row = (await conn.execute(sa.select(t.sessions).where(t.sessions.c.id == live_id))).one()
        kernel = (await conn.execute(sa.select(t.kernels).where(t.kernels.c.session_id == live_id))).one()
        ghost = uuid.uuid4()
        session = {c: getattr(row, c) for c in ("domain_name", "group_id", "user_uuid", "access_key", "image",
                                               "architecture", "scaling_group_name", "requested_slots")}
        await store.insert_session(conn, {**session, "id": ghost, "name": name()}, [{
            "id": uuid.uuid4(), "session_id": ghost, "domain_name": row.domain_name, "group_id": row.group_id,
            "user_uuid": row.user_uuid, "access_key": row.access_key, "image": row.image,
            "agent": kernel.agent, "agent_addr": kernel.agent_addr, "requested_slots": kernel.requested_slots}])
        past = datetime.now(UTC) - timedelta(minutes=5)
        await conn.execute(t.sessions.update().where(t.sessions.c.id == ghost).values(status="RUNNING"))
        await conn.execute(t.kernels.update().where(t.kernels.c.session_id.in_([ghost, live_id]))
                           .values(status="RUNNING", status_changed=past))
    app = node.client.app
    handler = LifecycleHandler(app[CTX])
    assert await sync_with_agents(app[CTX], handler) == 1
    async with node.db.connect() as conn:
        ghost_row = (await conn.execute(sa.select(t.sessions).where(t.sessions.c.id == ghost))).one()
        live_status = await conn.scalar(sa.select(t.sessions.c.status).where(t.sessions.c.id == live_id))
    assert (ghost_row.status, ghost_row.status_info) == ("TERMINATED", "container-not-found")
    assert live_status == "RUNNING"  # the agent still has that one
    assert (await node.call("DELETE", f"/session/{n}"))[0] == 200
