"""Open fractional GPUs (``cuda.shares``) through NVIDIA MPS (beyond the original).

One share is ``unit_mem`` bytes of a GPU's memory (2 GiB by default); a GPU offers
``memory_total / unit_mem`` shares (rounded down to 0.01). A kernel holding ``s`` shares of a GPU
with ``capacity`` shares gets, as an MPS client:

* ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` = ``ceil(100 * s / capacity)`` (1..100): its share of the SMs;
* ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` = ``0=<MiB>M`` with ``s * unit_mem`` (all of the GPU's
  memory for all of its shares, rounded down to MiB): the device is 0 for the client, which sees only the one GPU
  its MPS server serves; MPS takes the size with a unit suffix.

The agent runs one ``nvidia-cuda-mps-control`` daemon per GPU, started at the first fractional
allocation of that GPU and stopped at plugin cleanup, with its pipe, log and shared-memory
directories under ``<mps-root>/<uuid>/`` (``mps-root`` default ``/var/lib/bai/mps``). Clients get
the pipe directory at ``/tmp/nvidia-mps`` and the daemon's ``shm`` directory at ``/dev/shm`` (MPS
clients and server exchange shared memory; the daemon runs in a private mount namespace whose
``/dev/shm`` is that directory, so the host's ``/dev/shm`` is never shared with containers).

Environment limits are per client; a client could raise its own within what its MPS server
allows, so the control pipe also sets the server-side ceilings: the largest limits any current
holder of the GPU has (``set_default_*`` for servers spawned later, ``set_*`` with the pid of each
running server). :class:`MPSDaemons` does the bookkeeping; the process work is the small
:class:`MPSControl` seam (the daemon cannot run without a GPU; tests record what it is asked).

A kernel's shares must lie on one GPU: an MPS client talks to one server (one pipe directory).

What MPS enforces (NVIDIA's MPS documentation): a client's ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``
only narrows the limit its *server* has (set through the control daemon: ``set_default_*`` for
servers spawned later, ``set_* <pid>`` for a running one); a control daemon runs one server per
user id at a time; several control daemons, each with its own ``CUDA_MPS_PIPE_DIRECTORY``, may
run side by side. Hence two isolation modes (``[plugins.cuda] mps-isolation``):

* ``"kernel"`` (default, :class:`KernelDaemons`): one control daemon per kernel holding shares,
  under ``<mps-root>/kernels/<token>/``, its server-level defaults set to that kernel's own limits
  before any server exists, its pipe directory mounted read-only into that container only. A
  kernel cannot raise its limits (its server has them) nor reach another kernel's daemon. Cost:
  kernels on one GPU are served by separate MPS servers, which the GPU time-slices rather than
  running their work concurrently. The token is recorded in the kernel's allocation (see
  :func:`instance_token`) so that release stops that daemon and a restarted agent re-adopts it.
* ``"gpu"`` (:class:`MPSDaemons`): one daemon per GPU shared by its kernels (concurrent
  execution), the server limits being the largest any holder has: a kernel may raise its own
  environment limits up to that ceiling.

Neither mode binds a process that bypasses MPS on purpose (points ``CUDA_MPS_PIPE_DIRECTORY`` at
an empty directory) while the GPU is in the DEFAULT compute mode, which several servers per GPU
need: such a process gets an ordinary CUDA context. scripts/gpu_check.py --shares checks the limits
on hardware.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import secrets
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

MiB = 2**20
DEFAULT_UNIT_MEM = 2 * 2**30
DEFAULT_MPS_ROOT = Path("/var/lib/bai/mps")
CONTAINER_PIPE_DIR = "/tmp/nvidia-mps"
SHARE_QUANTUM = Decimal("0.01")


def device_share_capacity(memory_total: int, unit_mem: int) -> Decimal:
    """How many shares a GPU with ``memory_total`` bytes offers (rounded down to 0.01)."""
    return (Decimal(memory_total) / Decimal(unit_mem)).quantize(SHARE_QUANTUM, rounding=ROUND_DOWN)


@dataclass(frozen=True, order=True)
class ClientLimits:
    thread_percentage: int            # 1..100
    pinned_mem_bytes: int             # a whole number of MiB

    @property
    def pinned_mem_text(self) -> str:
        return f"{self.pinned_mem_bytes // MiB}M"


def client_limits(shares: Decimal, capacity: Decimal, memory_total: int, unit_mem: int) -> ClientLimits:
    if shares <= 0 or capacity <= 0:
        raise ValueError(f"shares ({shares}) and capacity ({capacity}) must be > 0")
    percentage = math.ceil(Decimal(100) * shares / capacity)
    # All of a GPU's shares are all of its memory (the capacity was rounded down to 0.01).
    memory = memory_total if shares >= capacity else min(int(shares * unit_mem), memory_total)
    return ClientLimits(thread_percentage=max(1, min(100, percentage)),
                        pinned_mem_bytes=max(MiB, memory // MiB * MiB))


def client_env(limits: ClientLimits, pipe_dir: str = CONTAINER_PIPE_DIR) -> list[str]:
    return [
        f"CUDA_MPS_PIPE_DIRECTORY={pipe_dir}",
        f"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE={limits.thread_percentage}",
        f"CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0={limits.pinned_mem_text}",
    ]


def ceiling_of(holders: Iterable[ClientLimits]) -> ClientLimits | None:
    """The server-side limits that admit every current holder: the largest of each."""
    held = list(holders)
    if not held:
        return None
    return ClientLimits(max(h.thread_percentage for h in held), max(h.pinned_mem_bytes for h in held))


def control_commands(ceiling: ClientLimits, server_pids: Sequence[int] = ()) -> list[str]:
    """Lines for ``nvidia-cuda-mps-control`` that set the ceiling for new and running servers
    (device 0: each daemon serves one GPU)."""
    commands = [
        f"set_default_active_thread_percentage {ceiling.thread_percentage}",
        f"set_default_device_pinned_mem_limit 0 {ceiling.pinned_mem_text}",
    ]
    for pid in server_pids:
        commands += [
            f"set_active_thread_percentage {pid} {ceiling.thread_percentage}",
            f"set_device_pinned_mem_limit {pid} 0 {ceiling.pinned_mem_text}",
        ]
    return commands


def parse_server_list(output: str) -> list[int]:
    """``get_server_list`` answers one server pid per line."""
    return [int(line) for line in output.split() if line.strip().isdigit()]


@dataclass(frozen=True)
class DaemonDirs:
    root: Path

    @property
    def pipe(self) -> Path:
        return self.root / "pipe"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def shm(self) -> Path:
        return self.root / "shm"

    def binds(self) -> list[str]:
        return [f"{self.pipe}:{CONTAINER_PIPE_DIR}:rw", f"{self.shm}:/dev/shm:rw"]


class MPSControl(Protocol):
    """The process seam: start/stop one daemon, send it control lines."""

    async def start(self, uuid: str, dirs: DaemonDirs) -> None: ...

    async def send(self, dirs: DaemonDirs, commands: Sequence[str]) -> str: ...

    async def stop(self, dirs: DaemonDirs) -> None: ...


class MPSDaemons:
    """One MPS control daemon per GPU UUID, and the limits of the kernels each GPU serves."""

    def __init__(self, control: MPSControl, root: Path = DEFAULT_MPS_ROOT) -> None:
        self.control = control
        self.root = root
        self._started: set[str] = set()
        self._holders: dict[str, Counter[ClientLimits]] = {}
        self._ceilings: dict[str, ClientLimits] = {}
        self._lock = asyncio.Lock()

    def dirs(self, uuid: str) -> DaemonDirs:
        return DaemonDirs(self.root / uuid)

    @property
    def running(self) -> frozenset[str]:
        return frozenset(self._started)

    async def attach(self, uuid: str, limits: ClientLimits) -> DaemonDirs:
        """A kernel will run on ``uuid`` with ``limits``: start the daemon if needed, raise the
        ceiling if this kernel needs more than the current one."""
        async with self._lock:
            dirs = self.dirs(uuid)
            if uuid not in self._started:
                for path in (dirs.pipe, dirs.log, dirs.shm):
                    path.mkdir(parents=True, exist_ok=True)
                # The kernel's user must reach the pipes and shared memory the root daemon makes.
                os.chmod(dirs.pipe, 0o755)
                os.chmod(dirs.shm, 0o1777)
                await self.control.start(uuid, dirs)
                self._started.add(uuid)
            self._holders.setdefault(uuid, Counter())[limits] += 1
            await self._push_ceiling(uuid)
            return dirs

    async def detach(self, uuid: str, limits: ClientLimits) -> None:
        """A kernel on ``uuid`` ended: lower the ceiling to what the remaining kernels need."""
        async with self._lock:
            holders = self._holders.get(uuid)
            if not holders or holders[limits] <= 0:
                return
            holders[limits] -= 1
            if holders[limits] == 0:
                del holders[limits]
            if uuid in self._started:
                await self._push_ceiling(uuid)

    def holders(self, uuid: str) -> dict[ClientLimits, int]:
        return dict(self._holders.get(uuid, {}))

    async def _push_ceiling(self, uuid: str) -> None:
        ceiling = ceiling_of(self._holders.get(uuid, Counter()).elements())
        if ceiling is None or ceiling == self._ceilings.get(uuid):
            return
        dirs = self.dirs(uuid)
        try:
            servers = parse_server_list(await self.control.send(dirs, ["get_server_list"]))
            await self.control.send(dirs, control_commands(ceiling, servers))
        except (OSError, RuntimeError) as exc:
            log.error("MPS daemon of %s refused the limits %s: %s", uuid, ceiling, exc)
            return
        self._ceilings[uuid] = ceiling

    async def stop_all(self) -> None:
        async with self._lock:
            for uuid in sorted(self._started):
                try:
                    await self.control.stop(self.dirs(uuid))
                except (OSError, RuntimeError) as exc:
                    log.warning("stopping the MPS daemon of %s: %s", uuid, exc)
            self._started.clear()
            self._holders.clear()
            self._ceilings.clear()


class ProcessMPSControl:
    """The real seam: ``nvidia-cuda-mps-control`` processes (needs a GPU and the driver's tools)."""

    def __init__(self, binary: str = "nvidia-cuda-mps-control", timeout: float = 10.0) -> None:
        self.binary = binary
        self.timeout = timeout

    def _env(self, dirs: DaemonDirs, uuid: str | None = None) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "CUDA_MPS_PIPE_DIRECTORY": str(dirs.pipe), "CUDA_MPS_LOG_DIRECTORY": str(dirs.log)}
        if uuid is not None:
            env["CUDA_VISIBLE_DEVICES"] = uuid
        return env

    async def start(self, uuid: str, dirs: DaemonDirs) -> None:
        if (dirs.pipe / "control").exists():
            # A daemon left by an earlier agent (its kernels may still run): adopt it if it answers.
            try:
                await self.send(dirs, ["get_server_list"])
                return
            except (OSError, RuntimeError):
                log.info("stale MPS pipe directory %s: starting a new daemon", dirs.pipe)
        # A private mount namespace whose /dev/shm is the daemon's own directory (shared with its
        # clients' containers), then the daemon forks into the background (-d).
        script = 'mount --bind "$1" /dev/shm && exec "$2" -d'
        await self._run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                         str(dirs.shm), self.binary], self._env(dirs, uuid))

    async def send(self, dirs: DaemonDirs, commands: Sequence[str]) -> str:
        return await self._run([self.binary], self._env(dirs), "".join(f"{c}\n" for c in commands))

    async def stop(self, dirs: DaemonDirs) -> None:
        await self.send(dirs, ["quit"])

    async def _run(self, argv: list[str], env: Mapping[str, str], stdin: str | None = None) -> str:
        proc = await asyncio.create_subprocess_exec(
            *argv, env=dict(env), stdin=asyncio.subprocess.PIPE if stdin is not None else None,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), self.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"{argv[0]} did not answer within {self.timeout} s") from None
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:1])} exited {proc.returncode}: {err.decode(errors='replace')[-500:]}")
        return out.decode(errors="replace")


