"""Saving a running session as an image of its owner (``POST /session/{ref}/imagify``, the
official client's ``session convert-to-image``).

The session's main kernel is committed by its agent (``commit_kernel``) in a background task;
the image is then recorded in ``images`` as held by that agent, so the owner can start a
session from it at once (the agent's next heartbeat reports the same image). Its reference is
the base image's repository with the base tag plus ``-customized_<id>``, and it carries
``ai.backend.customized-image.{owner,name,id,user.email}``: only its owner sees it or starts
sessions from it (services/images.py). Committing under a name the owner already used for the
same base image replaces that image (same id, same reference); new names count against the
user resource policy's ``max_customized_image_count`` (negative: no limit).

When the session's project has a registry of its own (``groups.container_registry`` =
``{"registry", "project"}``) that is configured (etcd ``config/docker/registry/<host>``), the image
is named ``<registry>/<project>/<image name>:<tag>-customized_<id>`` and the agent pushes it
there with the registry's credentials, so any agent can pull it. Otherwise (the all-in-one node
has no registry) it stays on the agent that made it: sessions from it must run there.

The older ``POST /session/{ref}/commit`` (``session commit``) has the agent save the main kernel
as an image tar on its host instead (``<image-commit-path>/<owner e-mail>/<file>.tar``, agent.toml),
also in a background task; ``GET /session/{ref}/commit`` says whether a commit of the kernel is
``ongoing`` or the kernel is ``ready`` for one.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from bai.common.agent_rpc import AgentError
from bai.manager import errors
from bai.manager.store import images as image_store
from bai.manager.store import registries as registry_store
from bai.manager.store.keypairs import Requester

from .. import bgtasks
from ..context import ManagerContext
from .lookup import running_main

__all__ = ["IMAGE_NAME_PATTERN", "CommitInProgress", "commit_status", "commit_to_file", "imagify"]

log = logging.getLogger(__name__)

#: What the original accepts as the new image's name (a label value, not the reference).
IMAGE_NAME_PATTERN = r"^[a-zA-Z0-9\.\-_]+$"
MAX_IMAGE_NAME = 128
LABEL_NAME = "ai.backend.customized-image.name"
LABEL_ID = "ai.backend.customized-image.id"
LABEL_EMAIL = "ai.backend.customized-image.user.email"
_TAG_MARK = "customized_"
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
#: ``POST /session/{ref}/commit``: the tar's name, and the directory it goes to (the owner's e-mail).
FILENAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,123}$"
#: Seconds to ask the agent whether it still commits the kernel before starting another commit.
AGENT_STATUS_TIMEOUT = 5.0
_SUBDIR_RE = re.compile(r"^[A-Za-z0-9@_+-][A-Za-z0-9@._+-]{0,127}$")


class CommitInProgress(errors.ApiError):
    status, error_type, title = 409, errors.PROBS + "commit-in-progress", "The session is being committed already."


def _committing(ctx: ManagerContext) -> set[uuid.UUID]:
    """The kernels this manager is committing now (the agent refuses a second one anyway)."""
    found = ctx.extra.get("imagify.committing")
    if not isinstance(found, set):
        found = ctx.extra["imagify.committing"] = set()
    return found


async def _claim(ctx: ManagerContext, row: Any, main: Any) -> set[uuid.UUID]:
    """Mark the kernel as being committed by this manager, or refuse (409) when it is already:
    by this manager, or still by its agent for a manager that died meanwhile (whose task was
    reported lost). The caller discards the mark when its task ends or cannot start."""
    busy = _committing(ctx)
    refusal = CommitInProgress(f"Session {row.name} is being committed already; wait for that to end.")
    if main.id in busy:
        raise refusal
    try:
        reply = await ctx.agents.get(main.agent_addr).call("get_commit_status", {"kernel_id": str(main.id)},
                                                           request_timeout=AGENT_STATUS_TIMEOUT)
        ongoing = reply.get("status") == "ongoing"
    except AgentError:
        ongoing = False  # the task itself tells what is wrong with the agent
    if ongoing or main.id in busy:
        raise refusal
    busy.add(main.id)
    return busy


def base_tag(tag: str) -> str:
    """The tag without an earlier commit's ``-customized_<id>`` part."""
    return "-".join(part for part in tag.split("-") if not part.startswith(_TAG_MARK))


