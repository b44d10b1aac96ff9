"""A small fake manager: a test peer for the client only.

It checks every signed request with ``bai.common.auth`` (as the real manager does), records what
the client sent, and answers with the response shapes of the wire transcripts
(``wire/00, 20, 21b, 22, 23, 24, 27, 28, 90-95``). It runs on 127.0.0.1:0 in a background
thread with its own event loop, so both async SDK tests and synchronous CLI tests (click's
CliRunner, subprocesses) can talk to it.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from bai.common import auth

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PROBS = "https://api.backend.ai/probs/"


@dataclass
class Recorded:
    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes
    ws_frames: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)


RECORDED = web.RequestKey("recorded", Recorded)


def problem(status: int, slug: str, title: str, msg: str | None = None, data: Any = None) -> web.Response:
    body: dict[str, Any] = {"type": PROBS + slug, "title": title}
    if msg is not None:
        body["msg"] = msg
    if data is not None:
        body["data"] = data
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/problem+json",
    )


def _finished(stdout: str = "", stderr: str = "", exit_code: int = 0) -> dict[str, Any]:
    console = []
    if stdout:
        console.append(["stdout", stdout])
    if stderr:
        console.append(["stderr", stderr])
    return {"status": "finished", "console": console, "exitCode": exit_code, "options": None, "files": []}


def script_for(code: str) -> list[dict[str, Any]]:
    """Scripted execution results by code (``None`` entries mean "wait for input")."""
    if code == "print(6*7)":
        return [_finished("42\n")]
    if code == "print(1)":
        return [_finished("1\n")]
    if code == "import sys; sys.exit(3)":
        return [_finished("", "bye\n", 3)]
    if code == "multi":
        return [
            {"status": "continued", "console": [["stdout", "tick 1\n"]], "exitCode": None, "options": None, "files": []},
            {"status": "continued", "console": [["stderr", "warn\n"], ["stdout", "tick 2\n"]],
             "exitCode": None, "options": None, "files": []},
            _finished("done\n"),
        ]
    if code == "unicode":
        return [_finished("h\u00e9llo \u2713\n")]
    if code == "no-newline":
        return [_finished("3.11.2\n42")]
    return [_finished(f"ran: {code}\n")]


class FakeManager:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.sessions: dict[str, dict[str, Any]] = {}  # name -> {"id", "image", "status"}
        self.server_version = "v8.20240315"
        self.fail_next: dict[tuple[str, str], web.Response] = {}
        self.create_status = "RUNNING"
        self.check_signature = True
        self.runs: dict[str, dict[str, Any]] = {}
        #: Files uploaded into sessions: (session ref, path) -> content.
        self.uploads: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "BACKEND_ENDPOINT": self.endpoint,
            "BACKEND_ACCESS_KEY": ACCESS_KEY,
            "BACKEND_SECRET_KEY": SECRET_KEY,
            "BACKEND_DOMAIN": "default",
            "BACKEND_GROUP": "default",
            **extra,
        }

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.sessions.clear()
            self.fail_next.clear()
            self.runs.clear()
            self.uploads.clear()
        self.server_version = "v8.20240315"
        self.create_status = "RUNNING"
        self.check_signature = True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._thread_main, name="fake-manager", daemon=True)
        self._thread.start()
        self._started.wait(10)
        assert self.port, "fake manager did not start"

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._serve())
        self._started.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup() if self._runner else asyncio.sleep(0))
        loop.close()

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._auth_middleware])
        app.router.add_get("/", self.handle_root)
        app.router.add_post("/session", self.handle_create)
        app.router.add_get("/session/{ref}", self.handle_info)
        app.router.add_post("/session/{ref}", self.handle_execute)
        app.router.add_delete("/session/{ref}", self.handle_destroy)
        app.router.add_get("/stream/session/{ref}/execute", self.handle_stream_execute)
        app.router.add_post("/session/{ref}/upload", self.handle_upload)
        app.router.add_post("/admin/gql", self.handle_gql)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    # -- helpers ------------------------------------------------------------------------------

    def recorded(self, method: str | None = None, path_prefix: str = "") -> list[Recorded]:
        with self._lock:
            return [
                r for r in self.requests
                if (method is None or r.method == method) and r.path_qs.startswith(path_prefix)
            ]

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        rec = Recorded(request.method, request.raw_path, dict(request.headers), body)
        with self._lock:
            self.requests.append(rec)
        request[RECORDED] = rec
        injected = self.fail_next.pop((request.method, request.path), None)
        if request.path != "/":
            version = request.headers.get("X-BackendAI-Version")
            if version is not None and version not in auth.ACCEPTED_VERSIONS:
                return problem(400, "generic-bad-request", "Bad request.", "Unsupported API version.")
            if self.check_signature:
                hdr = request.headers.get("Authorization")
                if hdr is None:
                    return problem(401, "auth-failed", "Credential/signature mismatch.", "Unauthorized access")
                try:
                    parsed = auth.parse_authorization(hdr)
                except ValueError as e:
                    return problem(400, "invalid-auth-params",
                                   "Missing or invalid authorization parameters.", str(e))
                if parsed.access_key != ACCESS_KEY:
                    return problem(401, "auth-failed", "Credential/signature mismatch.", "Access key not found")
                expected = auth.signature(
                    SECRET_KEY,
                    request.method,
                    request.raw_path,
                    request.headers["Date"],
                    request.headers["Host"],
                    request.content_type,
                    version or "",
                    parsed.hash_name,
                )
                if expected != parsed.signature:
                    return problem(401, "auth-failed", "Credential/signature mismatch.", "Signature mismatch")
        if injected is not None:
            return injected
        resp: web.StreamResponse = await handler(request)
        return resp

    # -- handlers -----------------------------------------------------------------------------

    async def handle_root(self, request: web.Request) -> web.Response:
        return web.json_response({"version": self.server_version, "manager": "24.03.11"})

    async def handle_create(self, request: web.Request) -> web.Response:
        params = json.loads(await request.read())
        name = params.get("name")
        image = params.get("image")
        if not name or not image:
            data = {}
            if not name:
                data["session_name"] = "is required"
            if not image:
                data["image"] = "is required"
            return problem(400, "invalid-api-params", "Missing or invalid API parameters.",
                           "Input validation error", data)
        existing = self.sessions.get(name)
        if existing is not None:
            if not params.get("reuseIfExists", True) or existing["image"] != image:
                return problem(400, "session-already-exists", "The session already exists.",
                               data={"existingSessionId": existing["id"]})
            return web.json_response(
                {
                    "sessionId": existing["id"],
                    "sessionName": name,
                    "status": existing["status"],
                    "service_ports": [
                        {"name": "sshd", "protocol": "tcp", "host_ports": [30726],
                         "is_inference": False, "container_ports": [2200]},
                    ],
                    "created": False,
                },
                status=201,
            )
        sid = str(uuid.uuid4())
        status = "PENDING" if params.get("enqueueOnly") else self.create_status
        self.sessions[name] = {"id": sid, "image": image, "status": status}
        ports = [] if status != "RUNNING" else [
            {"name": "sshd", "protocol": "tcp", "ports": [2200]},
            {"name": "ttyd", "protocol": "http", "ports": [7681]},
        ]
        return web.json_response(
            {"sessionId": sid, "sessionName": name, "status": status, "servicePorts": ports, "created": True},
            status=201,
        )

    def _find(self, ref: str) -> tuple[str, dict[str, Any]] | None:
        for name, s in self.sessions.items():
            if ref in (name, s["id"]):
                return name, s
        return None

    def _not_found(self, ref: str) -> web.Response:
        return problem(404, "object-not-found", "No such session.", f"Session (id={ref}) does not exist.")

    async def handle_info(self, request: web.Request) -> web.Response:
        ref = request.match_info["ref"]
        found = self._find(ref)
        if found is None:
            return self._not_found(ref)
        _, s = found
        return web.json_response({
            "domainName": "default",
            "groupId": "2de2b969-1d04-48a6-af16-0bc8adb3c831",
            "userId": "f38dea23-50fa-42a0-b5ae-338f5f4693f4",
            "lang": s["image"],
            "image": s["image"],
            "architecture": "x86_64",
            "registry": "index.docker.io",
            "tag": None,
            "containerId": "5c1ca41b855f",
            "occupiedSlots": "{'cpu': Decimal('1'), 'mem': Decimal('335544320')}",
            "status": s["status"],
            "statusInfo": "",
            "statusData": {},
            "age": 3131,
            "creationTime": "2026-11-26 17:39:17.199048+00:00",
            "terminationTime": None,
            "numQueriesExecuted": 0,
            "lastStat": None,
            "idleChecks": {"session_lifetime": {"remaining": None}},
        })

    async def handle_destroy(self, request: web.Request) -> web.Response:
        ref = request.match_info["ref"]
        found = self._find(ref)
        if found is None:
            return self._not_found(ref)
        del self.sessions[found[0]]
        return web.json_response({"stats": {"status": "terminated", "cpu_used": 120}})

    async def handle_execute(self, request: web.Request) -> web.Response:
        ref = request.match_info["ref"]
        if self._find(ref) is None:
            return self._not_found(ref)
        params = json.loads(await request.read())
        mode = params["mode"]
        run_id = params.get("runId") or uuid.uuid4().hex[:16]
        if mode == "query":
            code = params["code"]
            if code == "input-test":
                self.runs[run_id] = {"pending": "input"}
                result = {"status": "waiting-input", "console": [["stdout", "name? "]], "exitCode": None,
                          "options": {"is_password": False}, "files": []}
            else:
                steps = script_for(code)
                self.runs[run_id] = {"steps": steps[1:]}
                result = dict(steps[0])
        elif mode == "continue":
            state = self.runs[run_id]
            result = dict(state["steps"].pop(0))
        elif mode == "input":
            self.runs.pop(run_id, None)
            result = _finished(f"hello, {params['code']}\n")
        else:
            return problem(400, "invalid-api-params", "Missing or invalid API parameters.", f"bad mode {mode}")
        result["runId"] = run_id
        return web.json_response({"result": result})

    async def handle_upload(self, request: web.Request) -> web.Response:
        ref = request.match_info["ref"]
        if self._find(ref) is None:
            return self._not_found(ref)
        # The recording middleware has read the body already: parse it from there.
        raw = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode() + await request.read()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
        for part in message.iter_parts():
            assert part.get_param("name", header="content-disposition") == "src"
            filename = part.get_filename()
            assert filename
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            self.uploads[(ref, urllib.parse.unquote(filename))] = payload  # FormData quotes it
        return web.Response(status=204)

    def _batch_steps(self, ref: str, options: dict[str, Any]) -> list[dict[str, Any]]:
        """clean-finished, build-finished, then exec: ``*`` runs the uploaded main.py's script."""
        step = {"console": [], "exitCode": 0, "options": None, "files": []}
        steps: list[dict[str, Any]] = [{"status": "clean-finished", **step}, {"status": "build-finished", **step}]
        if options.get("exec") == "*":
            code = self.uploads.get((ref, "main.py"), b"").decode()
            return steps + script_for(code)
        return steps + [_finished(f"exec: {options.get('exec')}\n")]

    async def handle_stream_execute(self, request: web.Request) -> web.StreamResponse:
        ref = request.match_info["ref"]
        if self._find(ref) is None:
            return self._not_found(ref)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        rec = request[RECORDED]
        first = await ws.receive()
        rec.ws_frames.append(first.data)
        params = json.loads(first.data)
        code = params["code"]
        if params.get("mode") == "batch":
            for result in self._batch_steps(ref, params.get("options") or {}):
                await ws.send_str(json.dumps(result))
            await ws.close()
            return ws
        if code == "boom":
            await ws.send_str(json.dumps({"status": "error", "msg": "kernel failure"}))
            await ws.close()
            return ws
        if code == "hangup":
            await ws.close()
            return ws
        if code == "input-test":
            await ws.send_str(json.dumps({"status": "waiting-input", "console": [["stdout", "name? "]],
                                          "exitCode": None, "options": {"is_password": False}, "files": []}))
            msg = await ws.receive()
            assert msg.type == WSMsgType.TEXT
            rec.ws_frames.append(msg.data)
            await ws.send_str(json.dumps(_finished(f"hello, {msg.data}\n")))
            await ws.close()
            return ws
        for step in script_for(code):
            await ws.send_str(json.dumps(step))
        await ws.close()
        return ws

    async def handle_gql(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        query: str = body["query"]
        variables = body.get("variables") or {}
        if "compute_session_list" not in query:
            return web.json_response({"data": None, "errors": [{"message": "Unknown query", "path": ["x"]}]})
        statuses = set((variables.get("status") or "").split(","))
        items = [
            {
                "name": name,
                "access_key": ACCESS_KEY,
                "id": s["id"],
                "group_name": "default",
                "main_kernel_id": str(uuid.UUID(int=i + 1)),
                "image": "index.docker.io/bai-kernel/python:3.11-debian12",
                "type": "INTERACTIVE",
                "status": s["status"],
                "status_info": "",
                "status_changed": "2026-11-26T17:38:32.463278+00:00",
                "result": "UNDEFINED",
            }
            for i, (name, s) in enumerate(self.sessions.items())
            if s["status"] in statuses
        ]
        offset, limit = int(variables["offset"]), int(variables["limit"])
        return web.json_response({
            "data": {"compute_session_list": {"items": items[offset:offset + limit], "total_count": len(items)}}
        })
