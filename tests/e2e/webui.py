"""Shared Playwright helpers for the web UI's browser tests (test_web_ui.py, test_web_admin.py,
test_web_usage.py) and bench/web_ui.py.

* ``web_endpoint``: the installed webserver (``BAI_WEB_ENDPOINT`` in the client env file) when it
  answers; otherwise a ``bai-webserver`` this fixture starts on a free port against the installed
  manager (this tree's static/ files), stopped at the end.
* ``browser``: Debian's headless chromium through Playwright's ``executable_path`` (no browser
  download), with the flags that work on these machines.
* ``make_user(role=...)``: a fresh user with a known random password, created through the
  manager's admin GraphQL with the installer's admin keypair, purged at the end.
* ``open_page(browser, base)``, ``login(page, user)``, ``shot(page, name)`` (screenshots kept as
  test artefacts under ``ARTEFACTS``; the path is printed).

Import from a test module: ``from .webui import browser, web_endpoint, make_user, login, shot``
(pytest picks the fixtures up from the test module's namespace).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import ENV_FILE, VENV_BIN, Api, _read_env_file, unique_name

CHROMIUM = "/usr/bin/chromium"
# As root chromium needs --no-sandbox (each page still has its own renderer process); the
# background-networking flags stop it from calling out of a closed network at every start.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTEFACTS = Path(os.environ.get("BAI_TEST_ARTEFACTS", "/var/log/bai/test-artefacts")) / "web-ui"
SECRETS_FILE = Path("/etc/backend.ai/secrets.toml")
PAGE_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class WebUser:
    email: str
    password: str
    role: str
    uuid: str


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="POST", data=b"{}"), timeout=3) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def _serves(url: str) -> bool:
    """A GET of `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _redis_password() -> str:
    for line in SECRETS_FILE.read_text().splitlines():
        m = re.match(r'\s*redis_password\s*=\s*"([^"]*)"', line)
        if m:
            return m.group(1)
    return ""


def _xterm_dir(tmp: Path) -> Path:
    """The xterm files the UI loads from /vendor/xterm/ (bundle.js built from Debian's node-xterm)."""
    from bai.webserver.xterm_bundle import build

    out = tmp / "xterm"
    out.mkdir()
    (out / "bundle.js").write_bytes(build())
    shutil.copy("/usr/share/javascript/xterm/xterm.css", out / "xterm.css")
    return out


@contextlib.contextmanager
def running_webserver() -> Iterator[str]:
    """The base URL of a webserver for the UI: the installed one when it answers (with the xterm
    bundle), else a ``bai-webserver`` started here on a free port against the installed manager
    (this tree's static/ files), stopped on exit."""
    env = _read_env_file() if ENV_FILE.exists() else {}
    installed = env.get("BAI_WEB_ENDPOINT", "").rstrip("/")
    if installed and _answers(installed + "/server/login-check") and _serves(installed + "/vendor/xterm/bundle.js"):
        yield installed
        return
    tmp = Path(tempfile.mkdtemp(prefix="bai-webui-"))
    port = _free_port()
    storage = "http://127.0.0.1:6021"
    (tmp / "webserver.toml").write_text(
        f'[service]\nip = "127.0.0.1"\nport = {port}\nxterm_path = "{_xterm_dir(tmp)}"\n'
        f'[api]\nendpoint = "{env.get("BACKEND_ENDPOINT", "http://127.0.0.1:8081")}"\n'
        f'[session.redis]\naddr = "127.0.0.1:6379"\npassword = "{_redis_password()}"\n'
        f'[security]\ncsp_connect_src = ["{storage}"]\n')
    exe = VENV_BIN / "bai-webserver"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from bai.webserver.cli import main; main()"]
    log = (tmp / "webserver.log").open("wb")
    proc = subprocess.Popen([*cmd, "start", "--config", str(tmp / "webserver.toml")], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _answers(base + "/server/login-check"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"bai-webserver did not start: {(tmp / 'webserver.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def web_endpoint() -> Iterator[str]:
    with running_webserver() as base:
        yield base


# Module scope: every test module that imports these fixtures gets its own copy of them, and
# Playwright's sync API cannot run two instances at once, so each module's browser is closed
# before the next module starts its own.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def admin_api() -> Api:
    return Api(_read_env_file())


def keypair_api(admin_api: Api, email: str) -> Api:
    """A client signing as ``email`` (their first keypair)."""
    status, body = admin_api.call("POST", "/admin/gql", {
        "query": "query($email: String) { keypairs(email: $email) { access_key secret_key } }",
        "variables": {"email": email}})
    assert status == 200 and body["data"]["keypairs"], body
    kp = body["data"]["keypairs"][0]
    return Api({"BACKEND_ENDPOINT": admin_api.endpoint, "BACKEND_ACCESS_KEY": kp["access_key"],
                "BACKEND_SECRET_KEY": kp["secret_key"]})


def create_user(api: Api, role: str = "user", prefix: str = "webui") -> WebUser:
    """A new active user of the default domain and project with a random password."""
    email = f"{unique_name(prefix)}@example.com"
    password = secrets.token_urlsafe(12)
    status, groups = api.call("POST", "/admin/gql", {"query": 'query { groups(domain_name: "default") { id name } }'})
    assert status == 200 and not groups.get("errors"), groups
    group_ids = [g["id"] for g in groups["data"]["groups"] if g["name"] == "default"]
    query = """mutation($email: String!, $props: UserInput!) {
        create_user(email: $email, props: $props) { ok msg user { uuid } } }"""
    props = {"password": password, "username": email, "domain_name": "default", "role": role,
             "status": "active", "group_ids": group_ids, "resource_policy": "default"}
    status, body = api.call("POST", "/admin/gql", {"query": query, "variables": {"email": email, "props": props}})
    assert status == 200 and body["data"]["create_user"]["ok"], body
    return WebUser(email, password, role, body["data"]["create_user"]["user"]["uuid"])


@pytest.fixture(scope="session")
def make_user(admin_api: Api) -> Iterator[Callable[..., WebUser]]:
    """make_user(role="user"|"admin"|"superadmin"|"monitor") -> WebUser, purged afterwards."""
    made: list[WebUser] = []

    def make(role: str = "user", prefix: str = "webui") -> WebUser:
        user = create_user(admin_api, role, prefix)
        made.append(user)
        return user

    yield make
    for user in made:
        purge_user(admin_api, user)


LIVE = "PENDING,SCHEDULED,PULLING,PREPARING,RUNNING,RESTARTING,RUNNING_DEGRADED,TERMINATING,ERROR"


def _live_sessions(api: Api, email: str) -> list[tuple[str, str]]:
    status, body = api.call("POST", "/admin/gql", {"query": f"""query {{
        compute_session_list(limit: 100, offset: 0, status: "{LIVE}") {{ items {{ session_id access_key user_email }} }} }}"""})
    assert status == 200, body
    return [(s["session_id"], s["access_key"]) for s in body["data"]["compute_session_list"]["items"]
            if s["user_email"] == email]


def purge_user(api: Api, user: WebUser, *, missing_ok: bool = False) -> None:
    """End the user's sessions, then purge the user, failing loudly when that does not happen
    within a minute (a leaked user is noticed). The manager refuses the purge while a session of
    the user is not over, and a forced destroy leaves it TERMINATING until its agent has removed
    the containers, so the sessions are destroyed and the purge tried again until it is done; a
    manager restarting meanwhile (others share the node) is waited for. ``missing_ok``: a user
    that does not exist (a test failed before making it) is nothing to purge."""
    deadline = time.monotonic() + 60
    last = ""
    while True:
        try:
            last = _purge(api, user)
            if not last:
                return
            if missing_ok and last.startswith("no such user"):
                return
        except OSError as e:
            last = f"the manager did not answer: {e}"
        if time.monotonic() > deadline:
            raise AssertionError(f"purging the test user {user.email} failed: {last}")
        time.sleep(0.5)


def _purge(api: Api, user: WebUser) -> str:
    """One round: destroy the user's live sessions, or, when there are none, purge the user.
    What is still in the way ('' once the user is purged)."""
    if ids := _live_sessions(api, user.email):
        for sid, access_key in ids:
            api.call("DELETE", f"/session/{sid}?forced=true&owner_access_key={access_key}")
        return f"sessions still live: {', '.join(sid for sid, _ in ids)}"
    status, body = api.call("POST", "/admin/gql", {"query": """mutation($email: String!) {
        purge_user(email: $email, props: {purge_shared_vfolders: true}) { ok msg } }""",
        "variables": {"email": user.email}})
    if status != 200 or not isinstance(body, dict) or body.get("errors"):
        return f"HTTP {status}: {body}"
    answer = (body.get("data") or {}).get("purge_user") or {}
    return "" if answer.get("ok") else str(answer.get("msg") or answer)


def open_page(browser: Any, base: str, **context_opts: Any) -> Any:
    """A page in a fresh browser context (its own cookies) with base_url and a default timeout."""
    context = browser.new_context(base_url=base, **context_opts)
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    return page


def login(page: Any, user: WebUser, next_path: str = "") -> None:
    """Log in through the login form; returns once the page the login leads to is ready."""
    page.goto("/login" + (f"?next={next_path}" if next_path else ""))
    page.fill("#login-email", user.email)
    page.fill("#login-password", user.password)
    page.click("#login-submit")
    page.wait_for_selector("#shell-main[data-ready]:not([data-page='/login'])")


def shot(page: Any, name: str) -> Path:
    """A full-page screenshot kept as a test artefact (ARTEFACTS/<name>.png); prints its path."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path
