"""A small async API for compute sessions, sending what the official SDK 24.03 sends.

* :func:`create` — ``POST /session`` (body shape of ``wire/20-session-create.txt``)
* :func:`get_info` — ``GET /session/{ref}``
* :func:`destroy` — ``DELETE /session/{ref}[?forced=true&recursive=true&owner_access_key=..]``
* :func:`execute` — REST ``POST /session/{ref}`` with the continue/input loop
* :func:`stream_execute` — websocket ``/stream/session/{ref}/execute``
* :func:`list_sessions` — GraphQL ``compute_session_list`` (exact query of ``wire/27``)
"""

from __future__ import annotations

import inspect
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .config import DEFAULT_IMAGE_ARCH
from .exceptions import BackendClientError
from .helpers import (
    ACTIVE_STATUSES,
    ALL_STATUSES,
    DEAD_STATUSES,
    RUNNING_STATUSES,
    generate_session_name,
    parse_env,
    parse_resources,
)
from .request import APISession

__all__ = (
    "SessionCreated",
    "ExecutionResult",
    "SessionPage",
    "ACTIVE_STATUSES",
    "RUNNING_STATUSES",
    "DEAD_STATUSES",
    "ALL_STATUSES",
    "SESSION_LIST_QUERY",
    "create",
    "session_created",
    "rename",
    "status_history",
    "convert_to_image",
    "commit",
    "get_info",
    "destroy",
    "execute",
    "execute_once",
    "stream_execute",
    "list_sessions",
    "iter_sessions",
    "generate_session_name",
    "parse_resources",
    "parse_env",
)

#: Byte-for-byte the query the official CLI sends for ``backend.ai ps`` (wire/27).
SESSION_LIST_QUERY = (
    "query($limit:Int!, $offset:Int!, $status: String, $access_key: String, $filter: String, "
    "$order: String) {\n"
    "  compute_session_list(\n"
    "      limit:$limit, offset:$offset, status:$status, access_key:$access_key, filter:$filter, "
    "order:$order) {\n"
    "    items { name access_key id group_name main_kernel_id image type status status_info "
    "status_changed result }\n"
    "    total_count\n"
    "  }\n"
    "}"
)
SESSION_LIST_FIELDS = (
    "name",
    "access_key",
    "id",
    "group_name",
    "main_kernel_id",
    "image",
    "type",
    "status",
    "status_info",
    "status_changed",
    "result",
)
MAX_PAGE_SIZE = 100

#: statuses after which an execution run is over
_FINAL_RUN_STATUSES = frozenset({"finished", "exec-timeout"})
_CONTINUE_RUN_STATUSES = frozenset({"continued", "build-finished", "clean-finished"})


def _params(owner_access_key: str | None) -> dict[str, str]:
    return {"owner_access_key": owner_access_key} if owner_access_key else {}


# ---------------------------------------------------------------------------------------------
# create / info / destroy


@dataclass
class SessionCreated:
    session_id: str | None
    name: str
    status: str
    created: bool
    service_ports: list[Any]
    domain: str
    group: str
    raw: dict[str, Any] = field(default_factory=dict)