def _check_name(image_name: str) -> None:
    if not re.fullmatch(IMAGE_NAME_PATTERN, image_name) or len(image_name) > MAX_IMAGE_NAME:
        raise errors.InvalidAPIParameters(
            f"image_name must be 1-{MAX_IMAGE_NAME} characters of letters, digits, '.', '-' and '_'",
            data={"image_name": image_name[:200]})


async def commit_to_file(ctx: ManagerContext, requester: Requester, ref: str, filename: str | None, *,
                         owner_access_key: str | None = None) -> dict[str, str]:
    """Start saving the session's main kernel as an image tar on its agent:
    ``{"bgtask_id", "kernel", "path"}`` (the path on the agent host once the task is done)."""
    if filename is not None and not re.fullmatch(FILENAME_PATTERN, filename):
        raise errors.InvalidAPIParameters("filename must be a plain file name (letters, digits, '.', '-', '_')")
    owner, row, main = await running_main(ctx, requester, ref, owner_access_key)
    name = filename or f"{row.name}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    name = name if name.endswith(".tar") else f"{name}.tar"
    subdir = owner.email if _SUBDIR_RE.match(owner.email) else str(owner.user_uuid)
    busy = await _claim(ctx, row, main)

    async def body(progress: bgtasks.Progress) -> str:
        try:
            await progress.update(total=1, message=f"Saving the session as {subdir}/{name} on its agent")
            try:
                saved = await ctx.agents.get(main.agent_addr).save_kernel(str(main.id), subdir, name)
            except AgentError as exc:
                raise RuntimeError(_agent_failed(main, exc, "no file was saved")) from exc
            await progress.update(increment=1, message=f"Saved {saved['path']} ({saved['size']} bytes)")
            return str(saved["path"])
        finally:
            busy.discard(main.id)

    try:
        task_id = await bgtasks.of(ctx).start(body, owner=requester.access_key, name="commit", if_lost=(
            f"The agent {main.agent} may still finish saving {subdir}/{name}; "
            f"`GET /session/{row.name}/commit` says when it is no longer ongoing."))
    except BaseException:
        busy.discard(main.id)
        raise
    return {"bgtask_id": str(task_id), "kernel": str(main.id), "path": f"{subdir}/{name}"}


async def commit_status(ctx: ManagerContext, requester: Requester, ref: str, *,
                        owner_access_key: str | None = None) -> dict[str, str]:
    """``{"status": "ongoing" | "ready", "kernel"}`` of the session's main kernel."""
    _owner, _row, main = await running_main(ctx, requester, ref, owner_access_key)
    if main.id in _committing(ctx):
        return {"status": "ongoing", "kernel": str(main.id)}
    try:
        status = await ctx.agents.get(main.agent_addr).get_commit_status(str(main.id))
    except AgentError as exc:
        raise errors.InternalServerError(f"the session's agent did not answer: {exc.msg or exc.title}") from exc
    return {"status": status, "kernel": str(main.id)}


