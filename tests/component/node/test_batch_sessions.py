"""Batch sessions, logs kept after the end, restart and query counting, through the real manager
and agent, the real Docker engine and the real kernel image."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bai.common.auth import sign_request
from bai.manager.api.keys import CTX
from bai.manager.services.lifecycle import sweep_stuck_sessions
from bai.manager.store import tables as t

from .conftest import Node
from .test_events import SESSION_KEYS, sse
from .test_sessions import containers, wait_status

END_EVENTS = ["session_terminating", "kernel_terminating", "kernel_terminated", "session_terminated"]


def name() -> str:
    return f"b-{secrets.token_hex(5)}"


async def create_batch(node: Node, n: str, command: str) -> str:
    st, body = await node.call("POST", "/session", {"name": n, "image": "python", "type": "batch",
                                                    "startupCommand": command})
    assert st == 201, body
    return str(body["sessionId"])


async def results(node: Node, sid: str) -> tuple[str, list[str]]:
    async with node.db.connect() as conn:
        session = await conn.scalar(sa.select(t.sessions.c.result).where(t.sessions.c.id == sid))
        kernels = (await conn.execute(sa.select(t.kernels.c.result).where(t.kernels.c.session_id == sid))).scalars()
        return str(session), [str(k) for k in kernels]


async def kept_logs(node: Node, ref: str, wanted: str, deadline: float = 20.0) -> str:
    """GET /session/{ref}/logs until it holds ``wanted`` (the log is kept by the handler of the
    agent's kernel_terminated, which may come a moment after the session is closed)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        st, body = await node.call("GET", f"/session/{ref}/logs")
        assert st == 200, body
        text = str(body["result"]["logs"])
        if wanted in text:
            return text
        if loop.time() > end:
            raise TimeoutError(f"logs of {ref} never held {wanted!r}: {text!r}")
        await asyncio.sleep(0.1)


async def test_batch_success_ends_by_itself_with_its_logs_kept(node: Node) -> None:
    n = name()
    async with sse(node, f"/events/session?sessionName={n}&scope=*") as stream:
        sid = await create_batch(node, n, "echo to-stdout; echo to-stderr >&2; echo \"cwd=$(pwd) uid=$(id -u) "
                                          "session=$BACKENDAI_SESSION_NAME\"; exit 0")
        got = await stream.until("session_terminated", n)
    names = [e for e, _ in got]
    assert names[names.index("session_started") + 1:] == ["session_success", *END_EVENTS], names
    success = dict(got)["session_success"]
    assert list(success) == SESSION_KEYS
    assert (success["exitCode"], success["reason"], success["sessionId"]) == (0, "task-finished", sid)
    assert dict(got)["session_terminated"]["reason"] == "task-finished"
    assert await wait_status(node, sid, {"TERMINATED"}) == "TERMINATED"
    assert await results(node, sid) == ("SUCCESS", ["SUCCESS"])
    assert await containers(sid) == []
    logs = await kept_logs(node, n, "to-stderr")
    assert "to-stdout\n" in logs and "to-stderr\n" in logs
    assert f"cwd=/home/work uid=1000 session={n}" in logs
    # The session's info says how it ended.
    st, body = await node.call("GET", f"/session/{sid}/logs")
    assert st == 200 and "to-stdout" in body["result"]["logs"]


async def test_batch_failure_carries_the_exit_code(node: Node) -> None:
    n = name()
    async with sse(node, f"/events/session?sessionName={n}&scope=session") as stream:
        sid = await create_batch(node, n, "echo failing; exit 7")
        got = await stream.until("session_terminated", n)
    names = [e for e, _ in got]
    assert "session_success" not in names and names[-3:] == ["session_failure", "session_terminating",
                                                             "session_terminated"], names
    failure = dict(got)["session_failure"]
    assert (failure["exitCode"], failure["reason"]) == (7, "task-failed")
    assert await wait_status(node, sid, {"TERMINATED"}) == "TERMINATED"
    assert await results(node, sid) == ("FAILURE", ["FAILURE"])
    assert "failing" in await kept_logs(node, sid, "failing")


async def test_destroyed_batch_session_gets_no_result(node: Node) -> None:
    n = name()
    async with sse(node, f"/events/session?sessionName={n}&scope=*") as stream:
        sid = await create_batch(node, n, "echo long-task-started; sleep 600")
        await wait_status(node, sid, {"RUNNING"})
        # Live logs while it runs, from the agent.
        await kept_logs(node, n, "long-task-started")
        st, _ = await node.call("DELETE", f"/session/{n}")
        assert st == 200
        got = await stream.until("session_terminated", n)
    names = [e for e, _ in got]
    assert "session_success" not in names and "session_failure" not in names, names
    assert dict(got)["session_terminated"]["reason"] == "user-requested"
    assert await results(node, sid) == ("UNDEFINED", ["UNDEFINED"])
    # Still readable once the container is gone.
    assert await containers(sid) == []
    assert "long-task-started" in await kept_logs(node, sid, "long-task-started")


async def execute(node: Node, ref: str, code: str) -> dict[str, Any]:
    st, body = await node.call("POST", f"/session/{ref}", {"mode": "query", "code": code, "runId": None})
    assert st == 200, body
    return dict(body["result"])


async def test_restart_resets_state_and_keeps_the_container(node: Node) -> None:
    n = name()
    st, body = await node.call("POST", "/session", {"name": n, "image": "python"})
    assert st == 201 and body["status"] == "RUNNING", body
    sid = body["sessionId"]
    [before] = await containers(sid)
    assert (await execute(node, n, "x = 42; print(x)"))["console"] == [["stdout", "42\n"]]

    st, body = await node.call("PATCH", f"/session/{n}")
    assert st == 204, body
    st, info = await node.call("GET", f"/session/{n}")
    assert st == 200 and info["status"] == "RUNNING" and info["containerId"] == before["Id"]
    [after] = await containers(sid)
    assert after["Id"] == before["Id"] and after["State"]["Running"]
    gone = await execute(node, n, "print(x)")
    assert gone["exitCode"] != 0 and "NameError" in "".join(str(data) for _, data in gone["console"])
    assert (await execute(node, n, "print('alive')"))["console"] == [["stdout", "alive\n"]]

    assert (await node.call("PATCH", "/session/no-such-session"))[0] == 404
    assert (await node.call("DELETE", f"/session/{n}"))[0] == 200
    st, body = await node.call("PATCH", f"/session/{n}")
    assert st == 404, body


async def test_query_counter_counts_each_execute(node: Node) -> None:
    n = name()
    st, body = await node.call("POST", "/session", {"name": n, "image": "python"})
    assert st == 201 and body["status"] == "RUNNING", body
    sid = body["sessionId"]
    for i in range(4):
        assert (await execute(node, n, f"print({i})"))["exitCode"] == 0
    # One run over the websocket counts once as well.
    path = f"/stream/session/{sid}/execute"
    host = f"{node.client.host}:{node.client.port}"
    signed = sign_request(node.access_key, node.secret_key, "GET", path, host, "application/octet-stream")
    async with node.client.ws_connect(path, headers={
            "Date": signed.date, "Authorization": signed.authorization, "X-BackendAI-Version": "v8.20240315",
            "Host": host}) as ws:
        await ws.send_json({"code": "import time; time.sleep(0.5); print('ws')", "mode": "query", "options": {}})
        frames = [json.loads(m.data) async for m in ws]
    assert frames[-1]["status"] == "finished" and frames[-1]["exitCode"] == 0
    st, info = await node.call("GET", f"/session/{n}")
    assert st == 200 and info["numQueriesExecuted"] == 5
    # Written to the database off the request path, within about a second.
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while True:
        async with node.db.connect() as conn:
            stored = await conn.scalar(sa.select(t.sessions.c.num_queries).where(t.sessions.c.id == sid))
        if stored == 5 or loop.time() > end:
            break
        await asyncio.sleep(0.1)
    assert stored == 5
    st, info = await node.call("GET", f"/session/{n}")
    assert info["numQueriesExecuted"] == 5  # not counted twice once written
    assert (await node.call("DELETE", f"/session/{n}"))[0] == 200


async def test_session_left_restarting_is_put_back_to_running_by_the_sweep(node: Node) -> None:
    n = name()
    st, body = await node.call("POST", "/session", {"name": n, "image": "python"})
    assert st == 201 and body["status"] == "RUNNING", body
    sid = body["sessionId"]
    # As a manager that stopped between the two halves of a restart leaves it, long ago.
    past = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    async with node.db.begin() as conn:
        await conn.execute(t.sessions.update().where(t.sessions.c.id == sid).values(
            status="RESTARTING", status_history=sa.func.jsonb_set(
                t.sessions.c.status_history, sa.text("'{RESTARTING}'"), sa.func.to_jsonb(past))))
        await conn.execute(t.kernels.update().where(t.kernels.c.session_id == sid).values(status="RESTARTING"))
    assert (await node.call("POST", f"/session/{n}", {"mode": "query", "code": "1", "runId": None}))[0] == 400
    assert (await node.call("PATCH", f"/session/{n}"))[0] == 400  # not running: no second restart
    assert await sweep_stuck_sessions(node.client.app[CTX]) == []  # recovered, not failed
    assert await wait_status(node, sid, {"RUNNING"}) == "RUNNING"
    assert (await execute(node, n, "print('back')"))["console"] == [["stdout", "back\n"]]
    assert (await node.call("DELETE", f"/session/{n}"))[0] == 200


async def test_kept_logs_are_read_by_the_owner_and_admins_only(node: Node) -> None:
    owner, stranger = await node.add_keypair({}), await node.add_keypair({})
    n = name()
    st, body = await node.call("POST", "/session", {"name": n, "image": "python", "type": "batch",
                                                    "startupCommand": "echo owners-secret"}, keys=owner)
    assert st == 201, body
    sid = body["sessionId"]
    await wait_status(node, sid, {"TERMINATED"})
    loop = asyncio.get_running_loop()
    end = loop.time() + 20
    while True:  # the owner reads it (once the kernel_terminated handler has kept it)
        st, body = await node.call("GET", f"/session/{sid}/logs", keys=owner)
        assert st == 200, body
        if "owners-secret" in body["result"]["logs"] or loop.time() > end:
            break
        await asyncio.sleep(0.1)
    assert "owners-secret" in body["result"]["logs"]
    st, body = await node.call("GET", f"/session/{sid}/logs", keys=stranger)
    assert st == 404, body  # someone else's session does not exist for them
    st, body = await node.call("GET", f"/session/{sid}/logs?owner_access_key={owner[0]}", keys=stranger)
    assert st == 403, body
    st, body = await node.call("GET", f"/session/{sid}/logs?owner_access_key={owner[0]}")  # a superadmin
    assert st == 200 and "owners-secret" in body["result"]["logs"], body
