"""Kernel containers through the Docker engine API (aiodocker): build, start, stop, remove, watch.

Every container this agent creates carries ``ai.backend.owner=<agent id>`` so that listing,
re-adoption after a restart and the event watch only ever see our own containers (other
software may share the Docker engine).

Confinement (:func:`container_config`): everything in a kernel container runs as the
configured non-root uid/gid, with ``no-new-privileges``, no capabilities at all, Docker's
default seccomp profile (never ``unconfined``), a pids limit, rotated json-file logs, memory
(without extra swap) and CPU limits. Host paths are bind-mounted read-only only: the runner
package and the kernel's IPC directory (where the AGENT owns the socket); the owner's SSH keys
are mounts too, never in the container's layer (``dotfiles.ssh_key_mounts``, added by the agent).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from bai.common.agent_rpc import KernelCreationConfig
from bai.common.tasks import raise_if_cancelling
from bai.common.types import ResourceSlots, parse_binary_size, slots_to_json

log = logging.getLogger(__name__)

LABEL_KERNEL_ID = "ai.backend.kernel-id"
LABEL_SESSION_ID = "ai.backend.session-id"
LABEL_OWNER = "ai.backend.owner"
#: What the kernel holds, so a restarted agent can rebuild its slot accounting from a listing.
LABEL_SLOTS = "ai.backend.internal.resource-slots"
LABEL_KERNELSPEC = "ai.backend.kernelspec"
LABEL_RUNTIME_PATH = "ai.backend.runtime-path"
LABEL_CORECOUNT_ENVS = "ai.backend.envs.corecount"

RUNNER_MOUNT = "/opt/bai/kernel/bai_kernel"
RUNNER_PYTHONPATH = "/opt/bai/kernel"
IPC_MOUNT = "/opt/bai/ipc"
WORK_DIR = "/home/work"
DEFAULT_RUNTIME_PATH = "/usr/bin/python3"
DEFAULT_SHMEM = 64 * 2**20

DieCallback = Callable[[str, str, int | None], Awaitable[None]]
OomCallback = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Confinement:
    """The per-agent container limits (``[container]`` of agent.toml)."""

    uid: int
    gid: int
    pids_limit: int = 4096
    log_max_size: int = 10 * 2**20
    log_max_files: int = 3


class ImageNotFound(Exception):
    pass


class ImagePullFailed(Exception):
    """Docker could not pull an image (unknown image, registry down, refused credentials)."""


#: The longest a pull may take (the manager's stuck-session sweep usually ends it sooner).
PULL_TIMEOUT = 3600.0
#: (bytes downloaded, bytes to download) over the layers Docker reported so far.
PullProgress = Callable[[int, int], Awaitable[None]]


def host_ulimits() -> list[dict[str, int | str]]:
    """The original asks for nofile=1048576 and unlimited memlock; a container cannot start with
    limits above the host's hard limits, so each is capped there."""
    wanted = {"nofile": (resource.RLIMIT_NOFILE, 1048576), "memlock": (resource.RLIMIT_MEMLOCK, -1)}
    out: list[dict[str, int | str]] = []
    for name, (which, want) in wanted.items():
        hard = resource.getrlimit(which)[1]
        if hard != resource.RLIM_INFINITY:
            want = hard if want == -1 else min(want, hard)
        out.append({"Name": name, "Soft": want, "Hard": want})
    return out


def check_mount_sources(config: KernelCreationConfig) -> None:
    """Every folder to bind must be an existing real directory: Docker would create a missing
    bind source as root, and a symlink could point the bind anywhere on the host."""
    for mount in config.mounts:
        path = Path(mount.host_path)
        if path.is_symlink() or not path.is_dir() or os.path.realpath(path) != str(path):
            raise ValueError(f"mount source is not a real directory: {mount.host_path}")


def container_name(kernel_id: str) -> str:
    return f"kernel.{kernel_id}"