#: The device id prefix of the zero-amount entry that names a kernel's MPS daemon in its allocation.
INSTANCE_PREFIX = "mps-instance:"
_TOKEN_RE = re.compile(r"[0-9a-f]{16,64}")


def instance_token(per_device: Mapping[str, Decimal]) -> str | None:
    """The kernel's MPS daemon token recorded in its ``cuda.shares`` allocation, if any."""
    for device_id in per_device:
        if device_id.startswith(INSTANCE_PREFIX):
            token = device_id[len(INSTANCE_PREFIX):]
            if _TOKEN_RE.fullmatch(token):
                return token
    return None


def new_token() -> str:
    return secrets.token_hex(16)


def kernel_binds(dirs: DaemonDirs) -> list[str]:
    """A kernel's own daemon: its pipe directory read-only (clients connect to sockets and open
    pipes there, creating nothing), its shared memory read-write."""
    return [f"{dirs.pipe}:{CONTAINER_PIPE_DIR}:ro", f"{dirs.shm}:/dev/shm:rw"]


def kernel_commands(limits: ClientLimits, server_pids: Sequence[int] = ()) -> list[str]:
    """A kernel's own daemon: its limits as the server defaults and on any running server."""
    return control_commands(limits, server_pids)


class KernelDaemons:
    """One MPS control daemon per kernel holding ``cuda.shares`` (``mps-isolation = "kernel"``)."""

    def __init__(self, control: MPSControl, root: Path = DEFAULT_MPS_ROOT) -> None:
        self.control = control
        self.root = root / "kernels"
        self._running: dict[str, tuple[str, ClientLimits]] = {}
        self._lock = asyncio.Lock()

    def dirs(self, token: str) -> DaemonDirs:
        if not _TOKEN_RE.fullmatch(token):
            raise ValueError(f"not an MPS instance token: {token!r}")
        return DaemonDirs(self.root / token)

    @property
    def running(self) -> dict[str, tuple[str, ClientLimits]]:
        """``{token: (GPU uuid, limits)}`` of the daemons this agent started or re-adopted."""
        return dict(self._running)

    async def attach(self, token: str, uuid: str, limits: ClientLimits) -> DaemonDirs:
        """Start (or, after an agent restart, re-adopt) the kernel's daemon on ``uuid`` and give
        its server ``limits``; raises when the daemon refuses them (the kernel must not run
        without its limits)."""
        async with self._lock:
            dirs = self.dirs(token)
            if token in self._running:
                return dirs
            for path in (dirs.pipe, dirs.log, dirs.shm):
                path.mkdir(parents=True, exist_ok=True)
            os.chmod(dirs.pipe, 0o755)
            os.chmod(dirs.shm, 0o1777)
            try:
                await self.control.start(uuid, dirs)
                servers = parse_server_list(await self.control.send(dirs, ["get_server_list"]))
                await self.control.send(dirs, kernel_commands(limits, servers))
            except (OSError, RuntimeError):
                await self._stop(token, dirs)
                raise
            self._running[token] = (uuid, limits)
            return dirs

    async def detach(self, token: str) -> None:
        """The kernel ended: stop its daemon (and server) and remove its directories."""
        async with self._lock:
            self._running.pop(token, None)
            await self._stop(token, self.dirs(token))

    async def _stop(self, token: str, dirs: DaemonDirs) -> None:
        try:
            await self.control.stop(dirs)
        except (OSError, RuntimeError) as exc:
            log.warning("stopping the MPS daemon of kernel instance %s: %s", token, exc)
        shutil.rmtree(dirs.root, ignore_errors=True)

    async def sweep(self) -> list[str]:
        """Stop the daemons no kernel holds (their kernel ended while no agent ran, so nothing
        released them); call once the restarted agent has re-adopted its kernels."""
        async with self._lock:
            try:
                found = [p.name for p in self.root.iterdir() if p.is_dir() and _TOKEN_RE.fullmatch(p.name)]
            except FileNotFoundError:
                return []
            orphans = sorted(set(found) - set(self._running))
        for token in orphans:
            log.info("stopping the MPS daemon of kernel instance %s: no kernel holds it", token)
            await self.detach(token)
        return orphans

    def forget_all(self) -> None:
        """Agent shutdown: the daemons stay with their running kernels (a restarted agent
        re-adopts them through the kernels' allocations)."""
        self._running.clear()


def describe(limits: ClientLimits) -> dict[str, Any]:
    return {"thread_percentage": limits.thread_percentage, "pinned_mem": limits.pinned_mem_bytes}
