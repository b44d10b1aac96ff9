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

The container is not paused (its user keeps working; what was half-written at that instant is
what the image gets). One commit per kernel at a time (a second one: 409), each bounded by
:data:`COMMIT_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from bai.common.agent_rpc import AgentFailure, AgentTimeout, InvalidInput

log = logging.getLogger(__name__)

#: The longest one commit may take (a large container layer is written out in full).
COMMIT_TIMEOUT = 600.0
#: The labels a caller may add to the image.
CUSTOM_LABEL_PREFIX = "ai.backend.customized-image."


class CommitInProgress(InvalidInput):
    default_title = "A commit of this kernel is in progress"
    default_status = 409


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

    def __init__(self, docker: aiodocker.Docker, timeout: float = COMMIT_TIMEOUT) -> None:
        self._docker = docker
        self._timeout = timeout
        self._busy: set[str] = set()

    def in_progress(self, kernel_id: str) -> bool:
        return kernel_id in self._busy

    async def commit(self, kernel_id: str, container_id: str, base_image: str, canonical: str,
                     extra_labels: dict[str, str]) -> dict[str, Any]:
        """Commit the kernel's container to ``canonical``; ``{"image", "digest", "labels"}``."""
        repository, tag = split_reference(canonical)
        bad = sorted(k for k in extra_labels if not k.startswith(CUSTOM_LABEL_PREFIX))
        if bad:
            raise InvalidInput(f"only {CUSTOM_LABEL_PREFIX}* labels may be added, not {', '.join(bad)}")
        if kernel_id in self._busy:
            raise CommitInProgress(f"kernel {kernel_id} is being committed already; wait for that commit to end")
        self._busy.add(kernel_id)
        try:
            async with asyncio.timeout(self._timeout):
                return await self._commit(container_id, base_image, repository, tag, extra_labels)
        except TimeoutError as exc:
            raise AgentTimeout(f"committing kernel {kernel_id} took longer than {self._timeout:g} s") from exc
        except DockerError as exc:
            raise AgentFailure(f"docker could not commit kernel {kernel_id}: {exc.message}",
                               title="Commit failed") from exc
        finally:
            self._busy.discard(kernel_id)

    async def _commit(self, container_id: str, base_image: str, repository: str, tag: str,
                      extra_labels: dict[str, str]) -> dict[str, Any]:
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
        log.info("committing container %s to %s:%s", container_id[:12], repository, tag)
        reply = await container.commit(repository=repository, tag=tag, config={"Labels": labels}, pause=False,
                                       message=f"committed from {base_image} by the agent", timeout=self._timeout)
        digest = str(reply.get("Id") or "")
        # What Docker recorded, not what we asked for: the heartbeat reports the same.
        info = await self._docker.images.inspect(digest or f"{repository}:{tag}")
        return {"image": f"{repository}:{tag}", "digest": str(info.get("Id") or digest),
                "labels": dict((info.get("Config") or {}).get("Labels") or {})}