async def create(
    api: APISession,
    image: str,
    *,
    name: str | None = None,
    type_: str = "interactive",
    starts_at: str | None = None,
    enqueue_only: bool = False,
    max_wait: int = 0,
    no_reuse: bool = False,
    dependencies: Sequence[str] | None = None,
    callback_url: str | None = None,
    mounts: Sequence[str] | None = None,
    mount_map: Mapping[str, str] | None = None,
    mount_options: Mapping[str, Mapping[str, str]] | None = None,
    environ: Mapping[str, str] | None = None,
    startup_command: str | None = None,
    resources: Mapping[str, str | int] | None = None,
    resource_opts: Mapping[str, str | int] | None = None,
    cluster_size: int = 1,
    cluster_mode: str = "single-node",
    domain: str | None = None,
    group: str | None = None,
    bootstrap_script: str | None = None,
    tag: str | None = None,
    architecture: str = DEFAULT_IMAGE_ARCH,
    scaling_group: str | None = None,
    owner_access_key: str | None = None,
    preopen_ports: Sequence[int] | None = None,
    assign_agent: Sequence[str] | None = None,
) -> SessionCreated:
    """``POST /session``: get-or-create a session (201 for new and reused ones).

    The body has the root fields, key order and value shapes of the official SDK's
    ``ComputeSession.get_or_create`` (``session create`` passes ``dependencies=[]``; ``run``
    passes ``dependencies=None, preopen_ports=[]``, as the official CLI does).
    """
    if name is None:
        name = generate_session_name()
    elif not 4 <= len(name) <= 64:
        raise BackendClientError("The session name must be 4 to 64 characters long.")
    cfg = api.config
    domain = domain if domain is not None else cfg.domain
    group = group if group is not None else cfg.group
    all_mounts = [*(mounts or []), *cfg.vfolder_mounts]
    ver = api.api_version
    body: dict[str, Any] = {
        "tag": tag,
        ("clientSessionToken" if ver[0] <= 4 else "name"): name,
        "config": {
            "mounts": all_mounts,
            "environ": dict(environ) if environ is not None else {},
            "resources": dict(resources or {}),
            "resource_opts": dict(resource_opts or {}),
            "scalingGroup": scaling_group,
        },
    }
    if ver >= (6, "20220315"):
        body["dependencies"] = list(dependencies) if dependencies is not None else None
        body["callback_url"] = callback_url
        body["architecture"] = architecture
    if ver >= (6, "20200815"):
        body["clusterSize"] = cluster_size
        body["clusterMode"] = cluster_mode
    else:
        body["config"]["clusterSize"] = cluster_size
    if ver >= (5, "20191215"):
        body["starts_at"] = starts_at
        body["bootstrap_script"] = bootstrap_script
        body["config"].update(
            {
                "mount_map": dict(mount_map or {}),
                "mount_options": {k: dict(v) for k, v in (mount_options or {}).items()},
                "preopen_ports": list(preopen_ports) if preopen_ports is not None else None,
            }
        )
        if assign_agent is not None:
            body["config"]["agentList"] = list(assign_agent)
    body.update(
        {
            "owner_access_key": owner_access_key,
            "domain": domain,
            "group": group,
            "type": type_,
            "enqueueOnly": enqueue_only,
            "maxWaitSeconds": max_wait,
            "reuseIfExists": not no_reuse,
            "startupCommand": startup_command,
        }
    )
    body["image" if ver > (4, "20181215") else "lang"] = image
    data = await api.request_json("POST", "/session" if ver[0] > 4 else "/kernel", json_body=body)
    if not isinstance(data, dict):
        raise BackendClientError("The API server returned a malformed session creation answer")
    return session_created(data, name=name, domain=domain, group=group)


def session_created(data: dict[str, Any], *, name: str, domain: str, group: str) -> SessionCreated:
    """A session creation answer (``POST /session`` and ``/session/_/create-from-template``)."""
    sid = data.get("sessionId")
    ports = data.get("servicePorts")
    if ports is None:
        ports = data.get("service_ports") or []  # the reuse path answers in snake_case
    return SessionCreated(
        session_id=str(sid) if sid is not None else None,
        name=str(data.get("sessionName") or name),
        status=str(data.get("status", "RUNNING")),
        created=bool(data.get("created", True)),
        service_ports=list(ports),
        domain=domain,
        group=group,
        raw=data,
    )


async def get_info(api: APISession, ref: str, *, owner_access_key: str | None = None) -> dict[str, Any]:
    """``GET /session/{ref}`` (ref = name or UUID)."""
    data = await api.request_json("GET", f"/session/{ref}", params=_params(owner_access_key))
    if not isinstance(data, dict):
        raise BackendClientError("The API server returned a malformed session info answer")
    return data


