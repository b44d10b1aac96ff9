"""The SDK against the fake manager: exact request shapes, signing, version negotiation,
execution loops (REST and websocket), GraphQL listing and error mapping."""

from __future__ import annotations

import json
import re
import socket
from typing import Any

import pytest
from aiohttp import web

from bai.client import session as sess
from bai.client.config import DEFAULT_IMAGE_ARCH, APIConfig
from bai.client.exceptions import BackendAPIError, BackendClientError
from bai.client.request import APISession

from .fake_manager import ACCESS_KEY, FakeManager, problem
from .wire_bodies import (
    RUN_CREATE_28,
    RUN_CREATE_28_LENGTH,
    SESSION_CREATE_20,
    SESSION_CREATE_20_LENGTH,
    SESSION_CREATE_26,
    SESSION_CREATE_26_LENGTH,
    SESSION_LIST_27,
    SESSION_LIST_27_LENGTH,
    WS_FIRST_FRAME_22,
    create_body,
)

ISO_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


def api_session(fake: FakeManager, **overrides: Any) -> APISession:
    return APISession(APIConfig.from_env(dotenv=False, **overrides))


async def test_version_probe_is_unsigned_and_negotiates(fake: FakeManager) -> None:
    fake.server_version = "v7.20230615"
    async with api_session(fake) as api:
        assert api.server_info == {"version": "v7.20230615", "manager": "24.03.11"}
        assert api.api_version == (7, "20230615")
        with pytest.raises(BackendAPIError):
            await sess.get_info(api, "nosuch")
    probe, info = fake.requests
    assert (probe.method, probe.path_qs) == ("GET", "/")
    assert "Authorization" not in probe.headers
    assert "X-BackendAI-Version" not in probe.headers
    assert "Date" not in probe.headers
    assert probe.headers["User-Agent"].startswith("Backend.AI Client for Python")
    assert info.headers["X-BackendAI-Version"] == "v7.20230615"


async def test_newer_server_keeps_client_version(fake: FakeManager) -> None:
    fake.server_version = "v9.20250101"
    with pytest.warns(UserWarning, match="higher than the client"):
        async with api_session(fake) as api:
            assert api.api_version == (8, "20240315")


async def test_signed_headers(fake: FakeManager) -> None:
    async with api_session(fake) as api:
        created = await sess.create(api, "python", name="anchor-s1")
        await sess.get_info(api, "anchor-s1")
        await sess.destroy(api, "anchor-s1")
    _, post, get, delete = fake.requests
    for rec in (post, get, delete):
        h = rec.headers
        assert h["X-BackendAI-Domain"] == "default"
        assert h["X-BackendAI-Version"] == "v8.20240315"
        assert ISO_DATE.match(h["Date"]), h["Date"]
        assert h["Authorization"].startswith(
            f"BackendAI signMethod=HMAC-SHA256, credential={ACCESS_KEY}:"
        )
        assert h["Host"] == f"127.0.0.1:{fake.port}"
    assert post.headers["Content-Type"] == "application/json"
    assert get.headers["Content-Type"] == "text/plain" and get.body == b""
    assert delete.headers["Content-Type"] == "text/plain"
    assert (delete.method, delete.path_qs) == ("DELETE", "/session/anchor-s1")
    assert created.created and created.status == "RUNNING"


async def test_create_body_matches_wire_20(fake: FakeManager) -> None:
    async with api_session(fake) as api:
        created = await sess.create(
            api, "python", name="anchor-s1", dependencies=[], architecture="x86_64"
        )
    post = fake.recorded("POST", "/session")[0]
    assert post.body == json.dumps(SESSION_CREATE_20).encode()
    assert len(post.body) == SESSION_CREATE_20_LENGTH
    assert created.name == "anchor-s1"
    assert [p["name"] for p in created.service_ports] == ["sshd", "ttyd"]


async def test_create_body_matches_wire_26_enqueue_only(fake: FakeManager) -> None:
    async with api_session(fake) as api:
        created = await sess.create(
            api, "python", name="anchor-s2", dependencies=[], enqueue_only=True, architecture="x86_64"
        )
    post = fake.recorded("POST", "/session")[0]
    assert post.body == json.dumps(SESSION_CREATE_26).encode()
    assert len(post.body) == SESSION_CREATE_26_LENGTH
    assert created.status == "PENDING" and created.service_ports == []


