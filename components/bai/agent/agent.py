"""The agent's domain logic: kernel lifecycle, query execution, heartbeats (no aiohttp here).

Kernel states here are the agent's own view: ``PREPARING`` (creation task running), ``RUNNING``
(runner connected) and ``TERMINATING`` (being stopped and removed; ignored by the death watch).
Every way out of a kernel's life goes through :meth:`Agent._cleanup`, which removes the
container, its IPC directory and its slots, then emits the final event.

Each kernel's IPC directory (``<ipc-base-path>/<kernel id>``) is created by the agent, owned by
root and mounted read-only into the container; the agent listens on ``agent.sock`` in it and the
runner connects (see :mod:`.kernel`). When the OOM killer strikes in a container the agent
emits ``kernel_oom``.
"""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from aiodocker.exceptions import DockerError

import bai.kernel
from bai.common import etcd as etcd_mod
from bai.common import kernel_logs, kernel_stats
from bai.common import protocol as proto
from bai.common.agent_rpc import (
    LOG_TAIL_BYTES,
    LOG_TAIL_LINES,
    AgentError,
    AgentFailure,
    CommitKernelRequest,
    CreateKernelsRequest,
    DestroyKernelRequest,
    ExecuteRequest,
    GetCompletionsRequest,
    GetLogsRequest,
    InvalidInput,
    KernelCreationConfig,
    KernelNotFound,
    SaveKernelRequest,
    ShutdownServiceRequest,
    SSHKeypairSpec,
    StartServiceRequest,
)
from bai.common.events import EventProducer
from bai.common.service_ports import LABEL_SERVICE_PORTS, ServiceDefinition, ServicePort
from bai.common.tasks import raise_if_cancelling, stop_tasks
from bai.common.types import INTRINSIC_SLOTS, ResourceSlots, normalize_slots, slots_from_json, slots_to_json

from .commit import KernelCommits
from .compute.base import AllocationError
from .compute.registry import (
    LABEL_DEVICE_ALLOCATION,
    ComputeRegistry,
    InvalidSlotRequest,
    KernelAllocation,
    allocation_from_json,
    allocation_to_json,
    merge_docker_args,
)
from .config import AgentConfig
from .docker import (
    DEFAULT_RUNTIME_PATH,
    LABEL_KERNEL_ID,
    LABEL_RUNTIME_PATH,
    LABEL_SESSION_ID,
    LABEL_SLOTS,
    Confinement,
    DockerKernels,
    ImageNotFound,
    ImagePullFailed,
    check_mount_sources,
    container_config,
    container_name,
    exit_code_from_status,
    host_ulimits,
)
from .dotfiles import prepare_home, ssh_key_mounts
from .kernel import SOCKET_NAME, KernelRunner, RunnerUnavailable
from .networks import LOCAL_PREFIX, NetworkRefused, SessionNetworks, attach, network_for
from .ports import NoFreePorts, PortPool
from .resources import InsufficientResources
from .services import (
    SERVICE_START_TIMEOUT,
    SERVICE_STOP_TIMEOUT,
    ImageServices,
    plan_service_ports,
    publish,
    restore_from_labels,
    start_request,
)

log = logging.getLogger(__name__)

RUNNER_DIR = Path(bai.kernel.__file__).resolve().parent
#: Seconds between two kernel_pull_progress events of one pull.
PULL_REPORT_INTERVAL = 0.5
#: How long a runner may take to replace its user-code process on restart_kernel.
RESTART_TIMEOUT = 20.0
#: How long reading a terminated kernel's last log (kept by the manager) may delay its removal.
FINAL_LOG_TIMEOUT = 5.0
#: sun_path holds 108 bytes including the terminating NUL.
_MAX_UNIX_PATH = 107