async def get_logs(api: APISession, ref: str, *, owner_access_key: str | None = None) -> str:
    """``GET /session/{ref}/logs``: the newest lines of the main kernel's console log (the
    manager bounds them; see the README's "Security and limits")."""
    data = await api.request_json("GET", f"/session/{ref}/logs", params=_params(owner_access_key))
    logs = data.get("result", {}).get("logs") if isinstance(data, dict) else None
    if not isinstance(logs, str):
        raise BackendClientError("The API server returned a malformed session logs answer")
    return logs


async def destroy(
    api: APISession,
    ref: str,
    *,
    forced: bool = False,
    recursive: bool = False,
    owner_access_key: str | None = None,
) -> Any:
    """``DELETE /session/{ref}``; returns ``{"stats": ...}`` (a list with ``recursive``)."""
    params = _params(owner_access_key)
    if forced:
        params["forced"] = "true"
    if recursive:
        params["recursive"] = "true"
    resp = await api.request("DELETE", f"/session/{ref}", params=params)
    if resp.status == 200 and resp.body:
        try:
            return resp.json()
        except ValueError:
            return None
    return None


async def restart(api: APISession, ref: str, *, owner_access_key: str | None = None) -> None:
    """``PATCH /session/{ref}``: fresh user-code processes in the same containers (204)."""
    await api.request("PATCH", f"/session/{ref}", params=_params(owner_access_key))


async def rename(api: APISession, ref: str, new_name: str, *, owner_access_key: str | None = None) -> None:
    """``POST /session/{ref}/rename?name=...`` (a RUNNING session; 204)."""
    if not 4 <= len(new_name) <= 64:
        raise BackendClientError("The session name must be 4 to 64 characters long.")
    await api.request("POST", f"/session/{ref}/rename", params={"name": new_name, **_params(owner_access_key)})


async def status_history(api: APISession, ref: str, *, owner_access_key: str | None = None) -> dict[str, str]:
    """``GET /session/{ref}/status-history``: each status the session has been in (the
    original's upper-case names, e.g. ``PREPARING``) -> when it entered it (ISO 8601)."""
    data = await api.request_json("GET", f"/session/{ref}/status-history", params=_params(owner_access_key))
    result = data.get("result") if isinstance(data, dict) else None
    if not isinstance(result, dict):
        raise BackendClientError("The API server returned a malformed status history")
    return {str(k): str(v) for k, v in result.items()}


async def convert_to_image(api: APISession, ref: str, image_name: str, *,
                           owner_access_key: str | None = None) -> str:
    """``POST /session/{ref}/imagify?image_name=...``: start saving the session as a customized
    image of its owner; the background task's id (its final message is the image reference)."""
    data = await api.request_json("POST", f"/session/{ref}/imagify",
                                  params={"image_name": image_name, **_params(owner_access_key)})
    task_id = data.get("task_id") if isinstance(data, dict) else None
    if not task_id:
        raise BackendClientError("The API server returned no background task for the image conversion")
    return str(task_id)


async def commit(api: APISession, ref: str, *, filename: str | None = None,
                 owner_access_key: str | None = None) -> dict[str, Any]:
    """``POST /session/{ref}/commit``: start saving the session's main container as an image tar
    on its agent host; ``{"bgtask_id", "kernel", "path"}`` (the task's final message is the
    tar's path on the agent host)."""
    params = _params(owner_access_key)
    if filename:
        params["fname"] = filename
    data = await api.request_json("POST", f"/session/{ref}/commit", params=params)
    if not isinstance(data, dict) or not data.get("bgtask_id"):
        raise BackendClientError("The API server returned no background task for the commit")
    return data


# ---------------------------------------------------------------------------------------------
# execution

ResultCallback = Callable[[dict[str, Any]], Awaitable[None] | None]
InputCallback = Callable[[dict[str, Any]], Awaitable[str] | str]


