"""The dummy backend (``[agent] backend = "dummy"``) on its own: its configuration, and the events
it produces on a real Redis stream for create, refuse, execute and destroy. (On a whole node, with
the manager: tests/component/node/test_multi_node.py.)"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from bai.agent.config import AgentConfig
from bai.agent.dummy import DUMMY_OUTPUT, DummyAgent
from bai.common.agent_rpc import (
    CreateKernelsRequest,
    DestroyKernelRequest,
    ExecuteRequest,
    GetLogsRequest,
    InvalidInput,
    KernelNotFound,
)
from bai.common.events import STREAM_KEY, EventProducer
from bai.common.redis import open_redis
from tests.fixtures.halfstack import HalfStack, dedicated_redis

GiB = 2**30


def config(**dummy: Any) -> AgentConfig:
    return AgentConfig.model_validate({"agent": {"id": "i-dummy-test", "backend": "dummy"}, "dummy": dummy})


def test_docker_is_the_default_backend() -> None:
    assert AgentConfig.model_validate({}).agent.backend == "docker"


def test_dummy_slots_are_parsed() -> None:
    cfg = config(slots={"cpu": 4, "mem": "8g", "cuda.device": 2, "cuda.mem": "80g", "cuda.shares": "1.5"})
    assert cfg.dummy.capacity() == {"cpu": Decimal(4), "mem": Decimal(8 * GiB), "cuda.device": Decimal(2),
                                    "cuda.mem": Decimal(80 * GiB), "cuda.shares": Decimal("1.5")}
    assert config().dummy.capacity() == {"cpu": Decimal(8), "mem": Decimal(16 * GiB)}


@pytest.mark.parametrize("slots", [
    {"cpu": 4}, {"mem": "1g"}, {"cpu": -1, "mem": "1g"}, {"cpu": "lots", "mem": "1g"}, {"cpu": "NaN", "mem": "1g"},
    {"cpu": "Infinity", "mem": "1g"}, {"cpu": 1, "mem": "1q"}, {"cpu": 1, "mem": "1g", "": 1}])
def test_bad_dummy_slots_are_refused(slots: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        config(slots=slots)


@pytest.mark.parametrize("value", ["kubernetes", "", "Dummy"])
def test_unknown_backends_are_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        AgentConfig.model_validate({"agent": {"backend": value}})


@pytest.fixture
async def events(halfstack: HalfStack) -> AsyncIterator[Any]:
    with dedicated_redis() as addr:
        redis = open_redis(addr, 0, None)
        try:
            yield redis
        finally:
            await redis.aclose()


async def read_events(redis: Any, count: int, deadline: float = 5.0) -> list[tuple[str, dict[str, Any]]]:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        entries = await redis.xrange(STREAM_KEY)
        if len(entries) >= count or loop.time() > end:
            return [(e[b"name"].decode(), json.loads(e[b"args"])) for _, e in entries]
        await asyncio.sleep(0.02)


def create_request(session: str, kernels: list[str], slots: dict[str, str]) -> CreateKernelsRequest:
    return CreateKernelsRequest.model_validate({"session_id": session, "kernel_ids": kernels, "configs": [
        {"image": {"canonical": "python"}, "resource_slots": slots,
         "environ": {"BACKENDAI_CLUSTER_HOST": f"k{i}", "OTHER": "x"}} for i in range(len(kernels))]})


async def test_create_execute_destroy(events: Any, caplog: pytest.LogCaptureFixture) -> None:
    agent = DummyAgent(config(slots={"cpu": 2, "mem": "2g"}, **{"create-delay": 0.01}), EventProducer(events))
    with caplog.at_level(logging.WARNING, "bai.agent.dummy"):
        await agent.start()
    assert "DUMMY backend" in caplog.text and "never in production" in caplog.text
    await agent.heartbeat()
    sid, kid = str(uuid.uuid4()), str(uuid.uuid4())
    await agent.create_kernels(create_request(sid, [kid], {"cpu": "1", "mem": "1g"}))
    got = await read_events(events, 3)
    assert [name for name, _ in got] == ["agent_heartbeat", "kernel_creating", "kernel_started"]
    heartbeat, started = got[0][1], got[2][1]
    assert heartbeat["resource_slots"] == {"cpu": "2", "mem": str(2 * GiB)} and "dummy" in heartbeat["compute_plugins"]
    assert started["kernel_id"] == kid and started["creation_info"]["resource_spec"]["slots"] == {
        "cpu": "1", "mem": str(GiB)}
    assert agent.allocator.used() == {"cpu": Decimal(1), "mem": Decimal(GiB)}

    result = await agent.execute(ExecuteRequest(kernel_id=kid, mode="query", code="print(1)"))
    assert result["status"] == "finished" and result["console"] == [["stdout", DUMMY_OUTPUT]]
    logs = (await agent.get_logs(GetLogsRequest(kernel_id=kid)))["logs"]
    assert logs == DUMMY_OUTPUT + "BACKENDAI_CLUSTER_HOST=k0\n"  # only the BACKENDAI_ variables
    with pytest.raises(InvalidInput):
        await agent.create_kernels(create_request(sid, [kid], {"cpu": "1"}))  # the id is taken

    assert await agent.destroy_kernel(DestroyKernelRequest(kernel_id=kid)) == {"stats": {"status": "terminated"}}
    assert agent.kernels == {} and agent.allocator.used() == {"cpu": Decimal(0), "mem": Decimal(0)}
    name, args = (await read_events(events, 4))[-1]
    assert name == "kernel_terminated" and args["kernel_id"] == kid
    with pytest.raises(KernelNotFound):
        await agent.destroy_kernel(DestroyKernelRequest(kernel_id=kid))
    with pytest.raises(KernelNotFound):
        await agent.execute(ExecuteRequest(kernel_id=kid, mode="query", code="1"))
    await agent.stop()


async def test_a_kernel_it_has_no_room_for_is_cancelled(events: Any) -> None:
    agent = DummyAgent(config(slots={"cpu": 2, "mem": "2g"}, **{"create-delay": 0}), EventProducer(events))
    sid, kids = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(2)]
    # two kernels of 2 cores: the second finds no room, as on a real agent
    await agent.create_kernels(create_request(sid, kids, {"cpu": "2", "mem": "1g"}))
    got = await read_events(events, 4)
    names = sorted(name for name, _ in got)
    assert names == ["kernel_cancelled", "kernel_creating", "kernel_creating", "kernel_started"], got
    cancelled = next(args for name, args in got if name == "kernel_cancelled")
    assert "not enough cpu" in cancelled["error"] and cancelled["reason"] == "failed-to-create"
    assert list(agent.kernels) == [next(args["kernel_id"] for name, args in got if name == "kernel_started")]
    await agent.stop()


async def test_destroy_during_creation(events: Any) -> None:
    agent = DummyAgent(config(**{"create-delay": 30}), EventProducer(events))
    sid, kid = str(uuid.uuid4()), str(uuid.uuid4())
    await agent.create_kernels(create_request(sid, [kid], {"cpu": "1", "mem": "1g"}))
    assert [name for name, _ in await read_events(events, 1)] == ["kernel_creating"]
    with pytest.raises(InvalidInput):
        await agent.execute(ExecuteRequest(kernel_id=kid, mode="query", code="1"))  # not running yet
    async with asyncio.timeout(5):
        await agent.destroy_kernel(DestroyKernelRequest(kernel_id=kid, reason="user-requested"))
    names = [name for name, _ in await read_events(events, 2)]
    assert names == ["kernel_creating", "kernel_terminated"] and agent.kernels == {}
    await agent.stop()
