"""GET /events/session: the Server-Sent Events stream of session and kernel lifecycle changes,
read as the SDK reads it (signed GET, no Content-Type), through the real manager and agent."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from bai.common.auth import API_VERSION, sign_request
from bai.manager.api import events

from .conftest import Node

PROBS = "https://api.backend.ai/probs/"
SESSION_KEYS = ["reason", "sessionName", "ownerAccessKey", "sessionId", "exitCode"]
KERNEL_KEYS = [*SESSION_KEYS, "kernelId", "clusterRole", "clusterIdx"]
Record = tuple[str, Any]  # (event name, parsed data); comments come as (":", text)


def name() -> str:
    return f"e-{secrets.token_hex(5)}"


class Stream:
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.skipped: list[Record] = []  # records of other sessions that until() passed over

    async def next(self, deadline: float) -> Record | None:
        """The next record or comment; None at the end of the stream. Raises TimeoutError."""
        event, data = "message", []
        async with asyncio.timeout(deadline):
            while True:
                raw = await self.resp.content.readline()
                if not raw:
                    return None
                line = raw.decode().rstrip("\n")
                if line.startswith(":"):
                    return (":", line[1:].strip())
                if line == "":
                    if data:
                        return (event, json.loads("\n".join(data)))
                    continue
                field, _, value = line.partition(": ")
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)

    async def until(self, last: str, session_name: str, deadline: float = 60.0) -> list[Record]:
        """Records of one session up to (and including) the event ``last``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        got: list[Record] = []
        while True:
            rec = await self.next(max(0.0, end - loop.time()))
            assert rec is not None, f"stream ended early after {got}"
            if rec[0] == ":":
                continue
            if rec[1]["sessionName"] != session_name:
                self.skipped.append(rec)
                continue
            got.append(rec)
            if rec[0] == last:
                return got


def _signed(node: Node, path: str, keys: tuple[str, str] | None = None) -> dict[str, str]:
    host = f"{node.client.host}:{node.client.port}"
    ak, sk = keys or (node.access_key, node.secret_key)
    # The SDK sends no Content-Type on SSE; the manager then sees application/octet-stream.
    signed = sign_request(ak, sk, "GET", path, host, "application/octet-stream")
    return {"X-BackendAI-Version": API_VERSION, "Host": host, "Date": signed.date,
            "Authorization": signed.authorization}


@asynccontextmanager
async def sse(node: Node, path: str, keys: tuple[str, str] | None = None) -> AsyncIterator[Stream]:
    resp = await node.client.request("GET", path, headers=_signed(node, path, keys))
    try:
        assert resp.status == 200, await resp.text()
        yield Stream(resp)
    finally:
        resp.close()


async def test_stream_carries_session_and_kernel_events(node: Node) -> None:
    n = name()
    async with (sse(node, f"/events/session?sessionName={n}&scope=*") as every,
                sse(node, f"/events/session?name={n}&scope=session") as sessions,
                sse(node, f"/events/session?sessionName={n}&scope=kernel") as kernels,
                sse(node, "/events/session?sessionName=someone-else") as other):
        headers = every.resp.headers
        assert headers["Content-Type"] == "text/event-stream"
        assert (headers["Cache-Control"], headers["X-Accel-Buffering"]) == ("no-cache", "no")
        assert headers["Server"] == "BackendAI" and "Content-Length" not in headers
        st, body = await node.call("POST", "/session", {"name": n, "image": "python"})
        assert st == 201 and body["status"] == "RUNNING", body
        sid = body["sessionId"]
        assert (await node.call("DELETE", f"/session/{n}"))[0] == 200

        got = await every.until("session_terminated", n)
        assert [e for e, _ in got] == [
            "session_enqueued", "session_scheduled", "kernel_started", "session_started",
            "session_terminating", "kernel_terminating", "kernel_terminated", "session_terminated"]
        for ev, data in got:
            assert list(data) == (KERNEL_KEYS if ev.startswith("kernel_") else SESSION_KEYS), ev
            assert (data["sessionName"], data["ownerAccessKey"], data["sessionId"]) == (n, node.access_key, sid)
            if ev.startswith("kernel_"):
                assert (data["clusterRole"], data["clusterIdx"]) == ("main", 1)
        by_name = dict(got)
        assert by_name["kernel_started"]["reason"] == "" and by_name["kernel_started"]["exitCode"] is None
        assert len({d["kernelId"] for e, d in got if e.startswith("kernel_")}) == 1
        for ev in ("session_terminating", "kernel_terminating", "kernel_terminated", "session_terminated"):
            assert by_name[ev]["reason"] == "user-requested", ev
        assert by_name["kernel_terminating"]["exitCode"] == -1
        assert isinstance(by_name["kernel_terminated"]["exitCode"], int)
        assert by_name["session_terminated"]["exitCode"] is None

        assert [e for e, _ in await sessions.until("session_terminated", n)] == [
            e for e, _ in got if e.startswith("session_")]
        assert [e for e, _ in await kernels.until("kernel_terminated", n)] == [
            "kernel_started", "kernel_terminating", "kernel_terminated"]
        assert every.skipped == []
        # a stream for another name saw nothing of it (only pings, if any)
        with pytest.raises(TimeoutError):
            while True:
                rec = await other.next(0.3)
                assert rec is not None and rec[0] == ":", rec


