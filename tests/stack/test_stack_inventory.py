"""``bai-install --from-stack``: the inventory the stack exports, read back by the installer
(installer/stack_inventory.py) for every shape, bad stack outputs refused with the file, host and
key named, and the inventory of a generated multi-node stack planned for real by ``bai-install
install --from-stack --dry-run``, its management host pointed at this machine's installed node
(``@local``) and its agent at a container test host (tests/hosts/build-systemd-image.sh): pyinfra
connects to both, reads their facts, and plans every role per host. (Both hosts in containers
is the same code path, only slower: the management probes wait out timeouts there.)"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from installer import engine, stack_inventory
from installer.inventory import InventoryError
from roles import settings as settings_mod
from tests.stack.conftest import SHAPES, Built, build

REPO = Path(__file__).resolve().parents[2]
StackOf = Callable[[str], Built]


def _write(tmp_path: Path, outputs: dict[str, Any], name: str = "out.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(outputs))
    return path


def _roles(inv: Any) -> dict[str, dict[str, list[str]]]:
    return {p.name: {h: [engine.role_name(r) for r in roles] for h, roles in p.roles.items()}
            for p in engine.phases_for(inv)}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_shape_loads_as_an_inventory(stack_of: StackOf, tmp_path: Path, shape: str) -> None:
    built = stack_of(shape)
    inv = stack_inventory.load(_write(tmp_path, built.outputs))
    doc = built.outputs["inventory"]
    assert inv.groups == {g: [n for n, _ in doc[g]] for g in ("halfstack", "manager", "agents", "storage")}
    phases = _roles(inv)
    assert list(phases) == ["halfstack", "manager", "agents", "storage"]
    first = doc["halfstack"][0][0]
    assert phases["halfstack"] == {first: ["os_prep", "base", "postgresql", "redis", "etcd"]}
    assert "bai-manager" in phases["manager"][first]
    for name, _ in doc["agents"]:
        assert phases["agents"][name][-5:] == ["conntrack", "docker", "accelerators", "kernel_image", "bai-agent"]
    assert phases["storage"] == {first: ["storage-proxy"]}
    # each host's settings, as the roles will see them
    lb_url = built.outputs["storage_endpoint"]
    for name in inv.hosts:
        s = settings_mod.build(inv.data[name], {})
        assert s.storage_proxy.client_endpoint == lb_url
        assert s.etcd.addr == f"{inv.data[first]['ssh_hostname']}:2379"
    for name, data in doc["agents"]:
        s = settings_mod.build(inv.data[name], {})
        assert s.agent.rpc_addr == f"{data['ssh_hostname']}:6001" and s.agent.container_bind_host == data["ssh_hostname"]
    if built.config.managed:
        assert settings_mod.build(inv.data[first], {}).postgresql.host.endswith(".rds.amazonaws.com")


def _nested(doc: dict[str, Any]) -> dict[str, Any]:
    """A flat bai-inventory/1 document in the nested bai-inventory/2 form."""
    def host(data: dict[str, Any]) -> dict[str, Any]:
        out, unknown = stack_inventory.unflatten("test", data)
        assert unknown == []
        return out

    nested: dict[str, Any] = {"format": stack_inventory.FORMAT, "data": host(doc["data"])}
    for group in ("halfstack", "manager", "agents", "storage"):
        nested[group] = [[name, host(data)] for name, data in doc[group]]
    return nested


def test_nested_format_reads_as_the_flat_one(stack_of: StackOf, tmp_path: Path) -> None:
    built = stack_of("ha")
    assert built.outputs["inventory"]["format"] == stack_inventory.FLAT_FORMAT
    flat = stack_inventory.load(_write(tmp_path, built.outputs, "flat.json"))
    nested_doc = _nested(built.outputs["inventory"])
    nested = stack_inventory.load(_write(tmp_path, {**built.outputs, "inventory": nested_doc}, "nested.json"))
    assert nested.groups == flat.groups and nested.data == flat.data
    mgmt = nested_doc["manager"][0][1]
    assert mgmt["manager"]["addr"].endswith(":8081") and "manager_addr" not in mgmt
    # a nested document with a bad key path: named with the host and the path
    nested_doc["agents"][0][1]["agent"]["rpc_adr"] = "x"
    nested_doc["agents"][1][1]["agent"]["rpc_addr"] = "0.0.0.0:6001"
    with pytest.raises(InventoryError) as info:
        stack_inventory.load(_write(tmp_path, {**built.outputs, "inventory": nested_doc}, "bad.json"))
    assert "agents host 'agent1': agent.rpc_adr: unknown key" in str(info.value)
    assert "agents host 'agent2': agent.rpc_addr '0.0.0.0:6001' is every address" in str(info.value)
    # an old flat key next to its nested path with another value: refused, naming both
    nested_doc = _nested(built.outputs["inventory"])
    nested_doc["agents"][0][1]["agent_id"] = "i-x"
    with pytest.raises(InventoryError, match="agent_id: an old flat key for agent.id, which is given too"):
        stack_inventory.load(_write(tmp_path, {**built.outputs, "inventory": nested_doc}, "old.json"))


def test_secrets_output_is_ignored_and_never_becomes_host_data(stack_of: StackOf, tmp_path: Path) -> None:
    built = stack_of("ha")
    inv = stack_inventory.load(_write(tmp_path, built.outputs))
    text = json.dumps(inv.data)
    assert built.outputs["secrets"]["db_password"] not in text
    # without --show-secrets Pulumi prints "[secret]": still a usable inventory
    hidden = stack_inventory.load(_write(tmp_path, {**built.outputs, "secrets": "[secret]"}))
    assert hidden.groups == inv.groups


def _bad(stack_of: StackOf, tmp_path: Path, change: Callable[[dict[str, Any]], Any]) -> str:
    outputs = json.loads(json.dumps(stack_of("multi-node").outputs))
    result = change(outputs)
    path = _write(tmp_path, outputs if result is None else result)
    with pytest.raises(InventoryError) as info:
        stack_inventory.load(path)
    return str(info.value)


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(outputs: dict[str, Any]) -> None:
        node = outputs["inventory"]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


@pytest.mark.parametrize(("change", "message"), [
    (lambda o: {"endpoint": o["endpoint"]}, "no `inventory` output"),
    (lambda o: {**o, "inventory": "[secret]"}, "the `inventory` output is not an object"),
    (_set(["format"], "bai-inventory/9"), "inventory format 'bai-inventory/9'"),
    (_set(["agents", 0, 1, "agent_rpc_adr"], "x"), "agents host 'agent1': unknown host data key 'agent_rpc_adr'"),
    (_set(["data", "db_password"], "hunter2"), "data: db_password: a generated secret (postgresql.password)"),
    (lambda o: [entry[1].pop("manager_addr") for g in ("halfstack", "manager", "storage")
                for entry in o["inventory"][g]] and None, "manager host 'mgmt1': manager.addr missing"),
    (_set(["agents", 1, 0], "../etc"), "agents host '../etc': not a valid host name"),
    (_set(["agents", 0, 1, "container_bind_host"], "0.0.0.0"), "container_bind_host '0.0.0.0' is every address"),
    (_set(["agents", 0, 1, "ssh_port"], "22"), "ssh_port must be a int"),
    (_set(["agents", 0, 1, "ssh_hostname"], ""), "agents host 'agent1': ssh_hostname missing"),
    (_set(["storage"], []), "group storage is empty"),
    (_set(["agents", 0, 1, "container_port_range"], [1, 2, 3]), "host 'agent1': agent.container_port_range"),
    (_set(["halfstack"], {"mgmt1": {}}), "inventory.halfstack: Input should be a valid list"),
])
def test_bad_stack_outputs_are_refused(stack_of: StackOf, tmp_path: Path,
                                       change: Callable[[dict[str, Any]], Any], message: str) -> None:
    assert message in _bad(stack_of, tmp_path, change)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="not found"):
        stack_inventory.load(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(InventoryError, match="not JSON"):
        stack_inventory.load(tmp_path / "x.json")
    big = tmp_path / "big.json"
    with big.open("wb") as f:
        f.truncate(stack_inventory.MAX_BYTES + 1)
    with pytest.raises(InventoryError, match="larger than"):
        stack_inventory.load(big)


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "installer.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_cli_refuses_bad_output_and_both_sources(tmp_path: Path) -> None:
    path = _write(tmp_path, {"endpoint": "http://x:8081"})
    r = _cli("install", "--from-stack", str(path), "--dry-run", "--json", timeout=60)
    assert r.returncode == 1 and "no `inventory` output" in r.stderr and r.stdout == ""
    r = _cli("install", "--from-stack", str(path), "-i", "inventories/local.py", "--dry-run", timeout=60)
    assert r.returncode == 2 and "not both" in r.stderr


# -- the real plan against container hosts --------------------------------------------------------

def _roles_conftest() -> Any:
    """tests/roles/conftest.py (not a package): its container-host helpers, reused."""
    spec = importlib.util.spec_from_file_location("bai_roles_conftest", REPO / "tests/roles/conftest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _repoint(value: Any, names: dict[str, str], ips: dict[str, str]) -> Any:
    """The stack's hosts -> the containers: host names and every private address."""
    if isinstance(value, dict):
        return {k: _repoint(v, names, ips) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) == 2 and isinstance(value[0], str) and value[0] in names and isinstance(value[1], dict):
            return [names[value[0]], _repoint(value[1], names, ips)]
        return [_repoint(v, names, ips) for v in value]
    if isinstance(value, str):
        for old, new in ips.items():
            if value == old or value.startswith(f"{old}:") or value == f"{old}/32":
                return new + value[len(old):]
    return value