@dataclass
class ExecutionResult:
    """The outcome of one run: the last result plus every console record seen."""

    status: str
    exit_code: int | None
    run_id: str | None
    console: list[list[Any]] = field(default_factory=list)
    files: list[Any] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)

    @property
    def stdout(self) -> str:
        return "".join(str(r[1]) for r in self.console if r and r[0] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(str(r[1]) for r in self.console if r and r[0] == "stderr")

    def add(self, result: Mapping[str, Any]) -> None:
        self.last = dict(result)
        self.status = str(result.get("status", self.status))
        if result.get("exitCode") is not None:
            self.exit_code = int(result["exitCode"])
        if result.get("runId"):
            self.run_id = str(result["runId"])
        self.console.extend(list(r) for r in (result.get("console") or []))
        self.files.extend(result.get("files") or [])


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _batch_options(opts: Mapping[str, Any] | None) -> dict[str, Any]:
    opts = opts or {}
    return {
        "clean": opts.get("clean"),
        "build": opts.get("build"),
        "buildLog": bool(opts.get("buildLog", False)),
        "exec": opts.get("exec"),
    }


async def execute_once(
    api: APISession,
    ref: str,
    *,
    mode: str = "query",
    code: str = "",
    run_id: str | None = None,
    opts: Mapping[str, Any] | None = None,
    owner_access_key: str | None = None,
) -> dict[str, Any]:
    """One ``POST /session/{ref}`` execute call; returns the ``result`` object."""
    if mode in ("query", "continue", "input"):
        body: dict[str, Any] = {"mode": mode, "code": code, "runId": run_id}
    elif mode == "batch":
        body = {"mode": mode, "code": code, "runId": run_id, "options": _batch_options(opts)}
    else:
        raise BackendClientError(f"Invalid execution mode: {mode}")
    data = await api.request_json(
        "POST", f"/session/{ref}", json_body=body, params=_params(owner_access_key)
    )
    if not isinstance(data, dict) or not isinstance(data.get("result"), dict):
        raise BackendClientError("The API server returned a malformed execution result")
    return data["result"]


async def execute(
    api: APISession,
    ref: str,
    code: str = "",
    *,
    mode: str = "query",
    opts: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    on_result: ResultCallback | None = None,
    read_input: InputCallback | None = None,
    owner_access_key: str | None = None,
) -> ExecutionResult:
    """Run ``code`` over REST until the run is over.

    ``continued``/``build-finished``/``clean-finished`` -> ``mode=continue, code=""``;
    ``waiting-input`` -> ``mode=input, code=<read_input(options)>``; ``finished`` or
    ``exec-timeout`` ends the run. The first call carries a client-chosen ``runId`` (16 hex
    digits, as in wire/23) unless ``run_id`` is given.
    """
    run_id = run_id or secrets.token_hex(8)
    outcome = ExecutionResult(status="", exit_code=None, run_id=run_id)
    result = await execute_once(
        api, ref, mode=mode, code=code, run_id=run_id, opts=opts, owner_access_key=owner_access_key
    )
    while True:
        outcome.add(result)
        if on_result is not None:
            await _maybe_await(on_result(result))
        status = result.get("status")
        if status in _FINAL_RUN_STATUSES:
            return outcome
        if status == "waiting-input":
            if read_input is None:
                raise BackendClientError("The code is waiting for user input, but no input is available")
            text = await _maybe_await(read_input(result.get("options") or {}))
            next_mode, next_code = "input", str(text)
        elif status in _CONTINUE_RUN_STATUSES:
            next_mode, next_code = "continue", ""
        else:
            raise BackendClientError(f"Unexpected execution status: {status!r}")
        result = await execute_once(
            api,
            ref,
            mode=next_mode,
            code=next_code,
            run_id=outcome.run_id,
            owner_access_key=owner_access_key,
        )


async def stream_execute(
    api: APISession,
    ref: str,
    code: str = "",
    *,
    mode: str = "query",
    opts: Mapping[str, Any] | None = None,
    on_result: ResultCallback | None = None,
    read_input: InputCallback | None = None,
    owner_access_key: str | None = None,
) -> ExecutionResult:
    """Run ``code`` over ``GET /stream/session/{ref}/execute`` (websocket).

    Sends one text frame ``{"code", "mode", "options"}`` (``options`` is ``{}`` in query
    mode), then reads result frames until ``finished``; on ``waiting-input`` the input is sent
    as a plain text frame. ``{"status": "error"|"server-restarting", "msg"}`` frames raise
    BackendClientError, as does a stream that closes before the run is over.
    """
    if mode == "query":
        options: dict[str, Any] = {}
    elif mode == "batch":
        options = _batch_options(opts)
    else:
        raise BackendClientError(f"Invalid stream-execution mode: {mode}")
    outcome = ExecutionResult(status="", exit_code=None, run_id=None)
    ws = await api.ws_connect(f"/stream/session/{ref}/execute", params=_params(owner_access_key))
    try:
        await ws.send_str(json.dumps({"code": code, "mode": mode, "options": options}))
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    result = json.loads(msg.data)
                except ValueError as e:
                    raise BackendClientError("Malformed frame in the execution stream") from e
                if not isinstance(result, dict):
                    continue
            elif msg.type == aiohttp.WSMsgType.ERROR:
                raise BackendClientError(f"The execution stream has failed: {ws.exception()!r}")
            else:
                continue  # binary frames: future extension
            status = result.get("status")
            if status in ("error", "server-restarting"):
                raise BackendClientError(
                    f"Execution error ({status}): {result.get('msg') or 'no details'}"
                )
            outcome.add(result)
            if on_result is not None:
                await _maybe_await(on_result(result))
            if status in _FINAL_RUN_STATUSES:
                return outcome
            if status == "waiting-input":
                if read_input is None:
                    raise BackendClientError(
                        "The code is waiting for user input, but no input is available"
                    )
                text = await _maybe_await(read_input(result.get("options") or {}))
                await ws.send_str(str(text))
        raise BackendClientError(
            "The execution stream was closed before the run finished"
            + (f" (close code {ws.close_code})" if ws.close_code is not None else "")
        )
    finally:
        if not ws.closed:
            await ws.close()


# ---------------------------------------------------------------------------------------------
# listing


@dataclass
class SessionPage:
    items: list[dict[str, Any]]
    total_count: int


async def list_sessions(
    api: APISession,
    *,
    status: str | None = ACTIVE_STATUSES,
    access_key: str | None = None,
    filter: str | None = None,
    order: str | None = None,
    offset: int = 0,
    limit: int = 20,
) -> SessionPage:
    """One page of GraphQL ``compute_session_list`` (the official ``ps`` query)."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise BackendClientError(f"The page size must be between 1 and {MAX_PAGE_SIZE}")
    variables = {
        "status": status,
        "access_key": access_key,
        "filter": filter,
        "order": order,
        "limit": limit,
        "offset": offset,
    }
    data = await api.gql(SESSION_LIST_QUERY, variables)
    try:
        page = data["compute_session_list"]
        return SessionPage(items=list(page["items"]), total_count=int(page["total_count"]))
    except (TypeError, KeyError, ValueError) as e:
        raise BackendClientError("The API server returned a malformed session list") from e


async def iter_sessions(
    api: APISession,
    *,
    status: str | None = ACTIVE_STATUSES,
    access_key: str | None = None,
    filter: str | None = None,
    order: str | None = None,
    offset: int = 0,
    page_size: int = 20,
    max_items: int | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Fetch pages until ``total_count`` (or ``max_items``) is reached."""
    items: list[dict[str, Any]] = []
    total = 0
    cur = offset
    while True:
        size = page_size if max_items is None else min(page_size, max_items - len(items))
        if size <= 0:
            break
        page = await list_sessions(
            api, status=status, access_key=access_key, filter=filter, order=order,
            offset=cur, limit=size,
        )
        total = page.total_count
        items.extend(page.items)
        cur += len(page.items)
        if not page.items or cur >= total:
            break
    return items, total