async def test_create_body_matches_wire_28_run(fake: FakeManager) -> None:
    async with api_session(fake) as api:
        await sess.create(
            api, "python", name="pysdk-fba3133648", dependencies=None, preopen_ports=[],
            architecture="x86_64",
        )
    post = fake.recorded("POST", "/session")[0]
    assert post.body == json.dumps(RUN_CREATE_28).encode()
    assert len(post.body) == RUN_CREATE_28_LENGTH


async def test_create_defaults_and_reuse(fake: FakeManager) -> None:
    async with api_session(fake) as api:
        first = await sess.create(api, "python")
        again = await sess.create(api, "python", name=first.name)
        with pytest.raises(BackendAPIError) as exc_info:
            await sess.create(api, "python", name=first.name, no_reuse=True)
    assert re.fullmatch(r"pysdk-[0-9a-f]{10}", first.name)
    body = fake.recorded("POST", "/session")[0].json()
    assert body == create_body(first.name, dependencies=None, architecture=DEFAULT_IMAGE_ARCH)
    assert first.created is True
    assert again.created is False and again.session_id == first.session_id
    assert again.service_ports[0]["container_ports"] == [2200]  # reuse path: snake_case
    assert exc_info.value.status == 400
    assert exc_info.value.data["data"]["existingSessionId"] == first.session_id


async def test_create_options_shape(fake: FakeManager) -> None:
    async with api_session(fake) as api:
        await sess.create(
            api, "python", name="opts-1", resources=sess.parse_resources(["cpu=2", "mem=512"]),
            resource_opts={"shmem": "64m"}, environ={"A": "1"}, scaling_group="default",
            cluster_size=2, cluster_mode="multi-node", tag="t", group="proj", domain="dom",
            preopen_ports=[8080], assign_agent=["i-1"], owner_access_key="AKOTHER",
            startup_command="ls", type_="batch", starts_at="1h", max_wait=5, callback_url="http://cb",
            bootstrap_script="echo hi\n",
        )
    body = fake.recorded("POST", "/session")[0].json()
    assert body["config"] == {
        "mounts": [],
        "environ": {"A": "1"},
        "resources": {"cpu": "2", "mem": "512m"},
        "resource_opts": {"shmem": "64m"},
        "scalingGroup": "default",
        "mount_map": {},
        "mount_options": {},
        "preopen_ports": [8080],
        "agentList": ["i-1"],
    }
    assert body["clusterSize"] == 2 and body["clusterMode"] == "multi-node"
    assert body["group"] == "proj" and body["domain"] == "dom" and body["tag"] == "t"
    assert body["owner_access_key"] == "AKOTHER" and body["startupCommand"] == "ls"
    assert body["type"] == "batch" and body["starts_at"] == "1h" and body["maxWaitSeconds"] == 5
    assert body["callback_url"] == "http://cb" and body["bootstrap_script"] == "echo hi\n"


def test_parse_resources_mem_defaults_to_mib() -> None:
    assert sess.parse_resources(["mem=512"]) == {"mem": "512m"}
    assert sess.parse_resources(["mem=1.5"]) == {"mem": "1.5m"}
    assert sess.parse_resources(["mem=4g", "cpu=2"]) == {"mem": "4g", "cpu": "2"}
    assert sess.parse_resources(["cuda.shares=0.5"]) == {"cuda.shares": "0.5"}
    with pytest.raises(ValueError):
        sess.parse_resources(["mem"])
    assert sess.parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(ValueError):
        sess.parse_env(["NOVALUE"])


async def test_info_and_destroy(fake: FakeManager) -> None:
    async with api_session(fake) as api:
        await sess.create(api, "python", name="anchor-s3")
        info = await sess.get_info(api, "anchor-s3")
        ret = await sess.destroy(api, "anchor-s3", forced=True, recursive=True, owner_access_key="AK2")
    assert info["status"] == "RUNNING" and info["image"] == "python"
    assert ret == {"stats": {"status": "terminated", "cpu_used": 120}}
    delete = fake.recorded("DELETE")[0]
    assert delete.path_qs == "/session/anchor-s3?owner_access_key=AK2&forced=true&recursive=true"


