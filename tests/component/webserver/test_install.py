"""``python -m bai.webserver.install admin-login`` (what the installer's webserver role runs)
against a real manager: it tells when the admin's password or the client env file is not yet what
the secrets file says, sets both, and then changes nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from bai.manager.store import fixtures

from .conftest import ADMIN_PASSWORD, Node

GENERATED = "Generated-Admin-Pw-0123456789"


def _authorize(manager: str, password: str) -> int:
    req = urllib.request.Request(manager + "/auth/authorize", method="POST", data=json.dumps({
        "type": "keypair", "domain": "default", "username": fixtures.ADMIN_EMAIL, "password": password}).encode(),
        headers={"Content-Type": "application/json", "X-Forwarded-For": "192.0.2.77"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_admin_login_converges(node: Node, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(f'db_password = "x"\nwebserver_admin_password = "{GENERATED}"\n')
    env_file = tmp_path / "client.env"
    env_file.write_text("# written by bai-install\n"
                        f"export BACKEND_ENDPOINT={node.manager_url}\n"
                        f"export BACKEND_ACCESS_KEY={node.parts.access_key}\n"
                        f"export BACKEND_SECRET_KEY={node.parts.secret_key}\n"
                        "export BACKEND_ENDPOINT_TYPE=api\n")
    env_file.chmod(0o600)
    args = [sys.executable, "-m", "bai.webserver.install", "admin-login", "--manager", node.manager_url,
            "--secrets", str(secrets), "--client-env", str(env_file), "--web", "http://127.0.0.1:8080"]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*args, *extra], capture_output=True, text=True, timeout=60)

    assert (await asyncio.to_thread(run, "--check")).returncode == 1
    assert await asyncio.to_thread(_authorize, node.manager_url, ADMIN_PASSWORD) == 200
    done = await asyncio.to_thread(run)
    assert done.returncode == 0, done.stderr
    assert GENERATED not in done.stdout + done.stderr
    assert await asyncio.to_thread(_authorize, node.manager_url, GENERATED) == 200
    assert await asyncio.to_thread(_authorize, node.manager_url, ADMIN_PASSWORD) == 401
    text = env_file.read_text()
    assert f"export BACKEND_ACCESS_KEY={node.parts.access_key}\n" in text and "export BACKEND_ENDPOINT_TYPE=api" in text
    assert "export BAI_WEB_ENDPOINT=http://127.0.0.1:8080\n" in text
    assert f"export BACKEND_USER_ID={fixtures.ADMIN_EMAIL}\n" in text and f"export BACKEND_PASSWORD={GENERATED}\n" in text
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert (await asyncio.to_thread(run, "--check")).returncode == 0
    before = env_file.stat().st_mtime_ns
    assert (await asyncio.to_thread(run)).returncode == 0
    assert env_file.stat().st_mtime_ns == before and env_file.read_text() == text