@pytest.fixture(scope="module")
def container_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A self-hosted multi-node stack's output (a management host and an agent: the two kinds
    of host), the management host pointed at this machine (@local, the installed node; a plan
    only reads) and the agent at a throwaway container host (no systemd inside: quick to
    start), and {stack host: pyinfra target}."""
    helpers = _roles_conftest()
    image = helpers.IMAGE
    r = subprocess.run(["bash", str(REPO / "tests/hosts/build-systemd-image.sh"), image],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    built = build({**SHAPES["multi-node"], "agentCount": "1"})
    doc = built.outputs["inventory"]
    tag = uuid.uuid4().hex[:8]
    started: list[str] = []
    try:
        agent = helpers._start(f"bai-test-stack-agent-{tag}", image, False, started,
                               helpers.bai_checkout_mounts())
        names = {"mgmt1": "@local", "agent1": agent.target}
        inspect = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        agent_ip = helpers.sh("docker", "inspect", "-f", inspect, agent.container).stdout.strip()
        address = {n: d["ssh_hostname"] for n, d in doc["manager"] + doc["agents"]}
        # the management host's services are this node's (on loopback: the plan's probes get
        # real answers instead of waiting out timeouts); the agent is the container
        ips = {address["mgmt1"]: "127.0.0.1", address["agent1"]: agent_ip}
        outputs = {**built.outputs, "inventory": _repoint(doc, names, ips)}
        path = tmp_path_factory.mktemp("stack") / "out.json"
        path.write_text(json.dumps(outputs))
        yield path, names
    finally:
        for name in started:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def test_plan_from_stack_on_container_hosts(container_stack: tuple[Path, dict[str, str]]) -> None:
    path, names = container_stack
    t0 = time.monotonic()
    # (two hosts' facts, the agent's over docker exec: minutes on a loaded 2-core machine)
    r = _cli("install", "--from-stack", str(path), "--dry-run", "--json", timeout=480)
    print(f"plan from the stack: {time.monotonic() - t0:.1f}s")
    assert r.returncode == 0, r.stderr[-3000:]
    plan = json.loads(r.stdout)
    assert plan["mode"] == "plan" and plan["ok"] is True and plan["inventory"] == str(path)
    roles: dict[str, set[str]] = {}
    for op in plan["plan"]:
        roles.setdefault(op["host"], set()).add(op["role"])
    mgmt, agent = names["mgmt1"], names["agent1"]
    assert set(roles) == {mgmt, agent}
    assert {op["phase"] for op in plan["plan"] if op["host"] == agent} == {"agents"}
    assert {"base", "postgresql", "redis", "etcd", "bai-manager", "storage-proxy"} <= roles[mgmt]
    assert not {"docker", "kernel_image", "bai-agent"} & roles[mgmt]
    assert roles[agent] >= {"base", "docker", "kernel_image", "bai-agent"}
    assert not {"postgresql", "redis", "etcd", "bai-manager", "storage-proxy"} & roles[agent]
    # the fresh agent host lacks Docker and the agent; the installed node has another
    # manager_id than the stack's (its EC2 instance id)
    assert any(op["will_change"] for op in plan["plan"] if op["host"] == agent and op["role"] == "docker")
    assert any(op["will_change"] for op in plan["plan"] if op["host"] == agent and op["role"] == "bai-agent")
    assert any(op["will_change"] for op in plan["plan"] if op["host"] == mgmt and op["role"] == "bai-manager")
