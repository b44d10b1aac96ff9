"""The official client 24.3.11's `backend.ai admin ... list/info` commands for accounts and
policies against the installed node: as the superadmin, and as a plain user (inserted with SQL:
user and keypair mutations do not exist yet) for whom admin listings fail or show only its own."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bai.manager.store import fixtures

Run = Callable[..., Any]


def _psql(sql: str) -> str:
    proc = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-d", "backend", "-v", "ON_ERROR_STOP=1",
                           "-tAc", sql], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


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
def plain_user(official_client: Path, node_env: dict[str, str]) -> Iterator[tuple[Run, str, str, str]]:
    """A user of the default domain and project with one keypair: (run, email, access key, secret)."""
    uid, email = uuid.uuid4(), f"e2e-{uuid.uuid4().hex[:8]}@example.com"
    ak, sk = fixtures.generate_keypair()
    _psql(f"""BEGIN;
        INSERT INTO users (uuid, username, email, full_name, status, domain_name, role, resource_policy,
                           main_access_key)
          VALUES ('{uid}', '{email.split("@")[0]}', '{email}', 'E2E User', 'active', 'default', 'user',
                  'default', '{ak}');
        INSERT INTO keypairs (access_key, secret_key, user_id, "user", is_active, is_admin, rate_limit,
                              resource_policy)
          VALUES ('{ak}', '{sk}', '{email}', '{uid}', true, false, 10000, 'default');
        INSERT INTO association_groups_users (user_id, group_id)
          SELECT '{uid}', id FROM groups WHERE domain_name = 'default' AND name = 'default';
        COMMIT;""")
    try:
        yield _client(official_client, {**node_env, "BACKEND_ACCESS_KEY": ak, "BACKEND_SECRET_KEY": sk}), email, ak, sk
    finally:
        _psql(f"""BEGIN; DELETE FROM association_groups_users WHERE user_id = '{uid}';
                  DELETE FROM keypairs WHERE "user" = '{uid}'; DELETE FROM users WHERE uuid = '{uid}'; COMMIT;""")


def test_admin_lists_and_infos_as_superadmin(as_admin: Run, plain_user: tuple[Run, str, str, str],
                                             node_env: dict[str, str]) -> None:
    _, email, ak, sk = plain_user
    admin_ak = node_env["BACKEND_ACCESS_KEY"]
    users = as_admin("admin", "user", "list")
    assert users["total_count"] == len(users["items"]) >= 2
    by_email = {u["email"]: u for u in users["items"]}
    assert by_email[fixtures.ADMIN_EMAIL]["role"] == "superadmin"
    assert by_email[email]["role"] == "user" and by_email[email]["main_access_key"] == ak
    assert [g["name"] for g in by_email[email]["groups"]] == ["default"]
    info = as_admin("admin", "user", "info", "-e", email)["items"][0]
    assert info["email"] == email and info["full_name"] == "E2E User" and info["domain_name"] == "default"

    keypairs = {k["access_key"]: k for k in as_admin("admin", "keypair", "list")["items"]}
    assert keypairs[ak]["secret_key"] == sk and keypairs[ak]["user_id"] == email  # superadmins see secrets
    assert keypairs[ak]["projects"] == ["default"] and keypairs[admin_ak]["is_admin"] is True
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
    assert keypairs["total_count"] == 1
    assert [(k["access_key"], k["secret_key"]) for k in keypairs["items"]] == [(ak, sk)]
    assert run("admin", "keypair", "info")["items"][0]["access_key"] == ak
    assert run("admin", "user", "info")["items"][0]["email"] == email
    assert [g["name"] for g in run("admin", "group", "list")["items"]] == ["default"]
    assert [p["name"] for p in run("admin", "keypair-resource-policy", "list")["items"]] == ["default"]
    assert run("admin", "domain", "info", "default")["items"][0]["name"] == "default"
