"""The issue's acceptance with the official client 24.3.11 against the installed node: the
superadmin creates a second, non-admin user with `admin user add` + `admin keypair add`; both
then run the admin and session commands. The superadmin's answers are consistent with each
other; for the plain user every admin listing fails and leaks nothing, `admin keypair list`
shows only its own key, `ps` hides the superadmin's session, and REST admin-only endpoints answer
401."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bai.manager.store import fixtures

from .conftest import Api, unique_name

Run = Callable[..., Any]


def _client(exe: Path, env: dict[str, str]) -> Run:
    def run(*args: str, ok: bool = True) -> Any:
        proc = subprocess.run([str(exe), "--output", "json", *args], env=env, capture_output=True, text=True,
                              timeout=120)
        if ok:
            assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            return json.loads(proc.stdout)
        assert proc.returncode != 0, f"{args} should have failed:\n{proc.stdout}"
        return proc.stdout + proc.stderr
    return run


@pytest.fixture
def as_admin(official_client: Path, node_env: dict[str, str]) -> Run:
    return _client(official_client, node_env)


@pytest.fixture
def plain_user(as_admin: Run, official_client: Path, node_env: dict[str, str]
               ) -> Iterator[tuple[Run, str, str, str]]:
    """A user of the default domain and project, made by the superadmin with the official CLI:
    (run as that user, email, access key, secret key)."""
    email = f"e2e-{uuid.uuid4().hex[:8]}@example.com"
    made = as_admin("admin", "user", "add", "default", email, f"pw-{uuid.uuid4().hex}", "-u", email.split("@")[0],
                    "-n", "E2E User")
    assert made["ok"] is True and made["user"]["email"] == email, made
    assert made["user"]["groups"] == "default"  # the client joins the group names
    try:
        key = as_admin("admin", "keypair", "add", email, "default")
        assert key["ok"] is True, key
        ak, sk = key["access_key"], key["secret_key"]
        yield _client(official_client, {**node_env, "BACKEND_ACCESS_KEY": ak, "BACKEND_SECRET_KEY": sk}), email, ak, sk
    finally:
        # purge asks "y/n" first; it removes the user with its keypairs
        out = subprocess.run([str(official_client), "--output", "json", "admin", "user", "purge", email],
                             env=node_env, input="y\n", capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"purge {email}: {out.stdout}\n{out.stderr}"


def test_admin_lists_and_infos_as_superadmin(as_admin: Run, plain_user: tuple[Run, str, str, str],
                                             node_env: dict[str, str]) -> None:
    _, email, ak, sk = plain_user
    admin_ak = node_env["BACKEND_ACCESS_KEY"]
    # one page of up to 100 (the client pages 20 by default; users other tests left behind on a
    # reused machine must not push ours off the page)
    users = as_admin("admin", "user", "list", "--limit", "100")
    assert users["total_count"] == len(users["items"]) >= 2
    by_email = {u["email"]: u for u in users["items"]}
    assert by_email[fixtures.ADMIN_EMAIL]["role"] == "superadmin"
    assert by_email[email]["role"] == "user"
    main_key = by_email[email]["main_access_key"]  # the keypair `user add` gave it; `keypair add` made ak
    assert main_key and main_key != ak
    assert [g["name"] for g in by_email[email]["groups"]] == ["default"]
    info = as_admin("admin", "user", "info", "-e", email)["items"][0]
    assert info["email"] == email and info["full_name"] == "E2E User" and info["domain_name"] == "default"

    keypairs = {k["access_key"]: k for k in as_admin("admin", "keypair", "list", "--limit", "100")["items"]}
    assert keypairs[ak]["secret_key"] == sk and keypairs[ak]["user_id"] == email  # superadmins see secrets
    assert keypairs[ak]["projects"] == ["default"] and keypairs[admin_ak]["is_admin"] is True
    assert keypairs[main_key]["user_id"] == email and keypairs[ak]["is_admin"] is False
    assert as_admin("admin", "keypair", "info")["items"][0]["access_key"] == admin_ak

    policies = {p["name"]: p for p in as_admin("admin", "keypair-resource-policy", "list")["items"]}
    assert "default" in policies
    info = as_admin("admin", "keypair-resource-policy", "info", "default")["items"][0]
    assert info["name"] == "default" and info["max_concurrent_sessions"] == policies["default"]["max_concurrent_sessions"]

    assert "default" in [s["name"] for s in as_admin("admin", "scaling-group", "list")["items"]]
    assert as_admin("admin", "scaling-group", "info", "default")["items"][0]["driver"] == "static"
    assert "default" in [d["name"] for d in as_admin("admin", "domain", "list")["items"]]
    assert as_admin("admin", "domain", "info", "default")["items"][0]["is_active"] is True
    groups = as_admin("admin", "group", "list")["items"]
    assert "default" in [g["name"] for g in groups]
    default_id = next(g["id"] for g in groups if g["name"] == "default")
    assert as_admin("admin", "group", "info", default_id)["items"][0]["name"] == "default"
    assert as_admin("admin", "group", "info", "default")["items"][0]["id"] == default_id


def test_admin_commands_as_plain_user(plain_user: tuple[Run, str, str, str], node_env: dict[str, str]) -> None:
    run, email, ak, sk = plain_user
    admin_ak, admin_sk = node_env["BACKEND_ACCESS_KEY"], node_env["BACKEND_SECRET_KEY"]
    # admin-only listings fail and leak nothing
    for args in (("admin", "user", "list"), ("admin", "domain", "list"), ("admin", "scaling-group", "list"),
                 ("admin", "scaling-group", "info", "default"), ("admin", "user", "info", "-e", fixtures.ADMIN_EMAIL)):
        out = run(*args, ok=False)
        assert "privilege" in out or "Forbidden operation" in out, (args, out)
        assert admin_ak not in out and admin_sk not in out and fixtures.ADMIN_EMAIL not in out.replace(
            f"-e {fixtures.ADMIN_EMAIL}", ""), (args, out)
    # its own data only
    keypairs = run("admin", "keypair", "list")
    assert keypairs["total_count"] == 2  # the one `user add` made and the one `keypair add` made
    assert {k["user_id"] for k in keypairs["items"]} == {email}
    assert (ak, sk) in [(k["access_key"], k["secret_key"]) for k in keypairs["items"]]
    assert run("admin", "keypair", "info")["items"][0]["access_key"] == ak
    assert run("admin", "user", "info")["items"][0]["email"] == email
    assert [g["name"] for g in run("admin", "group", "list")["items"]] == ["default"]
    assert [p["name"] for p in run("admin", "keypair-resource-policy", "list")["items"]] == ["default"]
    assert run("admin", "domain", "info", "default")["items"][0]["name"] == "default"


def test_sessions_and_admin_rest_as_both(as_admin: Run, plain_user: tuple[Run, str, str, str], official_client: Path,
                                         node_env: dict[str, str]) -> None:
    run, email, ak, sk = plain_user
    name = unique_name("acc")
    create = subprocess.run([str(official_client), "session", "create", "-t", name, "python"], env=node_env,
                            capture_output=True, text=True, timeout=120)
    assert create.returncode == 0, create.stdout + create.stderr
    try:
        mine = [s for s in as_admin("ps")["items"] if s["name"] == name]
        assert len(mine) == 1 and mine[0]["status"] == "RUNNING", mine
        sid = mine[0]["session_id"]
        listed = [s for s in as_admin("session", "list")["items"] if s["name"] == name]
        assert [s["session_id"] for s in listed] == [sid]
        running = as_admin("admin", "session", "list", "--status", "RUNNING")["items"]
        assert sid in [s["session_id"] for s in running] and {s["status"] for s in running} == {"RUNNING"}
        info = as_admin("session", "info", sid)["items"][0]
        assert info["name"] == name and info["status"] == "RUNNING" and info["session_id"] == sid
        agents = as_admin("admin", "agent", "list")["items"]
        assert agents and all(a["status"] == "ALIVE" for a in agents)
        images = as_admin("admin", "image", "list")["items"]
        assert any(i["name"].endswith("python") or "python" in i["name"] for i in images), images

        # the plain user sees none of it
        assert name not in [s["name"] for s in run("ps")["items"]]
        assert name not in [s["name"] for s in run("session", "list")["items"]]
        out = run("session", "info", sid, ok=False)
        assert "no such compute session" in out and name not in out
        out = run("admin", "agent", "list", ok=False)
        assert "superadmins" in out and all(a["id"] not in out for a in agents), out
        # images are every user's to choose from (as the original's), but not where they are installed
        user_images = run("admin", "image", "list")["items"]
        assert user_images and {i["name"] for i in user_images} <= {i["name"] for i in images}
        assert not any(a["id"] in json.dumps(user_images) for a in agents)
        # `admin session list` is a scoped listing in the original, not an error: only its own
        assert name not in [s["name"] for s in run("admin", "session", "list", "--status", "RUNNING")["items"]]

        # REST admin-only endpoints: 401 for the plain user, and for nobody at all
        api = Api({**node_env, "BACKEND_ACCESS_KEY": ak, "BACKEND_SECRET_KEY": sk})
        for method, path, body in (("PUT", "/manager/status", {"status": "frozen"}),
                                   ("POST", "/manager/announcement", {"enabled": True, "message": "x"}),
                                   ("POST", "/config/get", {"key": "config/redis/password"})):
            for sign in (True, False):
                status, reply = api.call(method, path, body, sign=sign)
                assert status == 401, (method, path, sign, status, reply)
        status, reply = api.call("GET", "/manager/status")
        assert status == 200 and reply["status"] == "running"
    finally:
        subprocess.run([str(official_client), "session", "destroy", name], env=node_env, capture_output=True,
                       timeout=120)


def test_official_freeze_and_unfreeze(official_client: Path, node_env: dict[str, str]) -> None:
    def official(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(official_client), *args], env=node_env, capture_output=True, text=True,
                              timeout=120)

    frozen = official("admin", "manager", "freeze")
    assert frozen.returncode == 0 and "frozen" in frozen.stdout, frozen.stdout + frozen.stderr
    try:
        assert "frozen" in official("admin", "manager", "status").stdout
        name = unique_name("frz")
        refused = official("session", "create", "-t", name, "python")
        assert "server-frozen" in refused.stdout + refused.stderr or "frozen" in (refused.stdout + refused.stderr)
        assert Api(node_env).call("GET", f"/session/{name}")[0] == 404  # nothing was enqueued
    finally:
        thawed = official("admin", "manager", "unfreeze")
        assert thawed.returncode == 0, thawed.stdout + thawed.stderr
    assert "running" in official("admin", "manager", "status").stdout