def container_config(
    *,
    kernel_id: str,
    session_id: str,
    owner: str,
    config: KernelCreationConfig,
    slots: ResourceSlots,
    image_labels: dict[str, str],
    runner_dir: Path,
    ipc_dir: Path,
    ulimits: list[dict[str, int | str]],
    confinement: Confinement,
) -> dict[str, Any]:
    """The create-container body for one kernel (a pure function, so it is testable without Docker)."""
    runtime_path = image_labels.get(LABEL_RUNTIME_PATH) or DEFAULT_RUNTIME_PATH
    environ = dict(config.environ)
    # The runner needs PYTHONPATH to find itself; a PYTHONPATH the user asked for is moved aside
    # and restored by the runner for user code only.
    user_pythonpath = environ.pop("PYTHONPATH", None)
    cpu = slots.get("cpu", Decimal(0))
    environ.update({
        "HOME": WORK_DIR,
        "BACKENDAI_KERNEL_ID": kernel_id,
        "BACKENDAI_SESSION_ID": session_id,
        "BACKENDAI_KERNEL_IMAGE": config.image.canonical,
        "BACKENDAI_CLUSTER_ROLE": config.cluster_role,
        "BACKENDAI_CLUSTER_IDX": str(config.cluster_idx),
        "BACKENDAI_CLUSTER_LOCAL_RANK": str(config.local_rank),
        "BACKENDAI_CLUSTER_HOST": config.cluster_hostname,
        "PYTHONPATH": RUNNER_PYTHONPATH,
    })
    if user_pythonpath:
        environ["BAI_ORIG_PYTHONPATH"] = user_pythonpath
    if cpu > 0:
        for name in filter(None, (image_labels.get(LABEL_CORECOUNT_ENVS) or "").split(",")):
            environ[name.strip()] = str(math.ceil(cpu))
    shmem = parse_binary_size(config.resource_opts.get("shmem") or DEFAULT_SHMEM)
    host_config: dict[str, Any] = {
        "Init": True,
        "ShmSize": shmem,
        "Ulimits": ulimits,
        # No capabilities (the original adds IPC_LOCK and SYS_NICE: root-only powers a non-root
        # user could not use anyway) and no way to gain any (setuid binaries, file caps).
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges:true"],
        "PidsLimit": confinement.pids_limit,
        "LogConfig": {"Type": "json-file", "Config": {
            "max-size": str(confinement.log_max_size), "max-file": str(confinement.log_max_files)}},
        # Read-only, both: the container can write no host path but the virtual folders it
        # mounts read-write (ro folders are bound read-only: writes fail with EROFS).
        "Binds": [f"{runner_dir}:{RUNNER_MOUNT}:ro", f"{ipc_dir}:{IPC_MOUNT}:ro",
                  *(f"{m.host_path}:{m.kernel_path}:{'ro' if m.permission == 'ro' else 'rw'}"
                    for m in config.mounts)],
    }
    if cpu > 0:
        host_config["NanoCpus"] = int(cpu * 10**9)
    if (mem := int(slots.get("mem", 0))) > 0:
        host_config["Memory"] = mem
        # Swap would let a kernel exceed its memory slot without the scheduler knowing.
        host_config["MemorySwap"] = mem
    return {
        "Image": config.image.canonical,
        "Cmd": [runtime_path, "-s", "-m", "bai_kernel"],
        "User": f"{confinement.uid}:{confinement.gid}",
        "Env": [f"{k}={v}" for k, v in environ.items()],
        "WorkingDir": WORK_DIR,
        "Hostname": config.cluster_hostname,
        "Labels": {
            LABEL_KERNEL_ID: kernel_id,
            LABEL_SESSION_ID: session_id,
            LABEL_OWNER: owner,
            LABEL_SLOTS: json.dumps(slots_to_json(slots)),
        },
        "HostConfig": host_config,
    }


_EXITED_RE = re.compile(r"Exited \((-?\d+)\)")


def exit_code_from_status(status: str) -> int | None:
    """``"Exited (137) 2 minutes ago"`` -> 137 (the container listing has no numeric field)."""
    m = _EXITED_RE.search(status or "")
    return int(m.group(1)) if m else None


