"""The official client 24.3.11's `backend.ai admin image ...` commands against the installed node:
list (table and JSON), rescan of a real registry (a throwaway docker-registry with an image pushed
into it, configured on the node through GraphQL and removed afterwards) followed to its end on the
background-task event stream, alias and dealias; and what a plain user may not do."""

from __future__ import annotations

import http.client
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bai.common.auth import API_VERSION, sign_request
from bai.manager.store import fixtures
from tests.fixtures.registry import REPOSITORY, Registry

from .test_official_client_admin import _client


def _gql(env: dict[str, str], query: str, variables: dict[str, Any]) -> Any:
    endpoint = env["BACKEND_ENDPOINT"].removeprefix("http://").rstrip("/")
    body = json.dumps({"query": query, "variables": variables})
    signed = sign_request(env["BACKEND_ACCESS_KEY"], env["BACKEND_SECRET_KEY"], "POST", "/admin/gql", endpoint,
                          "application/json")
    conn = http.client.HTTPConnection(endpoint, timeout=30)
    try:
        conn.request("POST", "/admin/gql", body, {
            "Content-Type": "application/json", "X-BackendAI-Version": API_VERSION, "Date": signed.date,
            "Authorization": signed.authorization, "Host": endpoint})
        reply = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert "errors" not in reply, reply
    return reply["data"]


def _psql(sql: str) -> str:
    proc = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-d", "backend", "-v", "ON_ERROR_STOP=1",
                           "-tAc", sql], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def plain_env(node_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The client environment of a plain user of the default domain and project (removed after)."""
    uid, email = uuid.uuid4(), f"e2e-img-{uuid.uuid4().hex[:8]}@example.com"
    ak, sk = fixtures.generate_keypair()
    _psql(f"""BEGIN;
        INSERT INTO users (uuid, username, email, status, domain_name, role, main_access_key)
          VALUES ('{uid}', '{email.split("@")[0]}', '{email}', 'active', 'default', 'user', '{ak}');
        INSERT INTO keypairs (access_key, secret_key, user_id, "user", is_active, is_admin, rate_limit,
                              resource_policy) VALUES ('{ak}', '{sk}', '{email}', '{uid}', true, false, 10000, 'default');
        INSERT INTO association_groups_users (user_id, group_id)
          SELECT '{uid}', id FROM groups WHERE domain_name = 'default' AND name = 'default';
        COMMIT;""")
    try:
        yield {**node_env, "BACKEND_ACCESS_KEY": ak, "BACKEND_SECRET_KEY": sk}
    finally:
        _psql(f"""BEGIN; DELETE FROM association_groups_users WHERE user_id = '{uid}';
                  DELETE FROM keypairs WHERE "user" = '{uid}'; DELETE FROM users WHERE uuid = '{uid}'; COMMIT;""")


@pytest.fixture
def on_node(node_env: dict[str, str], docker_registry: Registry) -> Iterator[Registry]:
    """The test registry configured on the installed node; it and its images removed afterwards."""
    created = _gql(node_env, "mutation($h: String!, $u: String!) { create_container_registry(hostname: $h, "
                             "props: {url: $u, type: \"docker\"}) { ok msg } }",
                   {"h": docker_registry.hostname, "u": docker_registry.url})
    assert created["create_container_registry"]["ok"], created
    try:
        yield docker_registry
    finally:
        _gql(node_env, "mutation($r: String!) { forget_image(reference: $r, architecture: \"x86_64\") { ok } }",
             {"r": docker_registry.image})
        _gql(node_env, "mutation($h: String!) { delete_container_registry(hostname: $h) { ok } }",
             {"h": docker_registry.hostname})


def test_admin_image_commands(official_client: Path, node_env: dict[str, str], on_node: Registry) -> None:
    as_admin = _client(official_client, node_env)
    # the image the install built, listed once (other tags of stable/python are images of their
    # own: customized images from session convert-to-image, commits made by other tests)
    local = [i for i in as_admin("admin", "image", "list")["items"]
             if i["registry"] == "bai.local" and i["name"] == "stable/python" and i["tag"] == "3.11-debian12"]
    assert len(local) == 1, local
    assert local[0]["architecture"] == "x86_64"
    assert "python" in local[0]["aliases"] and local[0]["digest"].startswith("sha256:")
    table = subprocess.run([str(official_client), "admin", "image", "list"], env=node_env, capture_output=True,
                           text=True, timeout=120)
    assert table.returncode == 0 and "stable/python" in table.stdout and "3.11-debian12" in table.stdout, table

    rescan = subprocess.run([str(official_client), "admin", "image", "rescan", "-r", on_node.hostname],
                            env=node_env, capture_output=True, text=True, timeout=180)
    assert rescan.returncode == 0, rescan.stdout + rescan.stderr
    assert "Finished registry scanning." in rescan.stdout + rescan.stderr, rescan
    # (the registry is shared by the session's tests: customized images other tests pushed are there too)
    found = [i for i in as_admin("admin", "image", "list")["items"]
             if i["registry"] == on_node.hostname and "-customized_" not in i["tag"]]
    assert [(i["name"], i["tag"]) for i in found] == [(REPOSITORY, on_node.tag)]
    assert found[0]["size_bytes"].endswith("M"), found  # the client formats sizes (JSON too): "74.7M"

    alias = "e2e-" + on_node.tag
    out = subprocess.run([str(official_client), "admin", "image", "alias", alias, on_node.image], env=node_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "An alias has created" in out.stdout + out.stderr, out
    found = [i for i in as_admin("admin", "image", "list")["items"]
             if i["registry"] == on_node.hostname and i["tag"] == on_node.tag]
    assert found[0]["aliases"] == [alias]
    out = subprocess.run([str(official_client), "admin", "image", "dealias", alias], env=node_env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "The alias has been removed" in out.stdout + out.stderr, out


def test_admin_image_commands_as_plain_user(official_client: Path, plain_env: dict[str, str],
                                            on_node: Registry) -> None:
    run, user_env = _client(official_client, plain_env), plain_env
    out = subprocess.run([str(official_client), "admin", "image", "rescan", "-r", on_node.hostname],
                         env=user_env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "superadmin privilege required" in out.stdout + out.stderr, out
    # users see the images they may run: local ones and their domain's allowed registries
    listed = run("admin", "image", "list")["items"]
    assert listed and all(i["registry"] == "bai.local" for i in listed)
    out = subprocess.run([str(official_client), "admin", "image", "alias", "evil", "python"], env=user_env,
                         capture_output=True, text=True, timeout=120)
    assert "superadmin privilege required" in out.stdout + out.stderr, out
