"""The optional registry role: left out unless the host data asks for it, and what it would do
when asked (a dry-run plan against this machine: facts only, nothing is changed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bai.manager.store import registries as registry_store
from installer import engine
from installer import inventory as inventory_mod
from roles import registry
from roles.settings import Settings

REPO = Path(__file__).resolve().parents[2]
INVENTORY = '''halfstack = agents = ["@local"]
manager = [("@local", {"registry": {"enabled": True}})]
'''


def _names(phase: engine.Phase) -> dict[str, list[str]]:
    return {host: [engine.role_name(r) for r in roles] for host, roles in phase.roles.items()}


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inv") / "with_registry.py"
    path.write_text(INVENTORY)
    return path


def test_the_role_runs_only_where_enabled(inventory: Path) -> None:
    default = inventory_mod.load(REPO / "inventories" / "local.py")
    assert all("registry" not in roles for p in engine.phases_for(default) for roles in _names(p).values())
    enabled = {p.name: _names(p) for p in engine.phases_for(inventory_mod.load(inventory))}
    assert enabled["manager"] == {"@local": ["bai-manager", "registry", "app-proxy", "webserver"]}


def test_config_and_etcd_entries_match_what_the_manager_reads() -> None:
    s = Settings()
    text = registry.config_text(s)
    assert "  addr: 127.0.0.1:5000\n" in text and "rootdirectory: /var/lib/docker-registry\n" in text
    assert "auth:" not in text
    entries = dict(registry.etcd_entries(s))
    assert entries == {"config/docker/registry/127.0.0.1%3A5000": "http://127.0.0.1:5000",
                       "config/docker/registry/127.0.0.1%3A5000/type": "docker"}
    # the manager's store reads exactly these keys (URL under the registry's own key)
    flat = {k.removeprefix(registry_store._key("127.0.0.1:5000")).lstrip("/"): v for k, v in entries.items()}
    found = registry_store._settings("127.0.0.1:5000", flat)
    assert found == registry_store.RegistrySettings(hostname="127.0.0.1:5000", url="http://127.0.0.1:5000")
    svc = registry.service(s)
    assert svc.unit == "docker-registry.service" and svc.user == "docker-registry"
    assert svc.command == "/usr/bin/docker-registry serve /etc/docker/registry/config.yml"


def test_dry_run_plan(inventory: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "installer.cli", "install", "--inventory", str(inventory), "--dry-run", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    plan = json.loads(r.stdout)["plan"]
    labels = [op["label"] for op in plan if op["role"] == "registry"]
    for expected in ("registry | Install docker-registry", "registry | Registry storage",
                     "registry | Write /etc/docker/registry/config.yml", "registry | Wait for registry",
                     "registry | etcd key config/docker/registry/127.0.0.1%3A5000",
                     "registry | etcd key config/docker/registry/127.0.0.1%3A5000/type"):
        assert expected in labels, (expected, labels)
    # after the manager role (bai-manager and etcd are there), before the agents
    roles = [op["role"] for op in plan]
    assert max(i for i, role in enumerate(roles) if role == "bai-manager") < roles.index("registry")
    assert roles.index("registry") < roles.index("bai-agent")
