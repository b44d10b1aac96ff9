"""The optional registry role applied for real (with etcd, which it registers in) to a systemd
host and to a host without systemd (supervisor), twice: the registry answers on loopback only,
etcd names it as the manager reads it, and the second run changes nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Node, _start, sh  # tests/roles/conftest.py (this directory is not a package)


@pytest.fixture(scope="module")
def registry_hosts(host_image: str) -> Iterator[dict[str, Node]]:
    from installer.engine import Phase, run
    from roles.etcd import etcd
    from roles.registry import registry

    tag = uuid.uuid4().hex[:8]
    hosts: dict[str, Node] = {}
    started: list[str] = []
    try:
        hosts["systemd"] = _start(f"bai-test-reg-sd-{tag}", host_image, True, started)
        hosts["supervisor"] = _start(f"bai-test-reg-nosd-{tag}", host_image, False, started)
        targets: dict[str, dict[str, Any]] = {h.target: {"registry_enabled": True} for h in hosts.values()}
        for _ in range(2):
            result = run(targets, [Phase("manager", {t: [etcd, registry] for t in targets})])
            if result.failed:
                bad = [op for op in result.ops if op.ok is False]
                pytest.fail("applying the registry role failed: " + "\n".join(
                    f"{op.host}: {op.label}\n{op.error}" for op in bad))
            for h in hosts.values():
                h.runs.append(result.changed_by_host(h.target))
        yield hosts
    finally:
        for name in started:
            sh("docker", "rm", "-f", name, check=False)


@pytest.fixture(params=["systemd", "supervisor"])
def h(request: pytest.FixtureRequest, registry_hosts: dict[str, Node]) -> Node:
    return registry_hosts[request.param]


def test_first_run_installs_and_second_changes_nothing(h: Node) -> None:
    first, second = h.runs
    assert first["registry | Install docker-registry"] and first["registry | Write /etc/docker/registry/config.yml"]
    assert first["registry | etcd key config/docker/registry/127.0.0.1%3A5000"]
    assert not any(second.values()), [k for k, v in second.items() if v]


def test_registry_answers_on_loopback_and_is_registered(h: Node) -> None:
    r = h.run("curl -fsS http://127.0.0.1:5000/v2/_catalog")
    assert r.returncode == 0 and json.loads(r.stdout) == {"repositories": []}, r.stderr
    assert [addr for addr, port in h.listeners() if port == 5000] == ["127.0.0.1"]
    r = h.run("ETCDCTL_API=3 etcdctl get --prefix /sorna/local/config/docker/registry/")
    assert r.stdout.split() == ["/sorna/local/config/docker/registry/127.0.0.1%3A5000", "http://127.0.0.1:5000",
                                "/sorna/local/config/docker/registry/127.0.0.1%3A5000/type", "docker"]
    if h.init == "systemd":
        assert h.run("systemctl is-active docker-registry").stdout.strip() == "active"
        assert h.run("systemctl is-enabled docker-registry").stdout.strip() == "enabled"
    else:
        assert "RUNNING" in h.run("supervisorctl status bai-registry").stdout