@dataclass
class Kernel:
    kernel_id: str
    session_id: str
    ipc_dir: Path
    status: str = "PREPARING"
    container_id: str | None = None
    slots: ResourceSlots = field(default_factory=dict)
    #: The devices it holds, per compute plugin (freed exactly once, by _release_devices).
    allocation: KernelAllocation = field(default_factory=dict)
    runner: KernelRunner | None = None
    creation: asyncio.Task[None] | None = None
    #: Resolved with the exit code when Docker reports the container stopped.
    died: asyncio.Future[int | None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    #: Resolved when the kernel is fully cleaned up.
    gone: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    #: The image (canonical name) and the service ports published for it (bai.agent.services).
    image: str = ""
    service_ports: list[ServicePort] = field(default_factory=list)
    #: On its session's bridge, which this agent removes with the session's last kernel here.
    local_network: bool = False


def agent_version() -> str:
    try:
        return metadata.version("bai")
    except metadata.PackageNotFoundError:
        return "0.0.0"


class Agent:
    def __init__(self, config: AgentConfig, docker: DockerKernels, events: EventProducer) -> None:
        self.config = config
        self.id = config.agent.id
        self.docker = docker
        self.events = events
        self.ipc_base = config.agent.ipc_base_path
        #: The compute plugins and their alloc maps (loaded by start()).
        self.compute = ComputeRegistry([])
        self.kernels: dict[str, Kernel] = {}
        self._creation_slots = asyncio.Semaphore(config.agent.kernel_creation_concurrency)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._ulimits = host_ulimits()
        c = config.container
        self.confinement = Confinement(uid=c.kernel_uid, gid=c.kernel_gid, pids_limit=c.pids_limit,
                                       log_max_size=c.log_max_size, log_max_files=c.log_max_files)
        self.addr = ""  # set by the server once it listens
        self.ports = PortPool(*c.port_range, bind_host=c.bind_host)
        self.image_services = ImageServices(docker.docker)
        self.networks = SessionNetworks(docker.docker, self.id)
        self.commits = KernelCommits(docker.docker, save_base=config.agent.image_commit_path)

    # --- start / stop -----------------------------------------------------------------------

    async def start(self) -> None:
        self.ipc_base.mkdir(parents=True, exist_ok=True)
        # Each kernel's socket belongs to the kernel uid, which may also be a real user on this
        # host: only root may pass through the base (containers reach their own directory
        # through the bind mount, which needs no traversal of its parents).
        self.ipc_base.chmod(0o700)
        # Precompiled bytecode next to the runner sources spares every new container from
        # compiling them (same CPython minor version inside and out; harmless if read-only).
        await asyncio.to_thread(compileall.compile_dir, str(RUNNER_DIR), quiet=2)
        if not await self.docker.has_seccomp():
            log.warning("the Docker engine applies no seccomp profile: kernels run without a syscall filter")
        self.compute = await ComputeRegistry.load(self.config, await self._plugins_etcd_config())
        since = time.time() - 1
        self._watcher = asyncio.create_task(self.docker.watch_deaths(self._on_container_died, since,
                                                                     self._on_container_oom))
        await self._adopt_containers()
        await self.commits.sweep()  # what a killed predecessor's commits left (before any heartbeat)
        await self.image_services.sweep()  # and its service-definition probes
        try:
            await self.networks.remove_orphans({k.session_id for k in self.kernels.values()})
        except Exception as exc:
            raise_if_cancelling()
            log.warning("cannot look for cluster networks left behind: %r", exc)

    async def stop(self) -> None:
        """Detach from the kernels, which keep running and are re-adopted on the next start."""
        for kernel in list(self.kernels.values()):
            if kernel.creation is not None and not kernel.creation.done():
                kernel.creation.cancel()
        pending = [k.creation for k in self.kernels.values() if k.creation is not None]
        await asyncio.gather(*pending, return_exceptions=True)
        # Removals and final events of destroyed kernels must complete: no orphan containers.
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._watcher is not None:
            await stop_tasks([self._watcher])
        for kernel in self.kernels.values():
            if kernel.runner is not None:
                await kernel.runner.close()
        await self.compute.cleanup()

    async def _plugins_etcd_config(self) -> dict[str, str]:
        """etcd ``config/plugins/...`` (e.g. the mock accelerator's allocation mode), read once."""
        try:
            async with etcd_mod.connect(self.config.etcd.addr, self.config.etcd.namespace, call_deadline=5) as etcd:
                return await etcd.get_prefix("config/plugins/")
        except Exception as exc:
            log.warning("cannot read config/plugins from etcd (plugins use their defaults): %s", exc)
            return {}

    def _release_devices(self, kernel: Kernel) -> None:
        self.compute.free(kernel.allocation)
        if kernel.allocation:
            self._spawn(self.compute.released(kernel.allocation), name=f"release-devices-{kernel.kernel_id}")
        kernel.allocation = {}

    def _readopt_devices(self, kernel: Kernel, labels: dict[str, str]) -> None:
        """Take again the devices a re-adopted container holds, as its label records them."""
        raw = labels.get(LABEL_DEVICE_ALLOCATION)
        try:
            if raw is not None:
                kernel.allocation = allocation_from_json(json.loads(raw))
                self.compute.apply(kernel.allocation)
                self._spawn(self.compute.restored(kernel.allocation), name=f"restore-devices-{kernel.kernel_id}")
                return
        except ValueError as exc:
            log.warning("kernel %s: unreadable device allocation label (%s); booking its slots anew",
                        kernel.kernel_id, exc)
        # A container of an agent version without the label: book its slots on any devices.
        try:
            kernel.allocation = self.compute.allocate(kernel.slots)
        except (AllocationError, InvalidSlotRequest) as exc:
            log.warning("kernel %s: its slots do not fit this agent's devices any more: %s", kernel.kernel_id, exc)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _adopt_containers(self) -> None:
        """Take over the kernels a previous run of this agent left running."""
        for info in await self.docker.owned_containers():
            labels = info.get("Labels") or {}
            kernel_id, session_id = labels.get(LABEL_KERNEL_ID), labels.get(LABEL_SESSION_ID, "")
            if not kernel_id or kernel_id in self.kernels:
                continue
            kernel = Kernel(kernel_id, session_id, self.ipc_base / kernel_id, status="RUNNING",
                            container_id=info["Id"])
            try:
                kernel.slots = slots_from_json(json.loads(labels.get(LABEL_SLOTS) or "{}"))
            except ValueError:
                kernel.slots = {}
            self.kernels[kernel_id] = kernel
            self._readopt_devices(kernel, labels)
            kernel.image = str(info.get("Image") or "")
            kernel.service_ports = restore_from_labels(kernel_id, labels, self.ports)
            networks = ((info.get("NetworkSettings") or {}).get("Networks") or {})
            kernel.local_network = any(str(net).startswith(LOCAL_PREFIX) for net in networks)
            if info.get("State") != "running":
                # It stopped while we were away.
                kernel.status = "TERMINATING"
                self._spawn(self._cleanup(kernel, "self-terminated", exit_code_from_status(info.get("Status", ""))),
                            f"cleanup-{kernel_id}")
                continue
            runner = self._new_runner(kernel)
            try:
                # Only in the directory that is mounted into the container: it is root-owned and
                # read-only there, so the socket we bind is the only thing in it we touch.
                if not kernel.ipc_dir.is_dir() or kernel.ipc_dir.is_symlink():
                    raise FileNotFoundError(f"{kernel.ipc_dir} is gone")
                await runner.listen()
            except OSError as exc:
                # Execute then fails with "runner unreachable"; destroy still works.
                log.error("kernel %s: cannot listen for its runner again: %s", kernel_id, exc)
            kernel.runner = runner
            log.info("re-adopted kernel %s (container %s)", kernel_id, info["Id"][:12])

    def _new_runner(self, kernel: Kernel) -> KernelRunner:
        runner = KernelRunner(kernel.kernel_id, kernel.ipc_dir / SOCKET_NAME,
                              owner=(self.confinement.uid, self.confinement.gid),
                              output_limit=self.config.container.output_buffer_size)

        async def batch_finished(exit_code: int) -> None:
            await self._batch_finished(kernel, runner, exit_code)

        async def oom_killed() -> None:
            # Docker's "oom" event is not always delivered (seen on cgroup v1 hosts where
            # OOMKilled stays false); the runner reads the cgroup's OOM-kill count itself
            await self._on_container_oom(kernel.kernel_id)

        runner.on_batch_finished = batch_finished
        runner.on_oom_killed = oom_killed
        return runner

    async def _batch_finished(self, kernel: Kernel, runner: KernelRunner, exit_code: int) -> None:
        """A batch session's startup command ended: tell the manager, which records the result
        and ends the session (the original's session_success / session_failure)."""
        if kernel.status != "RUNNING":
            return  # being destroyed: a user's destroy gets no result
        success = exit_code == 0
        log.info("kernel %s: batch command exited with %d", kernel.kernel_id, exit_code)
        await self.events.produce("session_success" if success else "session_failure", self.id,
                                  session_id=kernel.session_id, kernel_id=kernel.kernel_id,
                                  reason="task-finished" if success else "task-failed", exit_code=exit_code)
        await runner.ack_batch()

    # --- heartbeat --------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        images = await self.docker.list_kernel_images()
        self.image_services.note_images(images)
        await self.events.produce(
            "agent_heartbeat", self.id,
            id=self.id,
            addr=self.addr,
            scaling_group=self.config.agent.scaling_group,
            region=self.config.agent.region,
            architecture=platform.machine(),
            version=agent_version(),
            protocol=str(proto.advertised()),
            resource_slots=slots_to_json(self.compute.available),
            slot_types={**INTRINSIC_SLOTS, **self.compute.slot_types},
            images=images,
            compute_plugins=await self.compute.extra_infos(agent_version()),
        )
        await self._publish_stats()

    async def _publish_stats(self) -> None:
        """Each running kernel's live statistics (bai.common.kernel_stats), at every heartbeat."""
        running = [k for k in self.kernels.values() if k.status == "RUNNING" and k.container_id]
        if not running:
            return
        try:
            stats = await self.compute.container_stats({k.container_id: k.allocation for k in running
                                                        if k.container_id})
            ttl = max(10, int(self.config.agent.heartbeat_interval * 3))
            await kernel_stats.publish(self.events.redis, {
                k.kernel_id: stat for k in running if k.container_id and (stat := stats.get(k.container_id))}, ttl)
        except Exception as exc:
            log.warning("cannot publish the kernels' live statistics: %r", exc)

    # --- RPC: create ------------------------------------------------------------------------

    async def create_kernels(self, req: CreateKernelsRequest) -> None:
        clashes = [kid for kid in req.kernel_ids if kid in self.kernels]
        if clashes:
            raise InvalidInput(f"kernels already exist: {', '.join(clashes)}")
        try:
            network = network_for(req.session_id, req.cluster_info, len(req.kernel_ids))
        except NetworkRefused as exc:
            raise InvalidInput(str(exc)) from exc
        for config in req.configs:
            # What could never be placed here is refused now, not reported later as a failed start.
            try:
                self.compute.check_request(self._requested_slots(config))
            except (InvalidSlotRequest, ValueError, ArithmeticError) as exc:
                raise InvalidInput(f"invalid resource request: {exc}") from exc
        for kernel_id, config in zip(req.kernel_ids, req.configs, strict=True):
            kernel = Kernel(kernel_id, req.session_id, self.ipc_base / kernel_id)
            self.kernels[kernel_id] = kernel
            kernel.creation = asyncio.create_task(self._create(kernel, config, network, req.cluster_ssh_keypair),
                                                  name=f"create-{kernel_id}")

    async def _create(self, kernel: Kernel, config: KernelCreationConfig,
                      network: tuple[str, bool] | None = None, cluster_key: SSHKeypairSpec | None = None) -> None:
        kid, sid = kernel.kernel_id, kernel.session_id
        began = time.perf_counter()
        try:
            await self._ensure_image(kernel, config)
            async with self._creation_slots:
                await self.events.produce("kernel_creating", self.id, kernel_id=kid, session_id=sid)
                slots = self._requested_slots(config)
                try:
                    kernel.allocation = self.compute.allocate(slots)
                except (AllocationError, InvalidSlotRequest) as exc:
                    raise InsufficientResources(str(exc)) from exc
                kernel.slots = {k: v for k, v in slots.items() if v != 0 or k in INTRINSIC_SLOTS}
                labels = {**config.image.labels}
                if "ai.backend.runtime-path" not in labels:
                    labels = {**await self.docker.image_labels(config.image.canonical), **labels}
                kernel.image = config.image.canonical
                definitions = await self.image_services.definitions(kernel.image)
                planned_ports = plan_service_ports(labels, definitions)
                if len(os.fsencode(kernel.ipc_dir / SOCKET_NAME)) > _MAX_UNIX_PATH:
                    raise ValueError(f"ipc-base-path is too long for a unix socket path: {self.ipc_base}")
                shutil.rmtree(kernel.ipc_dir, ignore_errors=True)
                kernel.ipc_dir.mkdir(parents=True)
                kernel.ipc_dir.chmod(0o755)  # the container's user needs to traverse it, not write
                check_mount_sources(config)
                runner = self._new_runner(kernel)
                kernel.runner = runner
                await runner.listen()
                body = container_config(
                    kernel_id=kid, session_id=sid, owner=self.id, config=config, slots=kernel.slots,
                    image_labels=labels, runner_dir=RUNNER_DIR, ipc_dir=kernel.ipc_dir, ulimits=self._ulimits,
                    confinement=self.confinement,
                )
                # the keypair's keys as mounts: never in the layer a commit saves (dotfiles.py)
                key_mounts = ssh_key_mounts(config, kernel.ipc_dir, self.confinement.uid, self.confinement.gid,
                                            cluster_key)
                merge_docker_args(body, key_mounts)
                merge_docker_args(body, await self.compute.docker_args(kernel.allocation))
                body["Labels"][LABEL_DEVICE_ALLOCATION] = json.dumps(allocation_to_json(kernel.allocation))
                kernel.service_ports = publish(kid, planned_ports, self.ports, body,
                                               labels.get(LABEL_SERVICE_PORTS))
                if network is not None:  # several kernels: they meet on the session's network
                    name, local = network
                    if local:
                        kernel.local_network = True
                        name = await self.networks.ensure(sid)  # by id: names may clash (networks.py)
                    attach(body, name, config.cluster_hostname)
                try:
                    await self._start_container(kernel, body)
                except ImageNotFound:
                    # Removed since the last heartbeat listed it: pull it again (once).
                    self.docker.forget_image(config.image.canonical)
                    await self._ensure_image(kernel, config)
                    await self._start_container(kernel, body)
                await self._wait_runner(kernel, runner)
                # dotfiles, bootstrap: before anyone runs code in it
                await prepare_home(runner, config, kid, cluster=cluster_key,
                                   id_container_bound=bool(key_mounts.get("HostConfig", {}).get("Binds")))
                if cluster_key is not None:  # its peers `ssh` it from their start on, not on demand
                    await self._start_cluster_sshd(kernel, runner, definitions, labels.get(LABEL_RUNTIME_PATH))
                kernel.status = "RUNNING"
            log.info("kernel %s: started in %.0f ms (container %s)", kid, (time.perf_counter() - began) * 1000,
                     (kernel.container_id or "")[:12])
            await self.events.produce("kernel_started", self.id, kernel_id=kid, session_id=sid, creation_info={
                "id": kid,
                "container_id": kernel.container_id,
                "service_ports": [sp.stored() for sp in kernel.service_ports],
                "kernel_host": self.config.container.bind_host,
                "resource_spec": {"slots": slots_to_json(kernel.slots), "scratch_disk_size": 0, "mounts": [
                    [m.host_path, m.kernel_path, m.permission] for m in config.mounts]},
                "attached_devices": self.compute.attached_devices(kernel.allocation),
                "scaling_group": self.config.agent.scaling_group,
                "agent_addr": self.addr,
            })
            if config.session_type == "batch" and config.startup_command:
                await self._start_batch(kernel, runner, config.startup_command)
        except asyncio.CancelledError:
            # destroy_kernel (or shutdown) cancelled us; whoever did reports the outcome.
            await asyncio.shield(self._discard_failed(kernel))
            raise
        except Exception as exc:
            if isinstance(exc, _EXPECTED_CREATION_ERRORS):
                log.warning("kernel %s: creation failed: %s", kid, _describe(exc))
            else:
                log.exception("kernel %s: creation failed", kid)
            await asyncio.shield(self._discard_failed(kernel))
            reason = "image-pull-failed" if isinstance(exc, ImagePullFailed) else "failed-to-create"
            await self.events.produce("kernel_cancelled", self.id, kernel_id=kid, session_id=sid,
                                      reason=reason, error=_describe(exc))
            kernel.gone.set_result(None)
        finally:
            kernel.creation = None

    def _requested_slots(self, config: KernelCreationConfig) -> ResourceSlots:
        slot_types = {**INTRINSIC_SLOTS, **self.compute.slot_types}
        return normalize_slots(dict(config.resource_slots), {
            **{k: "count" for k in config.resource_slots if k not in slot_types}, **slot_types})

    async def _start_cluster_sshd(self, kernel: Kernel, runner: KernelRunner,
                                  definitions: Mapping[str, ServiceDefinition], runtime_path: str | None) -> None:
        """Start the intrinsic sshd of a cluster session's kernel; one that cannot be started
        (an image without it, a failure) is logged: the kernel starts without SSH from its peers."""
        try:
            message = start_request("sshd", kernel.service_ports, definitions, runtime_path or DEFAULT_RUNTIME_PATH, {})
            async with asyncio.timeout(SERVICE_START_TIMEOUT + 5):
                result = await runner.start_service(message)
        except (InvalidInput, TimeoutError, RunnerUnavailable) as exc:
            log.warning("kernel %s: no sshd for its cluster peers: %s", kernel.kernel_id, exc)
            return
        if result.get("status") not in ("started", "running"):
            log.warning("kernel %s: no sshd for its cluster peers: %s", kernel.kernel_id, result.get("error"))

    async def _start_batch(self, kernel: Kernel, runner: KernelRunner, command: str) -> None:
        try:
            await runner.start_batch(command)
        except RunnerUnavailable as exc:
            # The session would otherwise run forever waiting for a result that cannot come.
            log.warning("kernel %s: cannot start the batch command: %s", kernel.kernel_id, exc)
            await self._batch_finished(kernel, runner, 127)

    async def _start_container(self, kernel: Kernel, body: dict[str, Any]) -> None:
        # Not cancellable half-way: Docker finishes a create whose caller went away, and we must
        # learn the container's ID to remove it.
        starting = asyncio.ensure_future(self.docker.create_and_start(container_name(kernel.kernel_id), body))
        try:
            kernel.container_id = await asyncio.shield(starting)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                kernel.container_id = await starting
            raise

    async def _ensure_image(self, kernel: Kernel, config: KernelCreationConfig) -> None:
        """Pull the kernel's image when it is not here, telling the manager (kernel_pulling, then
        kernel_pull_progress at most every PULL_REPORT_INTERVAL seconds). Credentials come with
        the request (``image.registry``: ``{"name", "url", "username", "password"}``)."""
        canonical = config.image.canonical
        if await self.docker.has_image(canonical):
            return
        if canonical.startswith("bai.local/"):
            raise ImageNotFound(f"image {canonical} is not on this agent (local images are built, not pulled)")
        kid, sid = kernel.kernel_id, kernel.session_id
        registry = (config.image.model_extra or {}).get("registry") or {}
        auth = None
        if isinstance(registry, dict) and registry.get("username"):
            auth = {"username": str(registry["username"]), "password": str(registry.get("password") or "")}
        log.info("kernel %s: pulling %s", kid, canonical)
        await self.events.produce("kernel_pulling", self.id, kernel_id=kid, session_id=sid, image=canonical)
        loop = asyncio.get_running_loop()
        last = (0.0, -1)  # (when, percent) of the last report

        async def report(done: int, total: int) -> None:
            nonlocal last
            percent = done * 100 // total if total else 0
            if percent != last[1] and (loop.time() - last[0] >= PULL_REPORT_INTERVAL or done == total):
                last = (loop.time(), percent)
                await self.events.produce("kernel_pull_progress", self.id, kernel_id=kid, session_id=sid,
                                          current_progress=done, total_progress=total)

        began = time.perf_counter()
        await self.docker.pull(canonical, auth, report)
        log.info("kernel %s: pulled %s in %.1f s", kid, canonical, time.perf_counter() - began)

    async def _wait_runner(self, kernel: Kernel, runner: KernelRunner) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.container.runner_start_timeout
        # The death watch normally tells us at once if the container exits; checking the state
        # every second as well covers a watch that is (re)connecting.
        while True:
            step = min(loop.time() + 1.0, deadline)
            try:
                await runner.wait_ready(step, kernel.died)
                return
            except RunnerUnavailable:
                if kernel.died.done() or loop.time() >= deadline:
                    raise
                assert kernel.container_id is not None
                if not await self.docker.is_running(kernel.container_id):
                    raise RunnerUnavailable("the container stopped before its runner came up") from None

    async def _discard_failed(self, kernel: Kernel) -> None:
        """Undo a creation that did not finish: no container, IPC dir or slots may remain."""
        if kernel.runner is not None:
            await kernel.runner.close()
        try:
            ids = {kernel.container_id} if kernel.container_id else set()
            # A create call that failed on our side may still have made a container.
            ids |= {c["Id"] for c in await self.docker.owned_containers(kernel.kernel_id)}
            for container_id in ids:
                if container_id:
                    await self.docker.remove(container_id)
        except Exception:
            log.exception("kernel %s: removing the container of a failed creation", kernel.kernel_id)
        shutil.rmtree(kernel.ipc_dir, ignore_errors=True)
        self._release_devices(kernel)
        self.ports.release(kernel.kernel_id)
        self.kernels.pop(kernel.kernel_id, None)
        await self._release_network(kernel)

    # --- RPC: destroy -----------------------------------------------------------------------

    async def destroy_kernel(self, req: DestroyKernelRequest) -> dict[str, Any]:
        reason = req.reason or "user-requested"
        kernel = self.kernels.get(req.kernel_id)
        if kernel is None:
            # Not ours as far as we know -- but never leave a labelled container behind.
            for info in await self.docker.owned_containers(req.kernel_id):
                await self.docker.remove(info["Id"])
            shutil.rmtree(self.ipc_base / req.kernel_id, ignore_errors=True)
            raise KernelNotFound(f"kernel {req.kernel_id} is not on this agent")
        if kernel.status == "TERMINATING":
            await asyncio.shield(kernel.gone)
            return {"stats": {"status": "terminated"}}
        kernel.status = "TERMINATING"
        if kernel.creation is not None and not kernel.creation.done():
            kernel.creation.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await kernel.creation
            await self.events.produce("kernel_terminated", self.id, kernel_id=kernel.kernel_id,
                                      session_id=kernel.session_id, reason=reason, exit_code=None)
            kernel.gone.set_result(None)
            return {"stats": {"status": "terminated"}}
        if kernel.runner is not None:
            await kernel.runner.close()
        exit_code = None
        if kernel.container_id is not None:
            exit_code = await self.docker.kill_and_wait(kernel.container_id)
        # Answer only once the container is removed, so a finished destroy never leaves one behind
        # (shielded: a caller that hangs up must not interrupt the cleanup).
        await asyncio.shield(self._cleanup(kernel, reason, exit_code))
        log.info("kernel %s: destroyed (%s)", kernel.kernel_id, reason)
        return {"stats": {"status": "terminated"}}

    async def _cleanup(self, kernel: Kernel, reason: str, exit_code: int | None) -> None:
        container_log: str | None = None
        try:
            if kernel.runner is not None:
                await kernel.runner.close()
            if kernel.container_id is not None:
                container_log = await self._final_log(kernel)
                await self.docker.remove(kernel.container_id)
        except Exception:
            log.exception("kernel %s: removing container %s", kernel.kernel_id, kernel.container_id)
        shutil.rmtree(kernel.ipc_dir, ignore_errors=True)
        self._release_devices(kernel)
        self.ports.release(kernel.kernel_id)
        self.kernels.pop(kernel.kernel_id, None)
        await self._release_network(kernel)
        try:
            log_digest = None
            if container_log is not None:
                try:
                    log_digest = await kernel_logs.stash(self.events.redis, kernel.kernel_id, container_log)
                except Exception as exc:
                    log.warning("kernel %s: cannot hand its last log over: %r", kernel.kernel_id, exc)
            await self.events.produce("kernel_terminated", self.id, kernel_id=kernel.kernel_id,
                                      session_id=kernel.session_id, reason=reason, exit_code=exit_code,
                                      log_digest=log_digest)
        finally:
            if not kernel.gone.done():
                kernel.gone.set_result(None)

    async def _release_network(self, kernel: Kernel) -> None:
        """The session's bridge goes with its last kernel here (never failing the cleanup)."""
        if not kernel.local_network:
            return
        sid = kernel.session_id
        try:
            await self.networks.release(sid, lambda: any(k.session_id == sid for k in self.kernels.values()))
        except Exception as exc:
            raise_if_cancelling()
            log.warning("session %s: cannot remove its cluster network: %r", sid, exc)

    async def _final_log(self, kernel: Kernel) -> str | None:
        """The last of the container's log, read before it is removed so that the manager can
        keep it (``kernels.container_log``, handed over through :mod:`bai.common.kernel_logs`):
        bounded as get_logs is; None when it cannot be read."""
        assert kernel.container_id is not None
        try:
            async with asyncio.timeout(FINAL_LOG_TIMEOUT):
                text, _truncated = await self.docker.logs(kernel.container_id, LOG_TAIL_LINES, LOG_TAIL_BYTES)
            return text
        except Exception as exc:
            log.warning("kernel %s: cannot read its last log: %r", kernel.kernel_id, exc)
            return None

    async def _on_container_died(self, kernel_id: str, container_id: str, exit_code: int | None) -> None:
        kernel = self.kernels.get(kernel_id)
        if kernel is None:
            return  # destroyed by us, or not a kernel we track
        if not kernel.died.done():
            kernel.died.set_result(exit_code)
        if kernel.status != "RUNNING":
            return  # creation notices through `died`; destroy handles its own
        log.info("kernel %s: container exited by itself (exit code %s)", kernel_id, exit_code)
        kernel.status = "TERMINATING"
        self._spawn(self._cleanup(kernel, "self-terminated", exit_code), f"cleanup-{kernel_id}")

    async def _on_container_oom(self, kernel_id: str) -> None:
        kernel = self.kernels.get(kernel_id)
        if kernel is None or kernel.status == "TERMINATING":
            return
        log.warning("kernel %s: the OOM killer struck in its container", kernel_id)
        await self.events.produce("kernel_oom", self.id, kernel_id=kernel_id, session_id=kernel.session_id)

    # --- RPC: execution and queries ---------------------------------------------------------

    def _running(self, kernel_id: str) -> Kernel:
        kernel = self.kernels.get(kernel_id)
        if kernel is None:
            raise KernelNotFound(f"kernel {kernel_id} is not on this agent")
        if kernel.status != "RUNNING" or kernel.runner is None:
            raise InvalidInput(f"kernel {kernel_id} is {kernel.status.lower()}", title="Kernel not running")
        return kernel

    async def execute(self, req: ExecuteRequest) -> dict[str, Any]:
        runner = self._running(req.kernel_id).runner
        assert runner is not None
        try:
            return await runner.execute(req.run_id, req.mode, req.code, req.flush_timeout, req.opts)
        except RunnerUnavailable as exc:
            raise AgentFailure(str(exc), title="Kernel runner unreachable") from exc

    def runner(self, kernel_id: str) -> KernelRunner:
        """The runner connection of a running kernel (KernelNotFound, or 400 when not running)."""
        runner = self._running(kernel_id).runner
        assert runner is not None
        return runner

    async def get_completions(self, req: GetCompletionsRequest) -> dict[str, Any]:
        try:
            return {"completions": await self.runner(req.kernel_id).complete(req.code, req.options)}
        except RunnerUnavailable as exc:
            raise AgentFailure(str(exc), title="Kernel runner unreachable") from exc

    async def interrupt_kernel(self, kernel_id: str) -> None:
        runner = self._running(kernel_id).runner
        assert runner is not None
        try:
            await runner.interrupt()
        except RunnerUnavailable as exc:
            raise AgentFailure(str(exc), title="Kernel runner unreachable") from exc

    async def restart_kernel(self, kernel_id: str) -> None:
        """Replace the kernel's user-code process: same container, fresh variables."""
        runner = self._running(kernel_id).runner
        assert runner is not None
        try:
            async with asyncio.timeout(RESTART_TIMEOUT):
                await runner.restart()
        except TimeoutError as exc:
            raise AgentFailure("the runner did not restart in time", title="Kernel restart failed") from exc
        except RunnerUnavailable as exc:
            raise AgentFailure(str(exc), title="Kernel runner unreachable") from exc

    async def get_logs(self, req: GetLogsRequest) -> dict[str, Any]:
        kernel = self.kernels.get(req.kernel_id)
        if kernel is None or kernel.container_id is None:
            raise KernelNotFound(f"kernel {req.kernel_id} is not on this agent")
        logs, truncated = await self.docker.logs(kernel.container_id, req.tail_lines, req.max_bytes)
        return {"logs": logs, "truncated": truncated}

    async def start_service(self, req: StartServiceRequest) -> dict[str, Any]:
        """Start one of the kernel's service ports (``{"status": "started" | "running" | "failed",
        "error"?}``); an unknown service or options its definition does not allow are a 400."""
        kernel = self._running(req.kernel_id)
        runner = kernel.runner
        assert runner is not None
        labels = await self.docker.image_labels(kernel.image) if kernel.image else {}
        definitions = await self.image_services.definitions(kernel.image) if kernel.image else {}
        message = start_request(req.service, kernel.service_ports, definitions,
                                labels.get("ai.backend.runtime-path") or "/usr/bin/python3",
                                req.opts.model_dump())
        try:
            async with asyncio.timeout(SERVICE_START_TIMEOUT + 5):
                return await runner.start_service(message)
        except TimeoutError as exc:
            raise AgentFailure(f"service {req.service} did not start in time", title="Service start failed") from exc
        except RunnerUnavailable as exc:
            raise AgentFailure(str(exc), title="Kernel runner unreachable") from exc

    async def shutdown_service(self, req: ShutdownServiceRequest) -> dict[str, Any]:
        """Stop one of the kernel's service ports (``{"status": "stopped" | "not-running"}``);
        a service the kernel does not have is a 400."""
        kernel = self._running(req.kernel_id)
        runner = kernel.runner
        assert runner is not None
        if not any(sp.name == req.service for sp in kernel.service_ports):
            known = ", ".join(sp.name for sp in kernel.service_ports) or "none"
            raise InvalidInput(f"the kernel has no service {req.service!r} (its services: {known})",
                               title="Unknown service")
        try:
            async with asyncio.timeout(SERVICE_STOP_TIMEOUT):
                return await runner.shutdown_service(req.service)
        except TimeoutError as exc:
            raise AgentFailure(f"service {req.service} did not stop in time", title="Service stop failed") from exc
        except RunnerUnavailable as exc:
            raise AgentFailure(str(exc), title="Kernel runner unreachable") from exc

    async def commit_kernel(self, req: CommitKernelRequest) -> dict[str, Any]:
        """Save the running kernel's container as a new image (bai.agent.commit)."""
        kernel = self._running(req.kernel_id)
        assert kernel.container_id is not None
        return await self.commits.commit(kernel.kernel_id, kernel.container_id, kernel.image, req.canonical,
                                         dict(req.labels), push=req.push.model_dump() if req.push else None)

    async def save_kernel(self, req: SaveKernelRequest) -> dict[str, Any]:
        """Save the running kernel's container as an image tar on this host (bai.agent.commit)."""
        kernel = self._running(req.kernel_id)
        assert kernel.container_id is not None
        return await self.commits.save(kernel.kernel_id, kernel.container_id, kernel.image, req.subdir, req.filename)

    def commit_status(self, kernel_id: str) -> dict[str, Any]:
        if kernel_id not in self.kernels:
            raise KernelNotFound(f"kernel {kernel_id} is not on this agent")
        return {"kernel": kernel_id, "status": "ongoing" if self.commits.in_progress(kernel_id) else "ready"}

    def list_kernels(self) -> list[dict[str, Any]]:
        return [
            {"kernel_id": k.kernel_id, "session_id": k.session_id, "container_id": k.container_id,
             "status": k.status}
            for k in self.kernels.values()
        ]


class AgentBackend(Protocol):
    """What the RPC server needs of an agent: :class:`Agent` (Docker) or
    :class:`~.dummy.DummyAgent` (``[agent] backend = "dummy"``, runs nothing)."""

    id: str
    config: AgentConfig
    addr: str

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def heartbeat(self) -> None: ...
    async def create_kernels(self, req: CreateKernelsRequest) -> None: ...
    async def destroy_kernel(self, req: DestroyKernelRequest) -> dict[str, Any]: ...
    async def execute(self, req: ExecuteRequest) -> dict[str, Any]: ...
    async def interrupt_kernel(self, kernel_id: str) -> None: ...
    async def restart_kernel(self, kernel_id: str) -> None: ...
    async def get_logs(self, req: GetLogsRequest) -> dict[str, Any]: ...
    def list_kernels(self) -> list[dict[str, Any]]: ...


#: Creation failures that are about the request or the environment, not bugs: no traceback.
_EXPECTED_CREATION_ERRORS = (AgentError, DockerError, ImageNotFound, ImagePullFailed, InsufficientResources,
                             RunnerUnavailable, ValueError, KeyError, NoFreePorts)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DockerError):
        return f"docker error {exc.status}: {exc.message}"
    return str(exc) or type(exc).__name__
