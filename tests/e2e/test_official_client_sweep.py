"""Commands of the official client 24.3.11 that a sweep of its command tree found failing against
the installed node (404s: routes the original has and we lacked): ``admin resource query-slots``,
``vfolder-types``, ``docker-registries`` and ``recalculate-usage``. These commands print the
error and still exit 0, so the tests read what they print."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from .conftest import Api
from .webui import create_user, keypair_api, purge_user


def _run(exe: Path, env: dict[str, str], *args: str, output: str = "console") -> str:
    proc = subprocess.run([str(exe), "--output", output, *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "BackendAPIError" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc.stdout


def _psql(sql: str) -> str:
    proc = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-d", "backend", "-v", "ON_ERROR_STOP=1",
                           "-tAc", sql], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_query_slots_and_vfolder_types(official_client: Path, node_env: dict[str, str]) -> None:
    slots = _run(official_client, node_env, "admin", "resource", "query-slots").splitlines()
    assert slots[:2] == ["cpu (count)", "mem (bytes)"], slots
    types = _run(official_client, node_env, "admin", "resource", "vfolder-types").split()
    # the same types `vfolder list-allowed-types` reports
    allowed = _run(official_client, node_env, "vfolder", "list-allowed-types")
    assert types and all(t in ("user", "group") and f"'{t}'" in allowed for t in types), (types, allowed)


def test_docker_registries_lists_a_registered_one(official_client: Path, node_env: dict[str, str]) -> None:
    host = f"bai-test-{uuid.uuid4().hex[:8]}.example"
    key = f"config/docker/registry/{host}"
    _run(official_client, node_env, "admin", "etcd", "set", key, f"https://{host}")
    try:
        assert host in _run(official_client, node_env, "admin", "resource", "docker-registries").split()
    finally:
        _run(official_client, node_env, "admin", "etcd", "delete", key)
    assert host not in _run(official_client, node_env, "admin", "resource", "docker-registries").split()


def test_docker_registries_and_recalculate_are_superadmin_only(official_client: Path, node_env: dict[str, str],
                                                               api: Api) -> None:
    # a keypair that signs correctly but is no superadmin's: the plain user made for this test
    user = create_user(api, prefix="e2e-sweep")
    try:
        plain = keypair_api(api, user.email)
        env = {**node_env, "BACKEND_ACCESS_KEY": plain.ak, "BACKEND_SECRET_KEY": plain.sk}
        for cmd in ("docker-registries", "recalculate-usage"):
            proc = subprocess.run([str(official_client), "admin", "resource", cmd], env=env, capture_output=True,
                                  text=True, timeout=120)
            assert "401 Unauthorized" in proc.stdout + proc.stderr, (cmd, proc.stdout, proc.stderr)
        # a plain user reads the slots and folder types
        assert _run(official_client, env, "admin", "resource", "query-slots").startswith("cpu (count)")
    finally:
        purge_user(api, user)


def test_recalculate_usage_recounts_an_agents_occupied_slots(official_client: Path,
                                                             node_env: dict[str, str]) -> None:
    # a LOST agent (the scheduler never places on it) whose count says 5 CPUs while no kernel is there
    agent = f"bai-test-{uuid.uuid4().hex[:8]}"
    _psql(f"""INSERT INTO agents (id, status, scaling_group, addr, available_slots, occupied_slots)
              VALUES ('{agent}', 'LOST', 'default', '127.0.0.1:1', '{{"cpu": "8"}}', '{{"cpu": "5"}}')""")
    try:
        assert _run(official_client, node_env, "admin", "resource", "recalculate-usage").strip() == \
            "Resource allocation is re-calculated."
        # the recount is done before the answer
        assert json.loads(_psql(f"SELECT occupied_slots FROM agents WHERE id = '{agent}'")) == {}
    finally:
        _psql(f"DELETE FROM agents WHERE id = '{agent}'")


def test_task_logs_of_an_unknown_task_is_not_found(official_client: Path, node_env: dict[str, str]) -> None:
    proc = subprocess.run([str(official_client), "task-logs", str(uuid.uuid4())], env=node_env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "404 Not Found" in proc.stdout + proc.stderr, (proc.stdout, proc.stderr)
    proc = subprocess.run([str(official_client), "task-logs", "not-a-uuid"], env=node_env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "400 Bad Request" in proc.stdout + proc.stderr, (proc.stdout, proc.stderr)
