"""Stopping an agent's RPC server loses no request (bai.agent.server.stop_serving, and the
retries of bai.common.agent_rpc.AgentClient.call).

HTTP/1.1 cannot tell a client whether a request sent on a keep-alive connection the server was
closing had been read, so such a request could not be sent again safely. A stopping agent
therefore keeps its idle connections until no client may reuse them, answers anything new with
``agent-stopping`` (nothing done: clients send it again) and closes each connection after its
reply. The agent's backend here is the dummy one, shared by the old and the new server as a real
agent's kernels outlive its process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from bai.agent.config import AgentConfig
from bai.agent.dummy import DUMMY_OUTPUT, DummyAgent
from bai.agent.server import ADMISSION, STOP_GRACE, build_app, stop_serving
from bai.common.agent_rpc import (
    AgentClient,
    AgentFailure,
    AgentStopping,
    CreateKernelsRequest,
    agent_connector,
)
from bai.common.events import EventProducer
from bai.common.redis import open_redis
from tests.fixtures.halfstack import HalfStack, dedicated_redis, free_port

SECRET = "graceful-stop-test-secret"


@dataclass
class Node:
    agent: DummyAgent
    kernel_id: str
    port: int

    async def serve(self) -> web.AppRunner:
        """A new agent process's RPC server (on the agent's one port)."""
        runner = web.AppRunner(build_app(self.agent, SECRET), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        return runner


@pytest.fixture
async def node(halfstack: HalfStack) -> AsyncIterator[Node]:
    with dedicated_redis() as addr:
        redis = open_redis(addr, 0, None)
        config = AgentConfig.model_validate({"agent": {"id": "i-graceful", "backend": "dummy"},
                                             "dummy": {"create-delay": 0}})
        agent = DummyAgent(config, EventProducer(redis))
        kernel_id = str(uuid.uuid4())
        await agent.create_kernels(CreateKernelsRequest.model_validate({
            "session_id": str(uuid.uuid4()), "kernel_ids": [kernel_id],
            "configs": [{"image": {"canonical": "python"}, "resource_slots": {"cpu": "1", "mem": "1g"}}]}))
        creation = agent.kernels[kernel_id].creation
        if creation is not None:
            await creation
        assert agent.kernels[kernel_id].status == "RUNNING"
        try:
            yield Node(agent, kernel_id, free_port())
        finally:
            await agent.stop()
            await redis.aclose()


async def test_an_idle_connection_is_answered_not_cut_off(node: Node) -> None:
    runner = await node.serve()
    async with AgentClient(f"127.0.0.1:{node.port}", SECRET) as client:
        assert await client.ping("before") == "before"  # its connection now idles in the client's pool
        stopping = asyncio.create_task(stop_serving(runner))
        await asyncio.sleep(0)  # one turn of the loop: the task began (FIFO), up to its first wait
        assert runner.app[ADMISSION].stopping and not stopping.done()  # it waits for the idle connection
        with pytest.raises(AgentStopping) as info:
            await client.ping("during")  # on that connection: answered, nothing done
        assert info.value.status == 503
        # that reply closed the connection: nothing idles any more, so the stop ends well before its grace
        async with asyncio.timeout(STOP_GRACE - 1):
            await stopping
        with pytest.raises(AgentFailure) as gone:
            await client.ping("after")
        assert gone.value.title == "Agent unreachable"


async def test_executes_go_on_through_restarts_without_a_failure(node: Node) -> None:
    """Two callers execute back to back (as the manager does for two users) while the agent's
    process is replaced five times; every call answers, none fails."""
    runner = await node.serve()
    answered = 0
    progressed = asyncio.Event()
    failures: list[str] = []
    stop = asyncio.Event()

    async def caller(client: AgentClient) -> None:
        nonlocal answered
        while not stop.is_set():
            try:
                result = await client.execute(None, node.kernel_id, None, "query", "print(1)")
            except Exception as exc:  # every failure is a finding: kept, reported below
                failures.append(repr(exc))
                continue
            assert result["console"] == [["stdout", DUMMY_OUTPUT]]
            answered += 1
            progressed.set()

    async def calls_answered(count: int) -> None:
        target = answered + count
        while answered < target:
            progressed.clear()
            await progressed.wait()

    async with (aiohttp.ClientSession(connector=agent_connector()) as session, AgentClient(f"127.0.0.1:{node.port}", SECRET, session=session) as a,
                AgentClient(f"127.0.0.1:{node.port}", SECRET, session=session) as b):
        callers = [asyncio.create_task(caller(c)) for c in (a, b)]
        try:
            async with asyncio.timeout(60):
                await calls_answered(20)
                for _ in range(5):
                    await stop_serving(runner)
                    runner = await node.serve()
                    await calls_answered(20)  # the new process answers
        finally:
            stop.set()
            await asyncio.gather(*callers)
            await runner.cleanup()
    assert not failures, failures