class DockerKernels:
    def __init__(self, docker: aiodocker.Docker, owner: str) -> None:
        self.docker = docker
        self.owner = owner
        self._image_labels: dict[str, dict[str, str]] = {}

    # --- images -----------------------------------------------------------------------------

    async def image_labels(self, canonical: str) -> dict[str, str]:
        """Labels of a local image; cached, because they never change for a given tag's image
        and an inspect per kernel would sit on the creation hot path."""
        if (labels := self._image_labels.get(canonical)) is not None:
            return labels
        try:
            info = await self.docker.images.inspect(canonical)
        except DockerError as exc:
            if exc.status == 404:
                raise ImageNotFound(f"image {canonical} is not on this agent") from exc
            raise
        labels = dict((info.get("Config") or {}).get("Labels") or {})
        self._image_labels[canonical] = labels
        return labels

    def forget_image(self, canonical: str) -> None:
        """Drop what the cache knows of an image Docker turned out not to have."""
        self._image_labels.pop(canonical, None)

    async def has_image(self, canonical: str) -> bool:
        """Whether the image is here: free for the images the last heartbeat listed (the labels
        cache), one inspect otherwise."""
        if canonical in self._image_labels:
            return True
        try:
            await self.image_labels(canonical)
        except ImageNotFound:
            return False
        return True

    async def pull(self, canonical: str, auth: dict[str, str] | None, on_progress: PullProgress) -> None:
        """Pull ``canonical`` from its registry, reporting the bytes downloaded of all layers
        (layers that already exist here count as nothing to download)."""
        layers: dict[str, tuple[int, int]] = {}
        try:
            async with asyncio.timeout(PULL_TIMEOUT):
                async for item in self.docker.images.pull(canonical, auth=auth, stream=True, timeout=None):
                    if item.get("error"):
                        raise ImagePullFailed(f"cannot pull {canonical}: {item['error']}")
                    layer, status = item.get("id"), item.get("status") or ""
                    detail = item.get("progressDetail") or {}
                    if not layer:
                        continue
                    if status == "Downloading" and detail.get("total"):
                        layers[layer] = (int(detail.get("current") or 0), int(detail["total"]))
                    elif status in ("Download complete", "Pull complete") and layer in layers:
                        layers[layer] = (layers[layer][1], layers[layer][1])
                    else:
                        continue
                    await on_progress(sum(c for c, _ in layers.values()), sum(t for _, t in layers.values()))
        except DockerError as exc:
            raise ImagePullFailed(f"cannot pull {canonical}: {exc.message}") from exc
        except TimeoutError:
            raise ImagePullFailed(f"cannot pull {canonical}: not done within {PULL_TIMEOUT:.0f} s") from None
        # The pull answered without an error; make sure the image is really here now.
        self.forget_image(canonical)
        if not await self.has_image(canonical):
            raise ImagePullFailed(f"cannot pull {canonical}: Docker reported no error but has no such image")

    async def list_kernel_images(self) -> list[dict[str, Any]]:
        """Local images carrying ``ai.backend.kernelspec``, for the heartbeat; refreshes the cache."""
        images = await self.docker.images.list(filters={"label": [LABEL_KERNELSPEC]})
        out: list[dict[str, Any]] = []
        cache: dict[str, dict[str, str]] = {}
        for image in images:
            tags = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
            if not tags:
                continue
            labels = dict(image.get("Labels") or {})
            for tag in tags:
                cache[tag] = labels
            out.append({"canonical": tags[0], "digest": image["Id"], "labels": labels})
        self._image_labels = cache
        return out

    async def has_seccomp(self) -> bool:
        """Whether the engine applies a seccomp profile (its default one, as we ask for no other)."""
        info = await self.docker.system.info()
        return any("seccomp" in str(opt) for opt in info.get("SecurityOptions") or [])

    # --- containers -------------------------------------------------------------------------

    async def create_and_start(self, name: str, config: dict[str, Any]) -> str:
        try:
            container = await self.docker.containers.create(config, name=name)
        except DockerError as exc:
            if exc.status == 404:  # the only thing a create can miss
                raise ImageNotFound(f"image {config.get('Image')} is not on this agent: {exc.message}") from exc
            raise
        try:
            await container.start()
        except BaseException:
            await self.remove(container.id)
            raise
        return container.id

    async def kill_and_wait(self, container_id: str) -> int | None:
        """SIGKILL the container and return its exit code once it is stopped (None if it is gone)."""
        container = self.docker.containers.container(container_id)
        try:
            await container.kill()
        except DockerError as exc:
            if exc.status == 404:
                return None
            if exc.status != 409:  # 409: not running any more, which is what we want
                raise
        try:
            result = await container.wait()
        except DockerError as exc:
            if exc.status == 404:
                return None
            raise
        code = result.get("StatusCode")
        return int(code) if code is not None else None

    async def remove(self, container_id: str) -> None:
        try:
            await self.docker.containers.container(container_id).delete(force=True)
        except DockerError as exc:
            if exc.status == 409 and "in progress" in str(exc.message):
                return  # someone else (e.g. `docker rm`) is already removing it
            if exc.status != 404:
                raise

    async def owned_containers(self, kernel_id: str | None = None) -> list[dict[str, Any]]:
        """Listing entries (running or not) of our kernel containers, optionally one kernel's."""
        labels = [f"{LABEL_OWNER}={self.owner}"]
        if kernel_id is not None:
            labels = [f"{LABEL_KERNEL_ID}={kernel_id}"]
        containers = await self.docker.containers.list(all=True, filters=json.dumps({"label": labels}))
        return [c._container for c in containers]

    async def is_running(self, container_id: str) -> bool:
        try:
            info = await self.docker.containers.container(container_id).show()
        except DockerError as exc:
            if exc.status == 404:
                return False
            raise
        return bool(info.get("State", {}).get("Running"))

    async def logs(self, container_id: str, tail_lines: int, max_bytes: int) -> tuple[str, bool]:
        """The last ``tail_lines`` lines of the container's log, cut to their last ``max_bytes``
        bytes; and whether anything was left out by the byte cut. Docker splits log lines at
        16 KiB, so even one endless line costs at most ``tail_lines * 16 KiB`` here."""
        lines = await self.docker.containers.container(container_id).log(
            stdout=True, stderr=True, tail=str(tail_lines), timeout=30.0)
        kept: list[str] = []
        size = 0
        for line in reversed(lines):
            size += len(line.encode("utf-8", "surrogatepass"))
            if size > max_bytes:
                return "".join(reversed(kept)), True
            kept.append(line)
        return "".join(reversed(kept)), False

    async def watch_deaths(self, on_die: DieCallback, since: float, on_oom: OomCallback | None = None) -> None:
        """Call ``on_die(kernel_id, container_id, exit_code)`` for each of our containers that
        stops, and ``on_oom(kernel_id)`` when the OOM killer strikes in one, forever. ``since``
        replays earlier events, so nothing is lost between a listing and the moment the stream
        is up (or while it reconnects); callbacks must be idempotent."""
        filters = json.dumps({"type": ["container"], "event": ["die", "oom"],
                              "label": [f"{LABEL_OWNER}={self.owner}"]})
        subscriber = self.docker.events.subscribe(create_task=False)
        while True:
            stream = asyncio.create_task(self.docker.events.run(filters=filters, since=str(int(since))))
            try:
                while (event := await subscriber.get()) is not None:
                    stamp = event.get("time")
                    if stamp is not None:
                        since = stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)
                    attrs = (event.get("Actor") or {}).get("Attributes") or {}
                    kernel_id = attrs.get(LABEL_KERNEL_ID)
                    if not kernel_id:
                        continue
                    raw_code = attrs.get("exitCode")
                    try:
                        if event.get("Action") == "oom":
                            if on_oom is not None:
                                await on_oom(kernel_id)
                            continue
                        await on_die(kernel_id, str(event.get("id") or event.get("Actor", {}).get("ID")),
                                     int(raw_code) if raw_code is not None else None)
                    except Exception:
                        raise_if_cancelling()
                        log.exception("handling the death of kernel %s", kernel_id)
            finally:
                if not stream.done():
                    stream.cancel()
                try:
                    await stream
                except asyncio.CancelledError:
                    if not stream.cancelled():
                        raise
                except Exception as exc:
                    raise_if_cancelling()
                    log.warning("docker event stream failed: %s", exc)
            # The stream ended (Docker restarted?): reconnect, replaying from the last event seen.
            since = min(since, time.time())
            await asyncio.sleep(1.0)
