"""The optional registry role and the storage-proxy role applied for real (with etcd, which both
register in) to a systemd host and to a host without systemd (supervisor), twice: each answers on
loopback only, etcd names it as the manager reads it, and the second run changes nothing. (The
hosts get this machine's bai venv and checkout read-only at the same paths.)"""

from __future__ import annotations

import json
import tomllib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Node, _start, bai_checkout_mounts, sh  # tests/roles/conftest.py (not a package)

from roles.settings import parse_secrets


@pytest.fixture(scope="module")
def registry_hosts(host_image: str) -> Iterator[dict[str, Node]]:
    from installer.engine import Phase, run
    from roles.bai import code_stamp
    from roles.etcd import etcd
    from roles.registry import registry
    from roles.storage_proxy import storage_proxy

    tag = uuid.uuid4().hex[:8]
    hosts: dict[str, Node] = {}
    started: list[str] = []
    try:
        mounts = bai_checkout_mounts()
        hosts["systemd"] = _start(f"bai-test-reg-sd-{tag}", host_image, True, started, mounts)
        hosts["supervisor"] = _start(f"bai-test-reg-nosd-{tag}", host_image, False, started, mounts)
        targets: dict[str, dict[str, Any]] = {h.target: {"registry": {"enabled": True}} for h in hosts.values()}
        stamps = [code_stamp()]
        for _ in range(2):
            result = run(targets, [Phase("manager", {t: [etcd, registry, storage_proxy] for t in targets})])
            stamps.append(code_stamp())
            if result.failed:
                bad = [op for op in result.ops if op.ok is False]
                pytest.fail("applying the registry and storage-proxy roles failed: " + "\n".join(
                    f"{op.host}: {op.label}\n{op.error}" for op in bad))
            for h in hosts.values():
                h.runs.append(result.changed_by_host(h.target))
        # (the code may be edited in this checkout while the test runs: then the proxy restarts)
        for h in hosts.values():
            h.runs.append({"code unchanged": len(set(stamps)) == 1})
        yield hosts
    finally:
        for name in started:
            sh("docker", "rm", "-f", name, check=False)


@pytest.fixture(params=["systemd", "supervisor"])
def h(request: pytest.FixtureRequest, registry_hosts: dict[str, Node]) -> Node:
    return registry_hosts[request.param]


def test_first_run_installs_and_second_changes_nothing(h: Node) -> None:
    first, second, code = h.runs
    assert first["registry | Install docker-registry"] and first["registry | Write /etc/docker/registry/config.yml"]
    assert first["registry | etcd key config/docker/registry/127.0.0.1%3A5000"]
    assert first["storage-proxy | Write /etc/backend.ai/storage-proxy.toml"]
    assert first["storage-proxy | etcd key volumes/proxies/local/secret"]
    changed = [k for k, v in second.items() if v]
    if not code["code unchanged"]:
        changed = [k for k in changed if k not in ("storage-proxy | Record the storage proxy's code version",
                                                   f"storage-proxy | Restart {_proxy_unit(h)} on changed config",
                                                   "storage-proxy | Wait for storage-proxy")]
    assert changed == []


def _proxy_unit(h: Node) -> str:
    return "bai-storage-proxy.service" if h.init == "systemd" else "bai-storage-proxy"


def test_registry_answers_on_loopback_and_is_registered(h: Node) -> None:
    r = h.run("curl -fsS http://127.0.0.1:5000/v2/_catalog")
    assert r.returncode == 0 and json.loads(r.stdout) == {"repositories": []}, r.stderr
    assert [addr for addr, port in h.listeners() if port == 5000] == ["127.0.0.1"]
    r = h.run("ETCDCTL_API=3 etcdctl get --prefix /sorna/local/config/docker/registry/")
    assert r.stdout.split() == ["/sorna/local/config/docker/registry/127.0.0.1%3A5000", "http://127.0.0.1:5000",
                                "/sorna/local/config/docker/registry/127.0.0.1%3A5000/project", "stable",
                                "/sorna/local/config/docker/registry/127.0.0.1%3A5000/type", "docker"]
    # on loopback: plain HTTP, no credentials, no CA
    assert "auth:" not in h.run("cat /etc/docker/registry/config.yml").stdout
    assert h.run("test -e /usr/local/share/ca-certificates/bai-registry.crt").returncode == 1
    if h.init == "systemd":
        assert h.run("systemctl is-active docker-registry").stdout.strip() == "active"
        assert h.run("systemctl is-enabled docker-registry").stdout.strip() == "enabled"
    else:
        assert "RUNNING" in h.run("supervisorctl status bai-registry").stdout


def test_storage_proxy_answers_on_loopback_and_is_registered(h: Node) -> None:
    r = h.run("curl -fsS http://127.0.0.1:6022/status")
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "ok", r.stderr
    assert sorted(addr for addr, port in h.listeners() if port in (6021, 6022)) == ["127.0.0.1", "127.0.0.1"]
    # the config holds both secrets: root's and the proxy's account's alone; the volume root is root's, 0755
    r = h.run("stat -c '%a %U:%G' /etc/backend.ai/storage-proxy.toml /var/lib/bai/vfroot/local")
    assert r.stdout.split("\n")[:2] == ["640 root:bai-storage", "755 root:root"], r.stdout + r.stderr
    # the proxy runs as that account with three capabilities (systemd: its unit; supervisord: setpriv)
    pid = (h.run("systemctl show -p MainPID --value bai-storage-proxy") if h.init == "systemd"
           else h.run("supervisorctl pid bai-storage-proxy")).stdout.strip()
    status = dict(line.split(":\t", 1) for line in h.run(f"cat /proc/{pid}/status").stdout.splitlines() if ":\t" in line)
    uid = h.run("id -u bai-storage").stdout.strip()
    assert status["Uid"].split() == [uid] * 4, status
    assert int(status["CapEff"], 16) == int(status["CapBnd"], 16) == 0b1011, status  # chown, dac_override, fowner
    secret = parse_secrets(h.run("cat /etc/backend.ai/secrets.toml").stdout)["storage_manager_secret"]
    config = tomllib.loads(h.run("cat /etc/backend.ai/storage-proxy.toml").stdout)
    assert config["api"]["manager"]["secret"] == secret
    r = h.run("ETCDCTL_API=3 etcdctl get --prefix /sorna/local/volumes/")
    lines = r.stdout.split("\n")
    found = dict(zip(lines[0::2], lines[1::2], strict=False))
    assert found == {f"/sorna/local/volumes/{k}": v for k, v in {
        "_types/group": "", "_types/user": "", "default_host": "local:volume1", "exposed_volume_info": "percentage",
        "proxies/local/client_api": "http://127.0.0.1:6021", "proxies/local/manager_api": "http://127.0.0.1:6022",
        "proxies/local/secret": secret, "proxies/local/ssl_verify": "false"}.items()}
    assert len(secret) >= 32
    # the manager's secret opens the manager-facing API, nothing else does
    r = h.run(f"curl -sS -o /dev/null -w '%{{http_code}}' -H 'X-BackendAI-Storage-Auth-Token: {secret}' "
              "http://127.0.0.1:6022/volumes; echo; curl -sS -o /dev/null -w '%{http_code}' http://127.0.0.1:6022/volumes")
    assert r.stdout.split() == ["200", "403"], r.stdout + r.stderr
    if h.init == "systemd":
        assert h.run("systemctl is-active bai-storage-proxy").stdout.strip() == "active"
        assert h.run("systemctl is-enabled bai-storage-proxy").stdout.strip() == "enabled"
    else:
        assert "RUNNING" in h.run("supervisorctl status bai-storage-proxy").stdout