async def imagify(ctx: ManagerContext, requester: Requester, ref: str, image_name: str, *,
                  visibility: str = "user", owner_access_key: str | None = None) -> uuid.UUID:
    """Start committing the session ``ref`` as the image ``image_name``; the background task's id."""
    _check_name(image_name)
    if visibility != "user":
        raise errors.InvalidAPIParameters("image_visibility: only 'user' is supported")
    owner, row, main = await running_main(ctx, requester, ref, owner_access_key)
    owner_label = f"user:{owner.user_uuid}"
    async with ctx.db.connect() as conn:
        mine = await image_store.customized_of(conn, owner_label)
        limit = await image_store.customized_image_limit(conn, owner.user_uuid)
        project_registry = await image_store.project_registry(conn, row.group_id)
    repository, sep, tag = str(main.image).rpartition(":")
    if not sep or "/" in tag:
        raise errors.InvalidAPIParameters(f"The session's image {main.image} has no tag to derive a new one from.")
    push: dict[str, str | None] | None = None
    if project_registry is not None:
        host, project = project_registry
        settings = await registry_store.registry(ctx.etcd, host)
        if settings is not None:  # a project registry nobody configured cannot be pushed to
            _registry, _, path = repository.partition("/")
            repository = f"{host}/{project}/{path.split('/', 1)[-1]}"
            push = {"username": settings.username, "password": settings.password}
    same = [r for r in mine if r.labels.get(LABEL_NAME) == image_name and r.name.startswith(repository + ":")
            and _ID_RE.match(str(r.labels.get(LABEL_ID) or ""))]
    if same:
        custom_id = str(same[0].labels[LABEL_ID])
    else:
        taken = {str(r.labels.get(LABEL_ID) or r.name) for r in mine}
        if limit is not None and 0 <= limit <= len(taken):
            raise errors.QuotaExceeded(f"You have reached your customized image count quota ({limit}).")
        custom_id = uuid.uuid4().hex
    canonical = f"{repository}:{base_tag(tag)}-{_TAG_MARK}{custom_id}"
    labels = {image_store.CUSTOMIZED_OWNER: owner_label, LABEL_NAME: image_name, LABEL_ID: custom_id,
              LABEL_EMAIL: owner.email}
    busy = await _claim(ctx, row, main)
    try:
        return await bgtasks.of(ctx).start(
            _commit_body(ctx, main, canonical, labels, push, busy), owner=requester.access_key, name="imagify",
            if_lost=(f"The agent {main.agent} may still finish the image {canonical}: it then appears among "
                     "the owner's customized images (only the owner sees it) with the agent's next heartbeat."))
    except BaseException:
        busy.discard(main.id)
        raise


def _commit_body(ctx: ManagerContext, main: Any, canonical: str, labels: dict[str, str],
                 push: dict[str, str | None] | None, busy: set[uuid.UUID]) -> bgtasks.TaskBody:
    async def body(progress: bgtasks.Progress) -> str:
        try:
            doing = "Committing and pushing" if push is not None else "Committing"
            await progress.update(total=2, message=f"{doing} the session as {canonical}")
            try:
                result = await ctx.agents.get(main.agent_addr).commit_kernel(str(main.id), canonical, labels,
                                                                             push=push)
            except AgentError as exc:
                raise RuntimeError(_agent_failed(main, exc, "no image was recorded")) from exc
            await progress.update(increment=1, message=f"{'Pushed' if push is not None else 'Committed'} {canonical}")
            async with ctx.db.begin() as conn:
                await image_store.register_customized(conn, canonical, main.architecture, str(result["digest"]),
                                                      dict(result["labels"]), main.agent)
            log.info("kernel %s committed as %s", main.id, canonical)
            await progress.update(increment=1, message=f"Image ready: {canonical}")
            return canonical
        finally:
            busy.discard(main.id)
    return body


def _agent_failed(main: Any, exc: AgentError, outcome: str) -> str:
    """A failed commit's message, naming the agent: a lost connection or a timeout (the agent
    died or hangs mid-commit) tells the client to retry once the agent is back."""
    detail = exc.msg or exc.title
    if exc.status in (503, 504) or exc.type == "agent-timeout":
        return (f"the agent {main.agent} ({main.agent_addr}) stopped answering while committing the session "
                f"({detail}); {outcome}. Try again once the agent is back.")
    return f"the agent {main.agent} could not commit the session: {detail}; {outcome}."
