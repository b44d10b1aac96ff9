"""The agent process: RPC server (aiohttp), start-up/shutdown order, etcd registration, heartbeats.

RPC: ``POST /rpc/<method>`` with a JSON object, ``Authorization: Bearer <rpc-secret>``; request
models and error types live in :mod:`bai.common.agent_rpc` (shared with the manager's client).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiodocker
from aiohttp import web
from pydantic import BaseModel, ValidationError

from bai.common import etcd as etcd_mod
from bai.common import protocol as proto
from bai.common.agent_rpc import (
    IDLE_KEEPALIVE,
    REQUEST_MODELS,
    AgentError,
    AgentFailure,
    AgentStopping,
    AgentTimeout,
    CommitKernelRequest,
    CreateKernelsRequest,
    DestroyKernelRequest,
    ExecuteRequest,
    GetLogsRequest,
    InvalidInput,
    KernelRequest,
    PingRequest,
    ProtocolMismatch,
    RemoveImageRequest,
    SaveKernelRequest,
    ShutdownServiceRequest,
    StartServiceRequest,
    Unauthorized,
    UpdateScalingGroupRequest,
)
from bai.common.events import REDIS_DB_STREAM, EventProducer, event_signing_key
from bai.common.redis import RedisTarget, open_redis_target, redis_target_from_etcd
from bai.common.tasks import raise_if_cancelling, stop_tasks

from . import config_file, files, host_mounts
from .agent import Agent, AgentBackend, agent_version
from .commit import KernelCommits
from .config import AgentConfig
from .docker import DockerKernels
from .dummy import DummyAgent
from .terminal import serve_terminal

log = logging.getLogger(__name__)

AGENT = web.AppKey("agent", AgentBackend)
SECRET = web.AppKey("rpc_secret", str)
#: The protocol version this agent speaks (bai.common.protocol.advertised) and when it began serving.
PROTOCOL = web.AppKey("protocol", proto.ProtocolVersion)
SERVING_SINCE = web.AppKey("serving_since", float)
#: Held while a heartbeat lists the images and sends them, and while ``remove_image`` removes one
#: and sends the heartbeat that no longer lists it: a heartbeat listing a removed image never
#: reaches the managers after that one (so a forgotten image does not come back).
HEARTBEAT_LOCK = web.AppKey("heartbeat_lock", asyncio.Lock)
#: The caller's protocol version, per request.
PEER_PROTOCOL = web.RequestKey("peer_protocol", proto.ProtocolVersion)
#: How long a stopping agent waits at most for its idle connections to go: longer than clients
#: keep them for reuse (IDLE_KEEPALIVE), so it never closes one a client is about to send on.
STOP_GRACE = IDLE_KEEPALIVE + 1.0


@dataclass
class Admission:
    """Whether the server still admits requests, and the connections with one in progress."""

    stopping: bool = False
    busy: set[object] = field(default_factory=set)


ADMISSION = web.AppKey("admission", Admission)

Handler = Callable[[AgentBackend, Any], Awaitable[dict[str, Any]]]


async def _ping(agent: AgentBackend, req: PingRequest) -> dict[str, Any]:
    return {"msg": req.msg}


async def _create_kernels(agent: AgentBackend, req: CreateKernelsRequest) -> dict[str, Any]:
    await agent.create_kernels(req)
    return {}


async def _destroy_kernel(agent: AgentBackend, req: DestroyKernelRequest) -> dict[str, Any]:
    return await agent.destroy_kernel(req)


async def _execute(agent: AgentBackend, req: ExecuteRequest) -> dict[str, Any]:
    return await agent.execute(req)


async def _interrupt_kernel(agent: AgentBackend, req: KernelRequest) -> dict[str, Any]:
    await agent.interrupt_kernel(req.kernel_id)
    return {}


async def _restart_kernel(agent: AgentBackend, req: KernelRequest) -> dict[str, Any]:
    await agent.restart_kernel(req.kernel_id)
    return {}


async def _get_logs(agent: AgentBackend, req: GetLogsRequest) -> dict[str, Any]:
    return await agent.get_logs(req)


async def _list_kernels(agent: AgentBackend, req: BaseModel) -> dict[str, Any]:
    return {"kernels": agent.list_kernels()}


async def _start_service(agent: AgentBackend, req: StartServiceRequest) -> dict[str, Any]:
    # Only an agent that runs kernels has services to start (not the dummy backend).
    start: Callable[[StartServiceRequest], Awaitable[dict[str, Any]]] | None = getattr(agent, "start_service", None)
    if start is None:
        raise InvalidInput("this agent runs no kernels, so no services", title="Unknown service")
    return await start(req)


async def _commit_kernel(agent: AgentBackend, req: CommitKernelRequest) -> dict[str, Any]:
    # Only an agent that runs containers can commit one (not the dummy backend).
    commit: Callable[[CommitKernelRequest], Awaitable[dict[str, Any]]] | None = getattr(agent, "commit_kernel", None)
    if commit is None:
        raise InvalidInput("this agent runs no containers, so it cannot commit one", title="Cannot commit")
    return await commit(req)


async def _save_kernel(agent: AgentBackend, req: SaveKernelRequest) -> dict[str, Any]:
    save: Callable[[SaveKernelRequest], Awaitable[dict[str, Any]]] | None = getattr(agent, "save_kernel", None)
    if save is None:
        raise InvalidInput("this agent runs no containers, so it cannot commit one", title="Cannot commit")
    return await save(req)


async def _get_commit_status(agent: AgentBackend, req: KernelRequest) -> dict[str, Any]:
    status: Callable[[str], dict[str, Any]] | None = getattr(agent, "commit_status", None)
    if status is None:
        raise InvalidInput("this agent runs no containers, so it commits none", title="Cannot commit")
    return status(req.kernel_id)


async def _shutdown_service(agent: AgentBackend, req: ShutdownServiceRequest) -> dict[str, Any]:
    stop: Callable[[ShutdownServiceRequest], Awaitable[dict[str, Any]]] | None = getattr(agent, "shutdown_service", None)
    if stop is None:
        raise InvalidInput("this agent runs no kernels, so no services", title="Unknown service")
    return await stop(req)


async def _update_scaling_group(agent: AgentBackend, req: UpdateScalingGroupRequest) -> dict[str, Any]:
    return await config_file.update_scaling_group(agent, req)


HANDLERS: dict[str, Handler] = {
    "ping": _ping,
    "create_kernels": _create_kernels,
    "destroy_kernel": _destroy_kernel,
    "execute": _execute,
    "interrupt_kernel": _interrupt_kernel,
    "restart_kernel": _restart_kernel,
    "get_logs": _get_logs,
    "list_kernels": _list_kernels,
    "start_service": _start_service,
    "shutdown_service": _shutdown_service,
    "host_mounts": host_mounts.list_host_mounts,
    "mount_host": host_mounts.mount_host,
    "umount_host": host_mounts.umount_host,
    "read_fstab": host_mounts.read_fstab,
    "get_completions": files.rpc_get_completions,
    "list_files": files.rpc_list_files,
    "commit_kernel": _commit_kernel,
    "save_kernel": _save_kernel,
    "get_commit_status": _get_commit_status,
    "update_scaling_group": _update_scaling_group,
}


async def _agent_info(app: web.Application, req: BaseModel) -> dict[str, Any]:
    # Serving starts after the kernels a previous run left were re-adopted (AgentServer._start).
    agent = app[AGENT]
    return {"id": agent.id, "version": agent_version(), "protocol": str(app[PROTOCOL]),
            "serving_since": app[SERVING_SINCE], "kernels": len(agent.list_kernels())}


async def _remove_image(app: web.Application, req: RemoveImageRequest) -> dict[str, Any]:
    # Only an agent that runs containers holds images (not the dummy backend).
    agent = app[AGENT]
    commits: KernelCommits | None = getattr(agent, "commits", None)
    if commits is None:
        raise InvalidInput("this agent runs no containers, so it holds no images", title="Cannot remove images")
    async with app[HEARTBEAT_LOCK]:
        removed = await commits.remove_image(req.canonical)
        kernels: DockerKernels | None = getattr(agent, "docker", None)
        if isinstance(kernels, DockerKernels):
            kernels.forget_image(req.canonical)
        try:  # tell the managers now rather than at the next beat: the forget waits for it
            await agent.heartbeat()
        except Exception as exc:
            raise_if_cancelling()
            log.warning("heartbeat after removing %s failed (the next one tells): %r", req.canonical, exc)
    return {"removed": removed}


#: Methods that answer about the server itself rather than the agent.
APP_HANDLERS: dict[str, Callable[[web.Application, Any], Awaitable[dict[str, Any]]]] = {
    "agent_info": _agent_info,
    "remove_image": _remove_image,
}
assert HANDLERS.keys() | APP_HANDLERS.keys() == REQUEST_MODELS.keys()


def _error_response(exc: AgentError) -> web.Response:
    return web.Response(status=exc.status, body=json.dumps(exc.to_json()).encode(), content_type="application/json")


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except AgentError as exc:
        return _error_response(exc)
    except web.HTTPException as exc:
        error = InvalidInput(exc.reason, title=exc.reason, status=exc.status) if exc.status < 500 \
            else AgentFailure(exc.reason, status=exc.status)
        return _error_response(error)
    except TimeoutError:
        return _error_response(AgentTimeout(f"{request.path} timed out"))
    except Exception as exc:
        log.exception("RPC %s failed", request.path)
        return _error_response(AgentFailure(f"{type(exc).__name__}: {exc}"))


@web.middleware
async def _admit(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 ) -> web.StreamResponse:
    """Once the agent stops (:func:`stop_serving`) nothing new is admitted: clients may send the
    request again, to the next process. What was admitted before runs to its end."""
    admission = request.app[ADMISSION]
    if admission.stopping:
        raise AgentStopping("this agent process is stopping and did nothing; send the request again")
    admission.busy.add(request.protocol)
    try:
        return await handler(request)
    finally:
        admission.busy.discard(request.protocol)


@web.middleware
async def _auth(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    expected = f"Bearer {request.app[SECRET]}".encode()
    given = request.headers.get("Authorization", "").encode()
    if not hmac.compare_digest(given, expected):
        raise Unauthorized("a valid 'Authorization: Bearer <rpc-secret>' header is required")
    return await handler(request)


@web.middleware
async def _protocol(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
    """Refuses callers whose protocol version is not compatible with ours (bai.common.protocol)."""
    ours = request.app[PROTOCOL]
    peer = proto.peer_version(request.headers.get(proto.HEADER))
    reason = proto.incompatibility(ours, peer)
    if peer is None or reason is not None:
        raise ProtocolMismatch(f"this agent speaks protocol {ours}; the caller's {reason}")
    request[PEER_PROTOCOL] = peer
    return await handler(request)


async def _announce_protocol(request: web.Request, response: web.StreamResponse) -> None:
    response.headers[proto.HEADER] = str(request.app[PROTOCOL])
    if request.app[ADMISSION].stopping:
        response.force_close()  # no client may reuse a connection to a stopping process


async def _rpc(request: web.Request) -> web.Response:
    method = request.match_info["method"]
    model = REQUEST_MODELS.get(method)
    # A method newer than the version we speak does not exist here, as on an agent of that version.
    if model is None or not proto.supports(request.app[PROTOCOL], method):
        raise InvalidInput(f"unknown RPC method {method!r}", title="Unknown method", status=404)
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError as exc:
        raise InvalidInput(f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    peer: proto.ProtocolVersion = request.get(PEER_PROTOCOL, proto.UNVERSIONED)
    if peer > request.app[PROTOCOL]:
        # A newer caller may send fields added after our version: optional by the rules, ignored.
        body = {k: v for k, v in body.items() if k in model.model_fields}
    try:
        req = model.model_validate(body)
    except ValidationError as exc:
        raise InvalidInput("; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )) from exc
    app_handler = APP_HANDLERS.get(method)
    result = await (app_handler(request.app, req) if app_handler is not None else HANDLERS[method](request.app[AGENT], req))
    return web.Response(body=json.dumps(result).encode(), content_type="application/json")


async def _pty(request: web.Request) -> web.StreamResponse:
    return await serve_terminal(request, request.app[AGENT])


def build_app(agent: AgentBackend, secret: str, protocol: proto.ProtocolVersion | None = None) -> web.Application:
    app = web.Application(middlewares=[_errors, _admit, _auth, _protocol], client_max_size=64 * 2**20)
    app[ADMISSION] = Admission()
    app[AGENT] = agent
    app[SECRET] = secret
    app[PROTOCOL] = protocol or proto.advertised()
    app[SERVING_SINCE] = time.time()
    app[HEARTBEAT_LOCK] = asyncio.Lock()
    app.on_response_prepare.append(_announce_protocol)
    app.router.add_post("/rpc/{method}", _rpc)
    app.router.add_get("/pty/{kernel_id}", _pty)  # a websocket: bai.agent.terminal
    files.add_routes(app, lambda request: request.app[AGENT])
    return app


async def stop_serving(runner: web.AppRunner, grace: float = STOP_GRACE) -> None:
    """Stops the RPC server without cutting off a request it could have read.

    A keep-alive connection closed by the server while its client sends on it loses that
    request, and the client cannot tell whether it was read, so it cannot send it again. So:
    admit nothing new from now on (503 ``agent-stopping``: clients send it again, to the next
    process) and close every connection after its reply; wait until no connection sits idle (at
    most ``grace`` seconds, longer than clients keep idle connections); only then close the
    listener and wait for the requests in progress."""
    admission = runner.app[ADMISSION]
    admission.stopping = True
    loop = asyncio.get_running_loop()
    end = loop.time() + grace
    server = runner.server
    # Polled: aiohttp tells nobody when a connection closes.
    while server is not None and loop.time() < end and any(  # noqa: ASYNC110
            c not in admission.busy for c in server.connections):
        await asyncio.sleep(0.02)
    await runner.cleanup()


class AgentServer:
    """Owns every resource of a running agent; ``start``/``stop`` bring them up and down in order."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.agent: AgentBackend | None = None
        self.addr = ""
        self._stack = contextlib.AsyncExitStack()
        self._heartbeat: asyncio.Task[None] | None = None
        self._etcd: etcd_mod.EtcdStore | None = None
        self._lease: etcd_mod.Lease | None = None
        self._heartbeat_lock = asyncio.Lock()

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise

    async def _start(self) -> None:
        cfg = self.config
        self._etcd = await self._stack.enter_async_context(etcd_mod.connect(cfg.etcd.addr, cfg.etcd.namespace))
        # the installer publishes the address (or the sentinels) and, with requirepass, the password
        redis_target = await redis_target_from_etcd(self._etcd) or RedisTarget()
        secret = await self._etcd.get("config/agent/rpc-secret")
        if not secret:
            raise RuntimeError("etcd has no config/agent/rpc-secret; run `bai-manager fixture populate` first")
        redis = open_redis_target(redis_target, REDIS_DB_STREAM)
        self._stack.push_async_callback(redis.aclose)
        # Signed with a key only etcd readers can derive: managers drop events they cannot verify.
        events = EventProducer(redis, signing_key=event_signing_key(secret))
        agent: AgentBackend
        if cfg.agent.backend == "dummy":
            agent = DummyAgent(cfg, events)  # tests and benchmarks only: runs nothing
        else:
            docker = aiodocker.Docker()
            self._stack.push_async_callback(docker.close)
            agent = Agent(cfg, DockerKernels(docker, cfg.agent.id), events)
        await agent.start()
        self.agent = agent
        self._stack.push_async_callback(agent.stop)

        app = build_app(agent, secret)
        self._heartbeat_lock = app[HEARTBEAT_LOCK]
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._stack.push_async_callback(stop_serving, runner)
        rpc_host, rpc_port = cfg.rpc_host_port
        site = web.TCPSite(runner, rpc_host, rpc_port, reuse_address=True)
        await site.start()
        # The port may have been 0 (tests): advertise the one we really got.
        bound = runner.addresses[0]
        self.addr = agent.addr = f"http://{rpc_host}:{bound[1]}"

        await self._register()
        self._stack.push_async_callback(self._unregister, events)
        async with self._heartbeat_lock:
            await agent.heartbeat()
        self._heartbeat = asyncio.create_task(self._heartbeat_loop())
        log.info("agent %s serving RPC on %s", cfg.agent.id, self.addr)

    async def stop(self) -> None:
        if self._heartbeat is not None:
            await stop_tasks([self._heartbeat])
        await self._stack.aclose()

    async def _register(self) -> None:
        assert self._etcd is not None
        ttl = max(10, int(self.config.agent.heartbeat_interval * 3))
        self._lease = await self._etcd.lease(ttl)
        await self._etcd.put(f"nodes/agents/{self.config.agent.id}", "running", lease=self._lease)

    async def _unregister(self, events: EventProducer) -> None:
        # First tell the managers, so they stop scheduling here; then drop the registration.
        with contextlib.suppress(Exception):
            await events.produce("agent_terminated", self.config.agent.id, reason="agent-termination")
        if self._lease is not None:
            with contextlib.suppress(Exception):
                await self._lease.revoke()

    async def _heartbeat_loop(self) -> None:
        assert self.agent is not None
        while True:
            await asyncio.sleep(self.config.agent.heartbeat_interval)
            try:
                async with self._heartbeat_lock:
                    await self.agent.heartbeat()
                assert self._lease is not None
                if await self._lease.refresh() <= 0:
                    # etcd forgot the lease (restarted, or we were paused too long): register again.
                    await self._register()
            except asyncio.CancelledError:
                raise
            except Exception:
                raise_if_cancelling()
                log.exception("heartbeat failed")


async def serve(config: AgentConfig) -> None:
    """Run until SIGINT/SIGTERM."""
    import signal

    server = AgentServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
