"""The dummy backend (``[agent] backend = "dummy"``): an agent that runs nothing.

For scheduler tests and benchmarks only: it registers and heartbeats like a real agent, with the
capacity written in ``[dummy] slots`` (any slot names, ``cuda.device`` included, so GPU placement
is tested on machines without one), and answers the manager's RPCs as a real agent would --
``create_kernels`` emits ``kernel_creating`` then ``kernel_started`` after ``[dummy] create-delay``,
``destroy_kernel`` frees the kernel's slots and emits ``kernel_terminated`` -- without any
container. Its slot accounting is the real agent's (:class:`~.resources.SlotAllocator`), so it
refuses what it has no room for exactly as a real agent does. Code sent to ``execute`` is never
run: the answer says so in the console (exit code 0), so nothing can mistake it for a result.

It is never the default, says loudly at start that it runs no kernels, and names itself in every
heartbeat (``compute_plugins.dummy``) so that ``admin agent info`` shows what it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import secrets
from dataclasses import dataclass, field
from typing import Any

from bai.common import protocol as proto
from bai.common.agent_rpc import (
    CreateKernelsRequest,
    DestroyKernelRequest,
    ExecuteRequest,
    GetLogsRequest,
    InvalidInput,
    KernelCreationConfig,
    KernelNotFound,
)
from bai.common.events import EventProducer
from bai.common.tasks import stop_tasks
from bai.common.types import INTRINSIC_SLOTS, ResourceSlots, normalize_slots, slots_to_json

from .agent import agent_version
from .config import AgentConfig
from .resources import InsufficientResources, SlotAllocator

log = logging.getLogger(__name__)

#: What execute answers instead of running the code.
DUMMY_OUTPUT = "[bai dummy backend: no container, the code was not run]\n"


def slot_types(capacity: ResourceSlots) -> dict[str, str]:
    """Intrinsic types, ``bytes`` for ``*.mem`` slots, ``count`` for the rest."""
    return {**{s: ("bytes" if s.endswith(".mem") else "count") for s in capacity}, **INTRINSIC_SLOTS}


@dataclass
class DummyKernel:
    kernel_id: str
    session_id: str
    status: str = "PREPARING"
    slots: ResourceSlots | None = None
    creation: asyncio.Task[None] | None = None
    #: the BACKENDAI_* variables it would have run with (its "log" shows them)
    environ: dict[str, str] = field(default_factory=dict)


class DummyAgent:
    """The RPC surface of :class:`~.agent.Agent` (see :class:`~.agent.AgentBackend`), without Docker."""

    def __init__(self, config: AgentConfig, events: EventProducer) -> None:
        self.config = config
        self.id = config.agent.id
        self.events = events
        self.allocator = SlotAllocator(config.dummy.capacity())
        self.slot_types = slot_types(self.allocator.capacity)
        self.kernels: dict[str, DummyKernel] = {}
        self.addr = ""  # set by the server once it listens

    async def start(self) -> None:
        log.warning("*** agent %s runs the DUMMY backend: it starts NO containers and runs NO code; "
                    "for tests and benchmarks only, never in production ***", self.id)

    async def stop(self) -> None:
        creations = [k.creation for k in self.kernels.values() if k.creation is not None]
        await stop_tasks(creations)

    def heartbeat_info(self) -> dict[str, Any]:
        """The ``agent_heartbeat`` event's arguments (also what benchmarks register agents with)."""
        return dict(
            id=self.id, addr=self.addr, scaling_group=self.config.agent.scaling_group,
            region=self.config.agent.region, architecture=platform.machine(), version=agent_version(),
            protocol=str(proto.advertised()),
            resource_slots=slots_to_json(self.allocator.capacity), slot_types=self.slot_types, images=[],
            compute_plugins={"dummy": {"version": agent_version(), "note": "dummy backend: runs nothing"}},
        )

    async def heartbeat(self) -> None:
        await self.events.produce("agent_heartbeat", self.id, **self.heartbeat_info())

    # --- RPC ------------------------------------------------------------------------------

    async def create_kernels(self, req: CreateKernelsRequest) -> None:
        clashes = [kid for kid in req.kernel_ids if kid in self.kernels]
        if clashes:
            raise InvalidInput(f"kernels already exist: {', '.join(clashes)}")
        for kernel_id, config in zip(req.kernel_ids, req.configs, strict=True):
            kernel = DummyKernel(kernel_id, req.session_id, environ={
                k: v for k, v in config.environ.items() if k.startswith("BACKENDAI_")})
            self.kernels[kernel_id] = kernel
            kernel.creation = asyncio.create_task(self._create(kernel, config), name=f"dummy-create-{kernel_id}")

    async def _create(self, kernel: DummyKernel, config: KernelCreationConfig) -> None:
        kid, sid = kernel.kernel_id, kernel.session_id
        try:
            await self.events.produce("kernel_creating", self.id, kernel_id=kid, session_id=sid)
            await asyncio.sleep(self.config.dummy.create_delay)  # the container start it pretends to do
            try:
                requested = normalize_slots(dict(config.resource_slots), {
                    **self.slot_types, **{k: "count" for k in config.resource_slots if k not in self.slot_types}})
                kernel.slots = self.allocator.allocate(kid, requested)
            except (InsufficientResources, ValueError, ArithmeticError) as exc:
                self.kernels.pop(kid, None)
                log.warning("dummy kernel %s: creation failed: %s", kid, exc)
                await self.events.produce("kernel_cancelled", self.id, kernel_id=kid, session_id=sid,
                                          reason="failed-to-create", error=str(exc))
                return
            kernel.status = "RUNNING"
            await self.events.produce("kernel_started", self.id, kernel_id=kid, session_id=sid, creation_info={
                "id": kid, "container_id": f"dummy-{kid}", "service_ports": [],
                "kernel_host": self.config.container.bind_host,
                "resource_spec": {"slots": slots_to_json(kernel.slots), "scratch_disk_size": 0, "mounts": []},
                "attached_devices": {}, "scaling_group": self.config.agent.scaling_group, "agent_addr": self.addr,
            })
        finally:
            kernel.creation = None

    async def destroy_kernel(self, req: DestroyKernelRequest) -> dict[str, Any]:
        kernel = self.kernels.get(req.kernel_id)
        if kernel is None:
            raise KernelNotFound(f"kernel {req.kernel_id} is not on this agent")
        if kernel.status == "TERMINATING":
            return {"stats": {"status": "terminated"}}
        kernel.status = "TERMINATING"
        if kernel.creation is not None:
            kernel.creation.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await kernel.creation
        await asyncio.sleep(self.config.dummy.destroy_delay)
        self.allocator.release(kernel.kernel_id)
        self.kernels.pop(kernel.kernel_id, None)
        await self.events.produce("kernel_terminated", self.id, kernel_id=kernel.kernel_id,
                                  session_id=kernel.session_id, reason=req.reason or "user-requested",
                                  exit_code=0)
        return {"stats": {"status": "terminated"}}

    def _running(self, kernel_id: str) -> DummyKernel:
        kernel = self.kernels.get(kernel_id)
        if kernel is None:
            raise KernelNotFound(f"kernel {kernel_id} is not on this agent")
        if kernel.status != "RUNNING":
            raise InvalidInput(f"kernel {kernel_id} is {kernel.status.lower()}", title="Kernel not running")
        return kernel

    async def execute(self, req: ExecuteRequest) -> dict[str, Any]:
        self._running(req.kernel_id)
        if req.mode != "query":
            raise InvalidInput(f"no such run: {req.run_id}")  # every run finishes at once
        return {"runId": req.run_id or secrets.token_hex(8), "status": "finished",
                "console": [["stdout", DUMMY_OUTPUT]], "exitCode": 0, "options": None, "files": []}

    async def interrupt_kernel(self, kernel_id: str) -> None:
        self._running(kernel_id)

    async def restart_kernel(self, kernel_id: str) -> None:
        self._running(kernel_id)

    async def get_logs(self, req: GetLogsRequest) -> dict[str, Any]:
        """No container, so no log: what the kernel would have run with instead."""
        kernel = self.kernels.get(req.kernel_id)
        if kernel is None:
            raise KernelNotFound(f"kernel {req.kernel_id} is not on this agent")
        return {"logs": DUMMY_OUTPUT + "".join(f"{k}={v}\n" for k, v in sorted(kernel.environ.items())),
                "truncated": False}

    def list_kernels(self) -> list[dict[str, Any]]:
        return [{"kernel_id": k.kernel_id, "session_id": k.session_id, "container_id": f"dummy-{k.kernel_id}",
                 "status": k.status} for k in self.kernels.values()]