async def test_error_mapping_not_found(fake: FakeManager) -> None:
    async with api_session(fake) as api:
        with pytest.raises(BackendAPIError) as exc_info:
            await sess.get_info(api, "no-such-session")
    e = exc_info.value
    assert e.status == 404 and e.reason == "Not Found"
    assert e.data == {
        "type": "https://api.backend.ai/probs/object-not-found",
        "title": "No such session.",
        "msg": "Session (id=no-such-session) does not exist.",
    }
    assert e.type_slug == "object-not-found"


async def test_error_mapping_signature_mismatch(fake: FakeManager) -> None:
    async with api_session(fake, secret_key="wrong-secret") as api:
        with pytest.raises(BackendAPIError) as exc_info:
            await sess.get_info(api, "x")
    assert exc_info.value.status == 401
    assert exc_info.value.data["title"] == "Credential/signature mismatch."
    assert exc_info.value.data["msg"] == "Signature mismatch"


async def test_error_mapping_non_json_body(fake: FakeManager) -> None:
    fake.fail_next[("GET", "/session/x")] = web.Response(status=502, text="Bad Gateway from proxy")
    async with api_session(fake) as api:
        with pytest.raises(BackendAPIError) as exc_info:
            await sess.get_info(api, "x")
    assert exc_info.value.status == 502
    assert exc_info.value.data["content"] == "Bad Gateway from proxy"


async def test_invalid_params_problem(fake: FakeManager) -> None:
    fake.fail_next[("POST", "/session")] = problem(
        400, "invalid-api-params", "Missing or invalid API parameters.", "Input validation error",
        {"image": "is required"},
    )
    async with api_session(fake) as api:
        with pytest.raises(BackendAPIError) as exc_info:
            await sess.create(api, "python", name="bad-1")
    assert exc_info.value.data["data"] == {"image": "is required"}


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def test_connection_refused_names_the_endpoint(fake: FakeManager) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(BackendClientError) as exc_info:
        async with APISession(APIConfig.from_env(dotenv=False, endpoint=endpoint)):
            pass
    assert str(exc_info.value).startswith(f"Cannot connect to the API endpoint {endpoint}")


async def test_failover_to_the_next_endpoint(fake: FakeManager) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}"
    cfg = APIConfig.from_env(dotenv=False, endpoint=f"{dead},{fake.endpoint}", shuffle=False)
    async with APISession(cfg) as api:
        assert api.config.endpoint == fake.endpoint
        await sess.create(api, "python", name="failover")
    assert fake.recorded("POST", "/session")


async def test_rest_execute_simple(fake: FakeManager) -> None:
    async with api_session(fake) as api:
        await sess.create(api, "python", name="anchor-s1")
        result = await sess.execute(api, "anchor-s1", "print(1)")
    post = fake.recorded("POST", "/session/anchor-s1")[0]
    body = post.json()
    assert list(body) == ["mode", "code", "runId"]
    assert body["mode"] == "query" and body["code"] == "print(1)"
    assert re.fullmatch(r"[0-9a-f]{16}", body["runId"])
    assert result.status == "finished" and result.exit_code == 0 and result.stdout == "1\n"
    assert result.run_id == body["runId"]


async def test_rest_execute_continue_loop(fake: FakeManager) -> None:
    seen: list[str] = []
    async with api_session(fake) as api:
        await sess.create(api, "python", name="loop-1")
        result = await sess.execute(api, "loop-1", "multi", on_result=lambda r: seen.append(r["status"]))
    bodies = [r.json() for r in fake.recorded("POST", "/session/loop-1")]
    assert [b["mode"] for b in bodies] == ["query", "continue", "continue"]
    assert [b["code"] for b in bodies] == ["multi", "", ""]
    assert len({b["runId"] for b in bodies}) == 1
    assert seen == ["continued", "continued", "finished"]
    assert result.stdout == "tick 1\ntick 2\ndone\n"
    assert result.stderr == "warn\n"
    assert result.console[1] == ["stderr", "warn\n"]


