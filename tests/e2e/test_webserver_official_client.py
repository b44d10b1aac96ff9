"""The installed webserver (``BAI_WEB_ENDPOINT``) as the official client (backend.ai-client
24.3.11, unchanged) uses it in session mode: ``login`` with the admin's user id and password from
the client env file, ``ps``, ``run --rm`` (its execute websocket through /func/), ``vfolder list``,
``logout`` (the old cookie is dead everywhere afterwards); a wrong password; and, as a browser
would, the terminal websocket through /pipe/ and a cross-site write refused with nothing created.
The client's cookie jar lives in a HOME of the test's own."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from .conftest import unique_name


@pytest.fixture
def session_env(node_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    for key in ("BAI_WEB_ENDPOINT", "BACKEND_USER_ID", "BACKEND_PASSWORD"):
        assert node_env.get(key), f"{key} missing from the client env file: rerun bash installer/bootstrap.sh"
    env = {k: v for k, v in node_env.items() if k not in ("BACKEND_ACCESS_KEY", "BACKEND_SECRET_KEY")}
    env.update({"BACKEND_ENDPOINT_TYPE": "session", "BACKEND_ENDPOINT": node_env["BAI_WEB_ENDPOINT"],
                "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")})
    return env


def _cli(exe: Path, env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 180
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=timeout, input=stdin)


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _said(proc: subprocess.CompletedProcess[str]) -> str:
    """Everything it printed (its ✓/✗ messages go to stderr)."""
    _ok(proc)
    return proc.stdout + proc.stderr


def _destroy(exe: Path, env: dict[str, str], name: str, deadline: float = 90.0) -> None:
    """Until no live session has this name (a destroy that came while it was still being created
    may not have ended it)."""
    end = time.monotonic() + deadline
    while True:
        _cli(exe, env, "session", "destroy", "-f", name, timeout=60)
        listing = _cli(exe, env, "--output", "json", "ps", timeout=60)
        try:
            names = {s.get("name") for s in json.loads(listing.stdout)["items"]}
        except (ValueError, KeyError):
            names = {name}
        if name not in names:
            return
        assert time.monotonic() < end, f"session {name} would not go away"
        time.sleep(1.0)


def _cookie_file(env: dict[str, str]) -> Path:
    found = list(Path(env["HOME"]).rglob("cookie.dat"))
    assert len(found) == 1, found
    return found[0]


def test_official_client_session_mode(official_client: Path, session_env: dict[str, str]) -> None:
    env = session_env
    user, password = env["BACKEND_USER_ID"], env["BACKEND_PASSWORD"]
    assert "Login succeeded" in _said(_cli(official_client, env, "login", stdin=f"{user}\n{password}\n"))
    cookie = _cookie_file(env)
    assert json.loads(_ok(_cli(official_client, env, "--output", "json", "ps")))["items"] is not None
    name = unique_name("webrun")
    try:
        proc = _cli(official_client, env, "run", "--rm", "-t", name, "-c", "print(6*7)", "python")
        assert "42" in _ok(proc).splitlines(), proc.stdout + proc.stderr
    finally:  # whatever happened (a timeout, a full node), the session does not outlive the test
        _destroy(official_client, env, name)
    listing = json.loads(_ok(_cli(official_client, env, "--output", "json", "vfolder", "list")))
    assert "items" in listing
    kept = cookie.with_suffix(".kept")
    shutil.copy(cookie, kept)
    assert "Logout done" in _said(_cli(official_client, env, "logout"))
    # The cookie from before the logout no longer opens anything.
    shutil.copy(kept, cookie)
    proc = _cli(official_client, env, "--output", "json", "ps")
    assert proc.returncode != 0 and "401" in proc.stdout + proc.stderr


def test_official_client_wrong_password(official_client: Path, session_env: dict[str, str]) -> None:
    proc = _cli(official_client, session_env, "login", stdin=f"{session_env['BACKEND_USER_ID']}\nnot-the-password\n")
    assert "Login failed" in proc.stdout + proc.stderr
    assert not list(Path(session_env["HOME"]).rglob("cookie.dat"))


async def _login(http: aiohttp.ClientSession, web: str, user: str, password: str) -> str:
    async with http.post(web + "/server/login", json={"username": user, "password": password}) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["csrf_token"])


def test_terminal_through_pipe_and_cross_site_write_refused(official_client: Path, session_env: dict[str, str],
                                                            node_env: dict[str, str]) -> None:
    env, web = session_env, session_env["BAI_WEB_ENDPOINT"].rstrip("/")
    name = unique_name("webpty")
    _ok(_cli(official_client, env, "login", stdin=f"{env['BACKEND_USER_ID']}\n{env['BACKEND_PASSWORD']}\n"))
    try:
        _ok(_cli(official_client, env, "session", "create", "-t", name, "python"))

        async def terminal() -> bytes:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                await _login(http, web, env["BACKEND_USER_ID"], env["BACKEND_PASSWORD"])
                seen = b""
                async with http.ws_connect(f"{web}/pipe/stream/session/{name}/pty",
                                           headers={"Origin": web}) as ws, asyncio.timeout(60):
                    await ws.send_str(json.dumps({"type": "stdin", "chars": base64.b64encode(
                        b"echo web-$((6*7))\n").decode()}))
                    async for msg in ws:
                        frame = json.loads(msg.data)
                        if frame["type"] == "out":
                            seen += base64.b64decode(frame["data"])
                            if b"web-42" in seen:
                                break
                return seen

        assert b"web-42" in asyncio.run(terminal())

        # A browser page of another origin cannot make the logged-in user create a session.
        async def cross_site() -> int:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                await _login(http, web, env["BACKEND_USER_ID"], env["BACKEND_PASSWORD"])
                async with http.post(web + "/func/session", json={"name": name + "-x", "image": "python"},
                                     headers={"Origin": "http://evil.example"}) as r:
                    assert r.content_type == "application/problem+json"
                    return r.status

        assert asyncio.run(cross_site()) == 403
        listing = json.loads(_ok(_cli(official_client, env, "--output", "json", "ps")))
        assert not [s for s in listing["items"] if s.get("name") == name + "-x"]
    finally:
        _destroy(official_client, env, name)


def test_web_address_serves_the_ui_with_security_headers(session_env: dict[str, str]) -> None:
    web = session_env["BAI_WEB_ENDPOINT"].rstrip("/")
    try:
        with urllib.request.urlopen(web + "/func/", timeout=30) as resp:
            headers = resp.headers
            assert json.loads(resp.read())["version"].startswith("v8.")
    except urllib.error.HTTPError as exc:  # pragma: no cover - shows the answer
        raise AssertionError(exc.read()) from exc
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
