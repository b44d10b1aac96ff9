"""Saving a running kernel's container as a new image (``commit_kernel``, the manager's imagify).

``docker commit`` keeps the container's filesystem (what the user installed or wrote anywhere
outside mounts: bind-mounted paths such as the runner, the IPC directory and virtual folders are
never part of a container's layer) and turns the container's config into the image's. The
container's config carries what this agent put on it for one kernel only: its kernel, session,
owner and slot labels, its device allocation and published service ports. Docker's commit merges
every label of the container into the new image and cannot drop one, so each label the base image
did not have is overwritten with an empty value and the base image's own labels are restored (a
later kernel's container sets its own kernel, slot, device and port labels anyway).
The image keeps the base image's kernel labels (``ai.backend.kernelspec``, runtime type and path,
service ports, ...) so the agent runs it as a kernel like its base, and gains the labels the
caller asked for (``ai.backend.customized-image.*`` only).

``save_kernel`` (the older ``POST /session/{ref}/commit``) commits the container the same way
to an untagged image and writes that image as a ``docker save`` tar to
``<image-commit-path>/<subdir>/<filename>`` (root only, 0600; written aside and renamed, so a
file there is always whole), then removes the image. It refuses to overwrite a file, and to
start when the image would not fit on the disk with :data:`DISK_RESERVE` to spare.

With registry credentials in the request the committed image is pushed to the registry its
reference names, so that other agents can pull it.

The container is not paused (its user keeps working; what was half-written at that instant is
what the image gets). One commit of either kind per kernel at a time (a second one: 409), each
bounded by :data:`COMMIT_TIMEOUT`.

An agent killed mid-commit leaves nothing half-done visible: Docker finishes a commit its client
abandoned, so the container is committed untagged (the comment names this agent process,
:data:`COMMIT_MARK`) and tagged only once the agent has it; a tar is written to
``.<file>.<pid>.part`` and renamed when whole. :meth:`KernelCommits.sweep` (at the agent's start,
and before each commit) removes the untagged images and ``.part`` files of agent processes that
are gone, so heartbeats never report an image whose commit failed, and the commit lock (held in
memory) never outlives the process.

``remove_image`` (the manager forgetting a customized image) deletes such an image from this
agent: never forced, so an image a container still uses (running or stopped) stays, and only an
image with the ``ai.backend.customized-image.owner`` label (a session saved as an image): the
agent never deletes a kernel image on a manager's word.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from bai.common.agent_rpc import AgentFailure, AgentTimeout, InvalidInput

log = logging.getLogger(__name__)

#: The longest one commit may take (a large container layer is written out in full).
COMMIT_TIMEOUT = 600.0
#: The labels a caller may add to the image.
CUSTOM_LABEL_PREFIX = "ai.backend.customized-image."
#: ``user:<uuid>``: whose session the image was saved from; only such images may be removed.
CUSTOMIZED_OWNER_LABEL = CUSTOM_LABEL_PREFIX + "owner"
#: The kernel a container runs (bai.agent.docker), named when an image in use is refused.
_KERNEL_ID_LABEL = "ai.backend.kernel-id"
#: Free bytes a saved tar must leave on its filesystem.
DISK_RESERVE = 2**30
#: ``save_kernel`` names: a directory (the owner's e-mail address, as the original) and a file.
SUBDIR_RE = re.compile(r"^[A-Za-z0-9@_+-][A-Za-z0-9@._+-]{0,127}$")
FILENAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}\.tar$")
_CHUNK = 2**20
#: How an image this agent committed is marked (its Docker comment), and the pid of the agent
#: process that did: an untagged one whose process is gone is what a killed agent left.
COMMIT_MARK = "bai-agent commit"
_MARK_RE = re.compile(r"^bai-agent commit \(pid (?P<pid>\d+)\)")
_PART_RE = re.compile(r"^\..+\.(?P<pid>\d+)\.part$")


class CommitInProgress(InvalidInput):
    default_title = "A commit of this kernel is in progress"
    default_status = 409


class ImageInUse(InvalidInput):
    default_title = "Image in use"
    default_status = 409


class NotCustomizedImage(InvalidInput):
    default_title = "Not a customized image"
    default_status = 403


def split_reference(canonical: str) -> tuple[str, str]:
    """``registry/project/name:tag`` -> (``registry/project/name``, ``tag``); the tag is required."""
    repository, sep, tag = canonical.rpartition(":")
    if not sep or "/" in tag or not repository or not tag:
        raise InvalidInput(f"image reference without a tag: {canonical!r}")
    return repository, tag


def image_labels(base: dict[str, str], container: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """The new image's labels: the base image's, ``extra``, and an empty value for each label
    only the container had (Docker would copy it into the image otherwise)."""
    labels = {key: "" for key in container if key not in base}
    labels.update(base)
    labels.update(extra)
    return labels


class KernelCommits:
    """The commits in progress on this agent, one per kernel at most."""

    def __init__(self, docker: aiodocker.Docker, timeout: float = COMMIT_TIMEOUT,
                 save_base: Path = Path("/var/lib/bai/commit")) -> None:
        self._docker = docker
        self._timeout = timeout
        self._save_base = save_base
        self._busy: set[str] = set()

    def in_progress(self, kernel_id: str) -> bool:
        return kernel_id in self._busy

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, kernel_id: str) -> Any:
        if kernel_id in self._busy:
            raise CommitInProgress(f"kernel {kernel_id} is being committed already; wait for that commit to end")
        self._busy.add(kernel_id)
        try:
            async with asyncio.timeout(self._timeout):
                yield
        except TimeoutError as exc:
            raise AgentTimeout(f"committing kernel {kernel_id} took longer than {self._timeout:g} s") from exc
        except DockerError as exc:
            raise AgentFailure(f"docker could not commit kernel {kernel_id}: {exc.message}",
                               title="Commit failed") from exc
        finally:
            self._busy.discard(kernel_id)

    async def save(self, kernel_id: str, container_id: str, base_image: str, subdir: str,
                   filename: str) -> dict[str, Any]:
        """Commit the kernel's container and save the image as a tar file on this host;
        ``{"kernel", "path", "size"}``."""
        if not SUBDIR_RE.match(subdir) or not FILENAME_RE.match(filename):
            raise InvalidInput("subdir and filename must be plain names (filename ending in .tar)")
        directory = self._save_base / subdir
        target = directory / filename
        async with self._one_at_a_time(kernel_id):
            if target.exists():
                raise InvalidInput(f"{target} exists already", title="Commit file exists", status=409)
            await asyncio.to_thread(_make_private_dirs, self._save_base, directory)
            await self.sweep()
            reply = await self._commit(kernel_id, container_id, base_image, {})
            image_id = reply["digest"]
            part = directory / f".{filename}.{os.getpid()}.part"
            try:
                size = int((await self._docker.images.inspect(image_id)).get("Size") or 0)
                free = (await asyncio.to_thread(shutil.disk_usage, directory)).free
                if size + DISK_RESERVE > free:
                    raise AgentFailure(f"{size} bytes of image would leave less than {DISK_RESERVE} bytes free "
                                       f"in {directory}", title="Not enough disk space")
                written = await self._export(image_id, part)
                await asyncio.to_thread(os.replace, part, target)
            finally:
                with contextlib.suppress(DockerError):
                    await self._docker.images.delete(image_id, force=True)
                await asyncio.to_thread(part.unlink, missing_ok=True)
        log.info("kernel %s saved to %s (%d bytes)", kernel_id, target, written)
        return {"kernel": kernel_id, "path": str(target), "size": written}

    async def _export(self, image_id: str, part: Path) -> int:
        written = 0
        fd = await asyncio.to_thread(os.open, part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            async with self._docker.images.export_image(image_id) as stream:
                while chunk := await stream.read(_CHUNK):
                    await asyncio.to_thread(out.write, chunk)
                    written += len(chunk)
            await asyncio.to_thread(out.flush)
            await asyncio.to_thread(os.fsync, out.fileno())
        return written

    async def commit(self, kernel_id: str, container_id: str, base_image: str, canonical: str,
                     extra_labels: dict[str, str], *, push: dict[str, str | None] | None = None) -> dict[str, Any]:
        """Commit the kernel's container to ``canonical``; ``{"image", "digest", "labels", "pushed"}``.
        With ``push`` (``{"username", "password"}``, None values: anonymous) the image is then
        pushed to the registry the reference names."""
        repository, tag = split_reference(canonical)
        bad = sorted(k for k in extra_labels if not k.startswith(CUSTOM_LABEL_PREFIX))
        if bad:
            raise InvalidInput(f"only {CUSTOM_LABEL_PREFIX}* labels may be added, not {', '.join(bad)}")
        async with self._one_at_a_time(kernel_id):
            await self.sweep()
            done = await self._commit(kernel_id, container_id, base_image, extra_labels)
            try:
                await self._docker.images.tag(done["digest"], repository, tag=tag)
            except BaseException:
                with contextlib.suppress(DockerError):
                    await asyncio.shield(self._docker.images.delete(done["digest"]))
                raise
            if push is not None:
                await self._push(repository, tag, push)
            return {**done, "image": canonical, "pushed": push is not None}

    async def remove_image(self, canonical: str) -> bool:
        """Delete the customized image ``canonical`` from this host (not forced); False when it
        is not here. 403 for an image without the owner label, 409 while a container uses it."""
        try:
            info = await self._docker.images.inspect(canonical)
        except DockerError as exc:
            if exc.status == 404:
                return False
            raise AgentFailure(f"docker cannot inspect {canonical}: {exc.message}", title="Image removal failed") from exc
        labels = (info.get("Config") or {}).get("Labels") or {}
        if not labels.get(CUSTOMIZED_OWNER_LABEL):
            raise NotCustomizedImage(f"{canonical} has no {CUSTOMIZED_OWNER_LABEL} label: an agent removes only "
                                     "images sessions were saved as, never kernel images")
        image_id = str(info.get("Id") or "")
        # Docker names only one container in its refusal, and not the kernel: look first.
        users = await self._users(image_id)
        # An agent reads an image's service definitions from a container it creates and deletes
        # at once (services.ImageServices; any agent sharing this engine): such a probe is not a
        # use, so wait it out briefly rather than refuse (also beside a real user: the refusal
        # then names only what still uses the image).
        waited = asyncio.get_running_loop().time() + PROBE_GRACE
        while any(_is_probe(c) for c in users) and asyncio.get_running_loop().time() < waited:
            await asyncio.sleep(0.1)
            users = await self._users(image_id)
        if users:
            raise ImageInUse(f"{canonical} is in use by {_describe_users(users)} on this agent")
        try:
            await self._docker.images.delete(canonical, force=False)
        except DockerError as exc:
            if exc.status == 404:
                return False
            if exc.status == 409:  # a container created since we looked
                raise ImageInUse(f"{canonical} is in use on this agent: {exc.message}") from exc
            raise AgentFailure(f"docker cannot remove {canonical}: {exc.message}", title="Image removal failed") from exc
        log.info("removed the customized image %s", canonical)
        return True

    async def _users(self, image_id: str) -> list[Any]:
        return [c for c in await self._docker.containers.list(all=True, filters=json.dumps({"ancestor": [image_id]}))
                if _field(c, "ImageID") == image_id]

    async def sweep(self) -> None:
        """Remove what commits of agent processes that are gone left behind: their untagged images
        (Docker finished them after the agent died) and their ``.part`` files. Never raises."""
        try:
            dangling = await self._docker.images.list(filters={"dangling": ["true"]})
            for summary in dangling:
                info = await self._docker.images.inspect(summary["Id"])
                found = _MARK_RE.match(str(info.get("Comment") or ""))
                if found and not _alive(int(found["pid"])):
                    log.info("removing image %s an interrupted commit left", summary["Id"][:19])
                    with contextlib.suppress(DockerError):  # a container uses it: keep it
                        await self._docker.images.delete(summary["Id"])
            await asyncio.to_thread(_remove_stale_parts, self._save_base)
        except Exception as exc:
            log.warning("cannot clean up after interrupted commits: %r", exc)

    async def _push(self, repository: str, tag: str, credentials: dict[str, str | None]) -> None:
        if "/" not in repository:
            raise InvalidInput(f"{repository} names no registry to push to")
        auth = None
        if credentials.get("username"):
            auth = {"username": credentials["username"], "password": credentials.get("password") or ""}
        log.info("pushing %s:%s", repository, tag)
        try:
            async for item in self._docker.images.push(repository, tag=tag, auth=auth, stream=True,
                                                       timeout=self._timeout):
                if item.get("error"):
                    raise AgentFailure(f"cannot push {repository}:{tag}: {item['error']}", title="Push failed")
        except DockerError as exc:
            raise AgentFailure(f"cannot push {repository}:{tag}: {exc.message}", title="Push failed") from exc

    async def _commit(self, kernel_id: str, container_id: str, base_image: str,
                      extra_labels: dict[str, str]) -> dict[str, Any]:
        """Commit the container to an untagged image: ``{"digest", "labels"}``."""
        container = self._docker.containers.container(container_id)
        shown = await container.show()
        container_labels = dict((shown.get("Config") or {}).get("Labels") or {})
        try:
            base = await self._docker.images.inspect(base_image)
        except DockerError as exc:
            if exc.status != 404:
                raise
            raise AgentFailure(f"the kernel's image {base_image} is gone from this agent", title="Commit failed") from exc
        base_labels = dict((base.get("Config") or {}).get("Labels") or {})
        labels = image_labels(base_labels, container_labels, extra_labels)
        log.info("committing container %s of kernel %s", container_id[:12], kernel_id)
        reply = await container.commit(config={**_image_config(base, shown), "Labels": labels}, pause=False,
                                       timeout=self._timeout,
                                       message=f"{COMMIT_MARK} (pid {os.getpid()}) of kernel {kernel_id} "
                                               f"from {base_image}")
        digest = str(reply.get("Id") or "")
        if not digest:
            raise AgentFailure("docker reported no image id for the commit", title="Commit failed")
        # What Docker recorded, not what we asked for: the heartbeat reports the same.
        info = await self._docker.images.inspect(digest)
        return {"digest": str(info.get("Id") or digest), "labels": dict((info.get("Config") or {}).get("Labels") or {})}


def _make_private_dirs(base: Path, directory: Path) -> None:
    """``base`` and ``directory`` below it, root's only (saved images may hold users' secrets)."""
    for path in (base, directory):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.is_symlink() or not path.is_dir():
            raise AgentFailure(f"{path} is not a directory", title="Commit failed")
        path.chmod(0o700)


def _image_config(base: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """The run settings a saved image keeps: its base image's, not the kernel container's.

    Docker's commit takes every setting the request leaves empty from the container, and adds
    each container variable the request does not name. The container's environment holds the
    session's (BACKENDAI_* ids, the user's variables, which may be secrets): those are named with
    an empty value, so the image carries their names only. A session of the image sets its own."""
    config = base.get("Config") or {}
    env = list(config.get("Env") or [])
    named = {item.partition("=")[0] for item in env}
    for item in (container.get("Config") or {}).get("Env") or []:
        key = str(item).partition("=")[0]
        if key not in named:
            named.add(key)
            env.append(f"{key}=")
    kept = {"Env": env, "Cmd": config.get("Cmd"), "Entrypoint": config.get("Entrypoint"),
            "WorkingDir": config.get("WorkingDir")}
    return {key: value for key, value in kept.items() if value}


#: Seconds remove_image waits for other agents' service-definition probes to go.
PROBE_GRACE = 5.0


def _is_probe(container: Any) -> bool:
    """A created, never started container that is no kernel's (a service-definition probe), or
    any container Docker is removing (seen under load: a probe on its way out)."""
    state = _field(container, "State")
    return state == "removing" or (state == "created" and not (_field(container, "Labels") or {}).get(_KERNEL_ID_LABEL))


def _describe_users(containers: list[Any]) -> str:
    """``the running container c1 (kernel k1), the exited container c2`` (at most three named)."""
    named = []
    for c in containers[:3]:
        name = str((_field(c, "Names") or [str(_field(c, "Id") or "")[:12]])[0]).lstrip("/")
        kernel = (_field(c, "Labels") or {}).get(_KERNEL_ID_LABEL)
        named.append(f"the {_field(c, 'State') or 'existing'} container {name}" + (f" (kernel {kernel})" if kernel else ""))
    more = len(containers) - len(named)
    return ", ".join(named) + (f" and {more} more" if more > 0 else "")


def _field(container: Any, key: str) -> Any:
    """A field of a container listing entry (aiodocker's DockerContainer), None when absent."""
    return container[key] if key in container else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_parts(base: Path) -> None:
    """``<base>/<subdir>/.<file>.<pid>.part`` of agent processes that are gone (never renamed)."""
    if not base.is_dir() or base.is_symlink():
        return
    for directory in base.iterdir():
        if directory.is_symlink() or not directory.is_dir():
            continue
        for entry in directory.iterdir():
            found = _PART_RE.match(entry.name)
            if found and not _alive(int(found["pid"])) and not entry.is_symlink():
                log.info("removing %s an interrupted commit left", entry)
                entry.unlink(missing_ok=True)