async def test_session_id_filter_and_pings(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "PING_INTERVAL", 0.2)
    n = name()
    st, body = await node.call("POST", "/session", {"name": n, "image": "python"})
    assert st == 201, body
    async with sse(node, f"/events/session?sessionId={body['sessionId']}&sessionName=ignored") as stream:
        assert await stream.next(5) == (":", "ping")
        assert (await node.call("DELETE", f"/session/{n}"))[0] == 200
        got = await stream.until("session_terminated", n)
        assert [e for e, _ in got] == ["session_terminating", "kernel_terminating", "kernel_terminated",
                                       "session_terminated"]


async def test_users_see_only_their_own_sessions(node: Node) -> None:
    user = await node.add_keypair({})
    st, body = await node.call("GET", f"/events/session?ownerAccessKey={node.access_key}", keys=user)
    assert st == 403 and body["type"] == PROBS + "generic-forbidden", body
    st, body = await node.call("GET", f"/events/session?ownerAccessKey={user[0]}&scope=nope", keys=user)
    assert st == 400 and body["type"] == PROBS + "invalid-api-params", body
    # a user's own key is fine; with no name filter it still sees only its own sessions
    n, theirs = name(), name()
    async with sse(node, "/events/session?scope=session", keys=user) as mine, \
            sse(node, f"/events/session?ownerAccessKey={user[0]}&sessionName={theirs}") as watched:
        st, body = await node.call("POST", "/session", {"name": n, "image": "python"})
        assert st == 201 and body["status"] == "RUNNING", body
        st, body = await node.call("POST", "/session", {"name": theirs, "image": "python"}, keys=user)
        assert st == 201 and body["status"] == "RUNNING", body
        assert (await node.call("DELETE", f"/session/{theirs}", keys=user))[0] == 200
        assert (await node.call("DELETE", f"/session/{n}"))[0] == 200
        got = await mine.until("session_terminated", theirs)
        assert [e for e, _ in got] == ["session_enqueued", "session_scheduled", "session_started",
                                       "session_terminating", "session_terminated"]
        assert {d["ownerAccessKey"] for _, d in got} == {user[0]}
        # the superadmin may watch the user's session by name and owner
        got = await watched.until("session_terminated", theirs)
        assert "kernel_started" in [e for e, _ in got]
        assert mine.skipped == []  # the admin's session never reached the user
        with pytest.raises(TimeoutError):
            while True:
                rec = await mine.next(0.5)
                assert rec is not None and rec[0] == ":", rec


@pytest.mark.parametrize("query, status, problem", [
    ("scope=everything", 400, "invalid-api-params"),
    ("sessionId=not-a-uuid", 400, "invalid-api-params"),
    ("name=", 400, "invalid-api-params"),
    ("group=no-such-project", 404, "object-not-found"),
])
async def test_bad_parameters_are_refused_before_streaming(node: Node, query: str, status: int,
                                                          problem: str) -> None:
    path = f"/events/session?{query}"
    resp = await node.client.request("GET", path, headers=_signed(node, path))
    assert resp.status == status
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert (await resp.json(content_type=None))["type"] == PROBS + problem


async def test_streams_end_when_the_client_goes_away(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    # The test server cancels a handler whose client hangs up; web.run_app (production) does not,
    # so turn that off here: the stream itself must notice.
    server = node.client.server.runner.server  # type: ignore[union-attr]
    monkeypatch.setattr(server, "handler_cancellation", False)
    hub = node.client.app[events.EVENT_HUB]
    before = hub.open_streams
    async with sse(node, "/events/session?group=default") as stream:
        assert hub.open_streams == before + 1
        stream.resp.close()
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while hub.open_streams != before:
        assert loop.time() < end, "the server kept the stream of a client that went away"
        await asyncio.sleep(0.05)


# Keep last in this module: it shuts the module's manager down for event streams.
async def test_shutdown_ends_open_streams(node: Node) -> None:
    hub = node.client.app[events.EVENT_HUB]
    async with sse(node, "/events/session") as stream:
        await node.client.app.shutdown()  # what the runner does before it stops serving
        assert await stream.next(10) is None
        assert hub.open_streams == 0
    path = "/events/session"
    resp = await node.client.request("GET", path, headers=_signed(node, path))
    assert resp.status == 503
