"""Issue 11: preflight over the inventory a Pulumi stack hands to ``bai-install --from-stack``.

As generated (private cloud addresses that do not exist here), the inventory itself passes
(settings valid, every daemon pointed at an etcd/Redis/PostgreSQL some half-stack host serves)
and every host is reported unreachable, clearly, per host, within the connect timeout. Pointed at
this project's hosts (the management host at the installed node, reached by the agent through the
Docker bridge's address, the agent at a container test host), every check passes."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.installer.test_preflight import cli
from tests.stack.conftest import SHAPES, build
from tests.stack.test_stack_inventory import REPO, _repoint, _roles_conftest


def test_generated_stack_inventory_hosts_are_unreachable_and_the_rest_passes(tmp_path: Path) -> None:
    built = build(SHAPES["multi-node"])
    out = tmp_path / "out.json"
    out.write_text(json.dumps(built.outputs))
    cfg = tmp_path / "bai-install.toml"
    cfg.write_text(f'from_stack = "{out}"\n[preflight]\nconnect_timeout = "1s"\n')
    t0 = time.monotonic()
    r = cli("preflight", "--config", str(cfg), "--json")
    assert time.monotonic() - t0 < 60
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    hosts = {n for g in ("halfstack", "manager", "agents", "storage")
             for n, _ in built.outputs["inventory"][g]}
    failed = [x for x in doc["results"] if x["status"] == "fail"]
    # nothing wrong with the inventory itself: only reachability fails, once per host
    assert {x["check"] for x in failed} == {"reach"}
    assert {x["host"] for x in failed} == hosts
    for x in failed:
        data = dict(next(d for g in ("halfstack", "manager", "agents", "storage")
                         for n, d in built.outputs["inventory"][g] if n == x["host"]))
        # no route (TCP) or no SSH answer (this sandbox accepts TCP to any address)
        assert x["message"].startswith((f"{x['host']}: unreachable: TCP connection to {data['ssh_hostname']}:22",
                                        f"{x['host']}: unreachable: SSH to {data['ssh_hostname']}:22")), x
    assert not [x for x in doc["results"] if x["check"] == "inventory"]
    skipped = [x for x in doc["results"] if "not checked" in x["message"]]
    assert {x["host"] for x in skipped} == hosts


def _bridge_gateway(helpers: Any) -> str:
    """The host's address on Docker's default bridge. Its IPAM config names the gateway only on
    some engines (20.10 as Debian ships it may list the subnet alone): then the bridge
    interface's own address."""
    named = helpers.sh("docker", "network", "inspect", "bridge", "-f",
                       "{{range .IPAM.Config}}{{.Gateway}}{{end}}").stdout.strip()
    if named:
        return str(named)
    interface = helpers.sh("docker", "network", "inspect", "bridge", "-f",
                           '{{index .Options "com.docker.network.bridge.name"}}').stdout.strip() or "docker0"
    shown = helpers.sh("ip", "-4", "-o", "addr", "show", "dev", interface).stdout.split()
    address = shown[shown.index("inet") + 1].partition("/")[0]
    assert address, f"no IPv4 address on {interface}"
    return address


@pytest.fixture(scope="module")
def bridged_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A one-agent self-hosted stack's output: the management host is this machine (@local) at
    the Docker bridge's gateway address (where the agent container reaches it), the agent a
    throwaway container host."""
    helpers = _roles_conftest()
    r = subprocess.run(["bash", str(REPO / "tests/hosts/build-systemd-image.sh"), helpers.IMAGE],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    gateway = _bridge_gateway(helpers)
    built = build({**SHAPES["multi-node"], "agentCount": "1"})
    doc = built.outputs["inventory"]
    started: list[str] = []
    try:
        agent = helpers._start(f"bai-test-pf-agent-{uuid.uuid4().hex[:8]}", helpers.IMAGE, False, started)
        agent_ip = helpers.sh("docker", "inspect", "-f",
                              "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                              agent.container).stdout.strip()
        names = {"mgmt1": "@local", "agent1": agent.target}
        address = {n: d["ssh_hostname"] for n, d in doc["manager"] + doc["agents"]}
        ips = {address["mgmt1"]: gateway, address["agent1"]: agent_ip}
        path = tmp_path_factory.mktemp("stack") / "out.json"
        path.write_text(json.dumps({**built.outputs, "inventory": _repoint(doc, names, ips)}))
        yield path, names
    finally:
        for name in started:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def test_stack_inventory_on_container_hosts_passes(bridged_stack: tuple[Path, dict[str, str]]) -> None:
    path, names = bridged_stack
    r = cli("preflight", "--from-stack", str(path), "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0, [x for x in doc["results"] if x["status"] != "ok"]
    by_host: dict[str, set[str]] = {}
    for x in doc["results"]:
        by_host.setdefault(x["host"], set()).add(x["check"])
    assert set(by_host) == set(names.values())
    assert {"reach", "os", "ports", "disk", "memory", "clock"} <= by_host[names["mgmt1"]]
    assert {"reach", "os", "ports", "disk", "memory", "docker", "clock"} <= by_host[names["agent1"]]
