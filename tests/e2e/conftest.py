"""End-to-end tests against this machine's installed all-in-one node (README command 1).

They drive the node the way a user does: the `backend.ai` CLI (ours and the official one) with
the environment file the installer wrote, and Docker to look at what really runs.
"""

from __future__ import annotations

import fcntl
import glob
import http.client
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ENV_FILE = Path("/etc/backend.ai/client.env")
VENV_BIN = Path("/opt/bai/venv/bin")
OFFICIAL_VENV = Path("/var/cache/bai/official-client-venv")
OFFICIAL_VERSION = "24.3.11"


def _read_env_file() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in ENV_FILE.read_text().splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export "):]
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value.strip().strip("'\"")
    return env


@pytest.fixture(scope="session")
def node_env() -> dict[str, str]:
    assert ENV_FILE.exists(), f"{ENV_FILE} missing: run `bash installer/bootstrap.sh` first"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKEND_", "SORNA_"))}
    env.update(_read_env_file())
    return env


@pytest.fixture
def bai(node_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(VENV_BIN / "backend.ai"), *args], env=node_env, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"backend.ai {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc
    return run


def _python312() -> str:
    """A real Python 3.12 (pyenv shims on PATH may point at another version, so each is tried)."""
    candidates = sorted(glob.glob("/root/.pyenv/versions/3.12*/bin/python3.12"))
    candidates += [p for p in (shutil.which("python3.12"), "/usr/bin/python3.12") if p]
    for exe in candidates:
        probe = subprocess.run([exe, "-c", "import sys, venv; print(sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 12)":
            return exe
    raise AssertionError("the official client needs Python 3.12 (python3.12 on PATH or under pyenv)")


@pytest.fixture(scope="session")
def official_client() -> Path:
    """The real backend.ai-client package in its own virtual environment (cached on the machine)."""
    exe = OFFICIAL_VENV / "bin" / "backend.ai"
    marker = OFFICIAL_VENV / f".installed-{OFFICIAL_VERSION}"
    # Two test runs on one machine must not build it at once (one would delete the other's).
    OFFICIAL_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(OFFICIAL_VENV.parent / ".official-client-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (marker.exists() and exe.exists()):
            shutil.rmtree(OFFICIAL_VENV, ignore_errors=True)
            subprocess.run([_python312(), "-m", "venv", str(OFFICIAL_VENV)], check=True)
            subprocess.run([str(OFFICIAL_VENV / "bin" / "pip"), "install", "-q",
                            f"backend.ai-client=={OFFICIAL_VERSION}"], check=True)
            marker.touch()
    return exe


def unique_name(prefix: str = "e2e") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def containers_of(session_id: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=ai.backend.session-id={session_id}"],
                         check=True, capture_output=True, text=True).stdout
    return out.split()


def wait_until(check: Callable[[], Any], what: str, deadline: float = 60.0) -> Any:
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def json_out(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(proc.stdout)


@pytest.fixture
def cleanup_sessions(bai: Callable[..., subprocess.CompletedProcess[str]]) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        bai("session", "destroy", "-f", name, check=False)


class Api:
    """A minimal signed HTTP client (urllib) for assertions on the manager's raw answers."""

    def __init__(self, env: dict[str, str], keepalive: bool = False) -> None:
        from urllib.parse import urlsplit

        self.keepalive = keepalive
        self._conn: http.client.HTTPConnection | None = None

        self.endpoint = env["BACKEND_ENDPOINT"].rstrip("/")
        self.host = urlsplit(self.endpoint).netloc
        self.ak = env["BACKEND_ACCESS_KEY"]
        self.sk = env["BACKEND_SECRET_KEY"]

    def call(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
             sign: bool = True, raw: bytes | None = None) -> tuple[int, Any]:
        import urllib.error
        import urllib.request

        from bai.common.auth import API_VERSION, sign_request

        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        ctype = "application/json" if data is not None else "text/plain"
        hdrs = {"Content-Type": ctype, "X-BackendAI-Version": API_VERSION}
        if sign:
            signed = sign_request(self.ak, self.sk, method, path, self.host, ctype)
            hdrs.update({"Date": signed.date, "Authorization": signed.authorization})
        hdrs.update(headers or {})
        if self.keepalive:
            # One persistent connection, as SDKs use (the benchmark measures the server, not TCP set-up).
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, timeout=120)
            self._conn.request(method, path, body=data, headers=hdrs)
            resp = self._conn.getresponse()
            status, payload = resp.status, resp.read()
        else:
            req = urllib.request.Request(self.endpoint + path, data=data, method=method, headers=hdrs)
            try:
                with urllib.request.urlopen(req, timeout=120) as resp:
                    status, payload = resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                status, payload = exc.code, exc.read()
        try:
            return status, json.loads(payload) if payload else None
        except ValueError:
            return status, payload.decode(errors="replace")


@pytest.fixture(scope="session")
def api(node_env: dict[str, str]) -> Api:
    return Api(node_env)
