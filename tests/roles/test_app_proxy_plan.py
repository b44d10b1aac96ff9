"""The app-proxy role: where it runs (the manager's host, after the manager), the config it writes
(loaded by the proxy's own model), its unprivileged service, and its registration as the
resource group's app proxy (run against a real migrated database, twice)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import tomli_w

from bai.appproxy.config import AppProxyConfig
from installer import engine
from installer import inventory as inventory_mod
from roles import app_proxy
from roles import settings as settings_mod
from tests.fixtures.halfstack import HalfStack

REPO = Path(__file__).resolve().parents[2]
SECRETS = {"app_proxy_jwt_key": "j" * 32, "app_proxy_permit_key": "p" * 32, "app_proxy_api_secret": "a" * 32}


def _names(phase: engine.Phase) -> dict[str, list[str]]:
    return {host: [engine.role_name(r) for r in roles] for host, roles in phase.roles.items()}


def test_the_role_runs_on_the_managers_host_after_the_manager() -> None:
    local = {p.name: _names(p) for p in engine.phases_for(inventory_mod.load(REPO / "inventories" / "local.py"))}
    assert local["manager"] == {"@local": ["bai-manager", "app-proxy", "webserver"]}
    multi = {p.name: _names(p) for p in engine.phases_for(inventory_mod.load(REPO / "inventories" / "multi-node.py"))}
    assert multi["manager"]["mgr1"][-2:] == ["app-proxy", "webserver"]


def test_keys_are_generated_once_and_kept() -> None:
    first = settings_mod.generate_secrets({})
    keys = [first["app_proxy_jwt_key"], first["app_proxy_permit_key"], first["app_proxy_api_secret"]]
    assert all(len(k) >= 32 for k in keys) and len(set(keys)) == 3
    assert settings_mod.generate_secrets(settings_mod.parse_secrets(settings_mod.render_secrets(first))) == first


def test_config_loads_with_the_proxys_model() -> None:
    s = settings_mod.build({}, SECRETS)
    cfg = AppProxyConfig.model_validate(tomllib.loads(app_proxy.config_text(s)))
    assert cfg.app_proxy.bind_host == "127.0.0.1" and cfg.app_proxy.bind_api_port == 5050
    assert cfg.app_proxy.bind_proxy_port_range == (10200, 10300)
    assert cfg.app_proxy.api_secret == "a" * 32 and cfg.app_proxy.jwt_encrypt_key == "j" * 32
    assert cfg.app_proxy.api_url == s.app_proxy.endpoint == "http://127.0.0.1:5050"
    other = settings_mod.build({"app_proxy": {"bind_host": "10.0.0.10", "advertised_host": "apps.example"}},
                               SECRETS)
    cfg = AppProxyConfig.model_validate(tomllib.loads(app_proxy.config_text(other)))
    assert cfg.app_proxy.api_url == "http://apps.example:5050"


def test_the_service_runs_unprivileged() -> None:
    svc = app_proxy.service(settings_mod.build({}, SECRETS))
    assert svc.user == app_proxy.USER
    assert svc.unit_text is not None and f"User={app_proxy.USER}\n" in svc.unit_text
    assert "--expect status=healthy" in svc.ready and "http://127.0.0.1:5050/status" in svc.ready
    # no secret on any command line
    for text in (svc.command, svc.ready, app_proxy.register_command(settings_mod.build({}, SECRETS), True)):
        assert "a" * 32 not in text and "j" * 32 not in text


def test_registration_converges(halfstack: HalfStack, tmp_path: Path) -> None:
    import asyncio

    db = asyncio.run(halfstack.migrated_database(f"apxrole_{uuid.uuid4().hex[:8]}"))
    halfstack.psql("insert into domains (name) values ('default') on conflict do nothing", db)
    halfstack.psql("insert into scaling_groups (name, driver, scheduler) values ('default', 'static', 'fifo') "
                   "on conflict do nothing", db)
    manager_toml = tmp_path / "manager.toml"
    manager_toml.write_text(tomli_w.dumps({"db": {"addr": f"127.0.0.1:{halfstack.pg_port}", "name": db,
                                                  "user": "postgres", "password": ""}}))
    s = settings_mod.build({"config_dir": str(tmp_path), "venv": str(Path(sys.executable).parents[1])}, SECRETS)
    (tmp_path / "app-proxy.toml").write_text(app_proxy.config_text(s))

    def run(check: bool) -> int:
        return subprocess.run(app_proxy.register_command(s, check), shell=True, cwd=REPO, timeout=60).returncode

    assert run(check=True) == 1  # not registered yet
    assert run(check=False) == 0
    assert run(check=True) == 0  # the rerun is a no-op
    row = halfstack.psql("select wsproxy_addr || ' ' || wsproxy_api_token from scaling_groups "
                         "where name = 'default'", db).strip()
    assert row == f"http://127.0.0.1:5050 {'a' * 32}"
