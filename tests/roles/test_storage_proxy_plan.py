"""The storage-proxy role: where it runs (the ``storage`` group), the config it writes (loaded by
the proxy's own model), its service, the etcd keys it writes (run against a real etcd, twice,
and read back as the manager reads them), and a dry-run plan of the all-in-one install."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from bai.common.etcd import connect
from bai.common.storage_client import parse_volume_config
from bai.storage.config import StorageProxyConfig
from installer import engine, probe
from installer import inventory as inventory_mod
from roles import catalog, storage_proxy
from roles import settings as settings_mod
from roles.settings import Settings
from tests.fixtures.halfstack import HalfStack, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
SECRETS = {"storage_secret": "s" * 32, "storage_manager_secret": "m" * 32}


def _names(phase: engine.Phase) -> dict[str, list[str]]:
    return {host: [engine.role_name(r) for r in roles] for host, roles in phase.roles.items()}


def test_the_role_runs_in_the_storage_phase_last() -> None:
    local = [(p.name, _names(p)) for p in engine.phases_for(inventory_mod.load(REPO / "inventories" / "local.py"))]
    assert [name for name, _ in local] == ["halfstack", "manager", "agents", "storage"]
    assert dict(local)["storage"] == {"@local": ["storage-proxy"]}  # base already applied there
    multi = {p.name: _names(p) for p in engine.phases_for(inventory_mod.load(REPO / "inventories" / "multi-node.py"))}
    assert multi["storage"] == {"st1": ["os_prep", "base", "storage-proxy"]}
    inv = inventory_mod.load(REPO / "inventories" / "multi-node.py")
    # the volume path is shared data: the same directory on the proxy's host and the agents'
    st1, gpu1 = (settings_mod.build(inv.data[h], {}).storage_proxy for h in ("st1", "gpu1"))
    assert st1.volume_path == gpu1.volume_path == "/mnt/vfroot/local"
    assert st1.client_addr == "10.0.0.30:6021"  # the host's own section merged over the shared one


def test_secrets_are_generated_once_and_kept() -> None:
    first = settings_mod.generate_secrets({"db_password": "d"})
    assert first["storage_secret"] and first["storage_manager_secret"]
    assert first["storage_secret"] != first["storage_manager_secret"]
    assert settings_mod.generate_secrets(settings_mod.parse_secrets(settings_mod.render_secrets(first))) == first
    s = settings_mod.build({}, first)
    assert (s.storage_proxy.secret, s.storage_proxy.manager_secret) == (first["storage_secret"], first["storage_manager_secret"])


def test_config_is_the_contract_and_loads_with_the_proxys_model() -> None:
    s = settings_mod.build({}, SECRETS)
    text = storage_proxy.config_text(s)
    assert tomllib.loads(text) == {
        "etcd": {"namespace": "local", "addr": "127.0.0.1:2379"},
        "storage-proxy": {"node-id": "i-storage-local", "secret": "s" * 32, "session-expire": 86400,
                          "max-upload-size": 107374182400, "scandir-limit": 1000},
        "api": {"client": {"service-addr": "127.0.0.1:6021"},
                "manager": {"service-addr": "127.0.0.1:6022", "secret": "m" * 32}},
        "volume": {"volume1": {"backend": "vfs", "path": "/var/lib/bai/vfroot/local"}},
        "logging": {"level": "INFO"},
    }
    cfg = StorageProxyConfig.model_validate(tomllib.loads(text))
    assert cfg.api.manager.host_port == ("127.0.0.1", 6022) and cfg.api.client.host_port == ("127.0.0.1", 6021)
    assert cfg.storage_proxy.secret == "s" * 32 and cfg.api.manager.secret == "m" * 32
    assert str(cfg.volume["volume1"].path) == "/var/lib/bai/vfroot/local"
    # an inventory moves things without touching the role
    other = settings_mod.build({"storage_proxy": {"volume_name": "data", "volume_path": "/srv/vf",
                                                  "manager_addr": "10.0.0.30:6022"}}, SECRETS)
    assert StorageProxyConfig.model_validate(tomllib.loads(storage_proxy.config_text(other))).volume.keys() == {"data"}
    assert storage_proxy.host_name(other) == "local:data"


def test_service_runs_the_program_with_its_config_and_waits_for_status_ok() -> None:
    svc = storage_proxy.service(Settings())
    cmd = "/opt/bai/venv/bin/bai-storage-proxy start --config /etc/backend.ai/storage-proxy.toml"
    # supervisord: setpriv drops to the account, keeping three capabilities
    caps = "-all,+chown,+dac_override,+fowner"
    assert svc.command == (f"/usr/bin/setpriv --reuid=bai-storage --regid=bai-storage --init-groups --reset-env "
                           f"--no-new-privs --inh-caps={caps} --ambient-caps={caps} --bounding-set={caps} -- {cmd}")
    assert svc.user == "root"  # (setpriv does the switch)
    assert svc.program == "bai-storage-proxy" and svc.unit == "bai-storage-proxy.service"
    # systemd: the same account and capabilities from the unit
    assert svc.unit_text and f"ExecStart={cmd}" in svc.unit_text
    for line in ("User=bai-storage", "Group=bai-storage", "NoNewPrivileges=yes",
                 "AmbientCapabilities=CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER",
                 "CapabilityBoundingSet=CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER"):
        assert line in svc.unit_text.splitlines(), line
    assert svc.ready == ("/opt/bai/venv/bin/python -m installer.probe http-json "
                         "http://127.0.0.1:6022/status --expect status=ok")
    # status lists it with the other services
    assert [x.name for x in catalog.by_name("storage-proxy").services(Settings())] == ["storage-proxy"]


def test_http_json_probe_expects_fields(tmp_path: Path) -> None:
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            body = json.dumps({"status": "ok" if self.path == "/ok" else "degraded"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert probe.main(["http-json", f"{base}/ok", "--expect", "status=ok"]) == 0
        assert probe.main(["http-json", f"{base}/other", "--expect", "status=ok"]) == 1
        assert probe.main(["http-json", f"{base}/other"]) == 0
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def _bash(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


async def _volumes_keys(s: Settings, changes: dict[str, str | None] | None = None) -> dict[str, str]:
    """What the manager's EtcdStore reads under ``volumes``; then ``changes`` applied (None =
    delete the key)."""
    async with connect(s.etcd.addr, s.etcd.namespace) as etcd:
        found = await etcd.get_prefix("volumes")
        for key, value in (changes or {}).items():
            if value is None:
                await etcd.delete(key)
            else:
                await etcd.put(key, value)
    return found


def test_etcd_keys_written_once_and_read_as_the_manager_reads_them(halfstack: HalfStack,
                                                                    tmp_path: Path) -> None:
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    s = settings_mod.build({"etcd": {"addr": halfstack.etcd_addr, "namespace": namespace},
                            "config_dir": str(tmp_path)}, SECRETS)
    steps = storage_proxy.etcd_steps(s)
    # the secret comes from the proxy's config on the host (never on a command line): while the
    # file is absent nothing is written
    key, check, command = steps[-1]
    assert key == "volumes/proxies/local/secret" and "m" * 32 not in check + command
    assert _bash(command).returncode != 0
    Path(s.storage_proxy_toml).write_text(storage_proxy.config_text(s))
    for key, check, command in steps:
        assert _bash(check).returncode != 0, key
        r = _bash(command)
        assert r.returncode == 0, (key, r.stderr)
        assert _bash(check).returncode == 0, key
    # an operator's change is put back by the next run, a removed type key too
    found = asyncio.run(_volumes_keys(s, {"volumes/default_host": "elsewhere:vol", "volumes/_types/user": None,
                                          "volumes/proxies/local/secret": "stale"}))
    assert found == {
        "_types/group": "", "_types/user": "",
        "default_host": "local:volume1",
        "exposed_volume_info": "percentage",
        "proxies/local/client_api": "http://127.0.0.1:6021",
        "proxies/local/manager_api": "http://127.0.0.1:6022",
        "proxies/local/secret": "m" * 32,
        "proxies/local/ssl_verify": "false",
    }
    # the manager's own reading of them
    volumes = parse_volume_config(found)
    assert volumes.types == ("group", "user") and volumes.default_host == "local:volume1"
    assert volumes.exposed_volume_info == ("percentage",)
    proxy = volumes.proxies["local"]
    assert (proxy.manager_api, proxy.client_api, proxy.secret, proxy.ssl_verify) == (
        "http://127.0.0.1:6022", "http://127.0.0.1:6021", "m" * 32, False)
    stale = [key for key, check, _ in steps if _bash(check).returncode != 0]
    assert stale == ["volumes/_types/user", "volumes/default_host", "volumes/proxies/local/secret"]
    r = subprocess.run(["etcdctl", f"--endpoints={s.etcd.endpoint}", "del", "--prefix", f"/sorna/{namespace}/"],
                       capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"})
    assert r.returncode == 0, r.stderr


def test_the_program_serves_with_the_config_the_role_writes(halfstack: HalfStack, tmp_path: Path) -> None:
    """bai-storage-proxy started exactly as the service starts it under supervisord (setpriv, as
    the account bai-storage the install made, with three capabilities), on the file the role
    renders: the role's own readiness command passes, the volume is the proxy's, and the process
    holds nothing more of root's."""
    volume = tmp_path / "vfroot" / "local"
    volume.mkdir(parents=True)
    account = pwd.getpwnam(storage_proxy.USER)
    # the config as the role leaves it (root:bai-storage 640, in a directory anyone may enter)
    config_dir = Path(tempfile.mkdtemp(prefix="bai-sp-conf-"))
    config_dir.chmod(0o755)
    s = settings_mod.build({"etcd": {"addr": halfstack.etcd_addr, "namespace": f"t-{uuid.uuid4().hex[:8]}"},
                            "config_dir": str(config_dir),
                            "storage_proxy": {"volume_path": str(volume),
                                              "client_addr": f"127.0.0.1:{free_port()}",
                                              "manager_addr": f"127.0.0.1:{free_port()}"}},
                           settings_mod.generate_secrets({}))
    Path(s.storage_proxy_toml).write_text(storage_proxy.config_text(s))
    os.chown(s.storage_proxy_toml, 0, account.pw_gid)
    os.chmod(s.storage_proxy_toml, 0o640)
    svc = storage_proxy.service(s)
    assert svc.command.endswith(f" -- {s.bin('bai-storage-proxy')} start --config {s.storage_proxy_toml}")
    log = (tmp_path / "proxy.log").open("wb")
    proc = subprocess.Popen(["/bin/sh", "-c", f"exec {svc.command}"], stdout=log, stderr=subprocess.STDOUT,
                            cwd=tmp_path)
    try:
        wait_for(lambda: _bash(f"cd {REPO} && {svc.ready}").returncode == 0, "storage proxy", 60, proc)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{s.storage_proxy.manager_endpoint}/volumes", timeout=10).close()
        assert refused.value.code == 403
        request = urllib.request.Request(f"{s.storage_proxy.manager_endpoint}/volumes",
                                         headers={"X-BackendAI-Storage-Auth-Token": s.storage_proxy.manager_secret})
        with urllib.request.urlopen(request, timeout=10) as resp:
            volumes = json.loads(resp.read())["volumes"]
        assert [(v["name"], v["backend"], v["path"]) for v in volumes] == [("volume1", "vfs", str(volume))]
        status = dict(line.split(":\t", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                      if ":\t" in line)
        assert status["Uid"].split() == [str(account.pw_uid)] * 4
        assert status["Gid"].split() == [str(account.pw_gid)] * 4
        held = 1 << 0 | 1 << 1 | 1 << 3  # CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER
        for kind in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
            assert int(status[kind], 16) == held, (kind, status[kind])
        assert status["NoNewPrivs"] == "1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(config_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def local_plan() -> list[dict[str, object]]:
    """`bai-install install --dry-run --json` on this machine: facts only, nothing changed."""
    r = subprocess.run([sys.executable, "-m", "installer.cli", "install", "--dry-run", "--json"],
                       cwd=REPO, capture_output=True, text=True, timeout=240,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr[-3000:]
    plan: list[dict[str, object]] = json.loads(r.stdout)["plan"]
    return plan


def test_dry_run_plan(local_plan: list[dict[str, object]]) -> None:
    ops = [op for op in local_plan if op["role"] == "storage-proxy"]
    assert {op["phase"] for op in ops} == {"storage"}
    labels = [op["label"] for op in ops]
    for expected in ("Install etcd client", "Check bai-storage-proxy is installed",
                     "Volume volume1 at /var/lib/bai/vfroot/local", "Write /etc/backend.ai/storage-proxy.toml",
                     "Record the storage proxy's code version", "Wait for storage-proxy",
                     *(f"etcd key {key}" for key, _, _ in storage_proxy.etcd_steps(Settings()))):
        assert f"storage-proxy | {expected}" in labels, (expected, labels)
    # restarts only on a change of the same run; the keys only once the proxy answers
    assert all(op["conditional"] for op in ops if str(op["name"]).startswith("Restart "))
    assert labels.index("storage-proxy | Wait for storage-proxy") < labels.index(
        "storage-proxy | etcd key volumes/default_host")
    # last: a proxy that fails to start does not hold the agents back
    roles = [op["role"] for op in local_plan]
    assert max(i for i, role in enumerate(roles) if role != "storage-proxy") < roles.index("storage-proxy")