async def test_rest_execute_input(fake: FakeManager) -> None:
    async def answer(options: dict) -> str:
        assert options == {"is_password": False}
        return "bob"

    async with api_session(fake) as api:
        await sess.create(api, "python", name="input-1")
        result = await sess.execute(api, "input-1", "input-test", read_input=answer)
        with pytest.raises(BackendClientError, match="waiting for user input"):
            await sess.execute(api, "input-1", "input-test")
    bodies = [r.json() for r in fake.recorded("POST", "/session/input-1")][:2]
    assert [(b["mode"], b["code"]) for b in bodies] == [("query", "input-test"), ("input", "bob")]
    assert result.stdout == "name? hello, bob\n"


async def test_stream_execute(fake: FakeManager) -> None:
    async with api_session(fake) as api:
        created = await sess.create(api, "python", name="anchor-s1")
        result = await sess.stream_execute(api, created.session_id or "", "print(1)")
    ws = fake.recorded("GET", "/stream/")[0]
    assert ws.path_qs == f"/stream/session/{created.session_id}/execute"
    assert ws.ws_frames == [WS_FIRST_FRAME_22]
    assert "Content-Type" not in ws.headers  # signed as application/octet-stream
    assert ws.headers["Authorization"].startswith("BackendAI signMethod=HMAC-SHA256")
    assert result.status == "finished" and result.exit_code == 0 and result.stdout == "1\n"


async def test_stream_execute_multi_and_input(fake: FakeManager) -> None:
    statuses: list[str] = []
    async with api_session(fake) as api:
        created = await sess.create(api, "python", name="ws-multi")
        sid = created.session_id or ""
        multi = await sess.stream_execute(api, sid, "multi", on_result=lambda r: statuses.append(r["status"]))
        answered = await sess.stream_execute(api, sid, "input-test", read_input=lambda o: "alice")
    assert statuses == ["continued", "continued", "finished"]
    assert multi.stdout == "tick 1\ntick 2\ndone\n"
    assert answered.stdout == "name? hello, alice\n"
    assert fake.recorded("GET", "/stream/")[1].ws_frames[1] == "alice"


async def test_stream_execute_errors(fake: FakeManager) -> None:
    async with api_session(fake) as api:
        created = await sess.create(api, "python", name="ws-err")
        sid = created.session_id or ""
        with pytest.raises(BackendClientError, match="kernel failure"):
            await sess.stream_execute(api, sid, "boom")
        with pytest.raises(BackendClientError, match="closed before the run finished"):
            await sess.stream_execute(api, sid, "hangup")
        with pytest.raises(BackendAPIError) as exc_info:
            await sess.stream_execute(api, "no-such-session", "print(1)")
    assert exc_info.value.status == 404


async def test_list_sessions_matches_wire_27(fake: FakeManager) -> None:
    async with api_session(fake) as api:
        await sess.create(api, "python", name="anchor-s1")
        page = await sess.list_sessions(api)
    gql = fake.recorded("POST", "/admin/gql")[0]
    assert gql.body == json.dumps(SESSION_LIST_27).encode()
    assert len(gql.body) == SESSION_LIST_27_LENGTH
    assert page.total_count == 1 and page.items[0]["name"] == "anchor-s1"


async def test_iter_sessions_pages(fake: FakeManager) -> None:
    async with api_session(fake) as api:
        for i in range(5):
            await sess.create(api, "python", name=f"sess-{i}")
        items, total = await sess.iter_sessions(api, page_size=2)
        limited, _ = await sess.iter_sessions(api, page_size=2, max_items=3, status=sess.ALL_STATUSES)
    assert total == 5 and [i["name"] for i in items] == [f"sess-{i}" for i in range(5)]
    assert [i["name"] for i in limited] == ["sess-0", "sess-1", "sess-2"]
    offsets = [r.json()["variables"]["offset"] for r in fake.recorded("POST", "/admin/gql")]
    assert offsets == [0, 2, 4, 0, 2]


async def test_graphql_errors_become_api_errors(fake: FakeManager) -> None:
    async with api_session(fake) as api:
        with pytest.raises(BackendAPIError) as exc_info:
            await api.gql("query { nothing }")
    assert exc_info.value.status == 400
    assert exc_info.value.data["type"] == "https://api.backend.ai/probs/graphql-error"
    assert exc_info.value.data["data"][0]["message"] == "Unknown query"
    assert fake.recorded("POST", "/admin/gql")[0].json() == {"query": "query { nothing }", "variables": {}}
