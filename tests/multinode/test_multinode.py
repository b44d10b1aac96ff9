"""Multi-node scenario: one management host and two agent hosts (Docker inside each), installed
with ``bai-install install -i <inventory>`` from this machine, then used as a user would: both
agents register, a session on each agent (two sessions whose CPU requests fit one agent each)
runs ``print(1)``, a file one session writes into a virtual folder is read by the session on the
other agent (the folders' volume is shared), the swarm overlay connects containers on both
agents, a multi-node session across both agents talks over an overlay of its own (removed with
it), and a second install changes nothing. See scenario.py for the inventory's shape.
"""

from __future__ import annotations

import shlex
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.testhosts import TestHost

from . import scenario

# host start, two installs of three hosts (the first one installs the half-stack, Docker's
# swarm and everything else), all on a shared 2-core machine
pytestmark = pytest.mark.timeout(1500)


@dataclass
class Installed:
    hosts: dict[str, TestHost]
    inventory: Path
    first: scenario.InstallRun
    second: scenario.InstallRun
    env: dict[str, str]


@pytest.fixture(scope="module")
def installed(test_hosts: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    # the half-stack's packages come pre-installed (apt is not this test's subject)
    hosts: dict[str, TestHost] = test_hosts(list(scenario.HOSTS), halfstack_packages=True,
                                            kernel_images=list(scenario.AGENTS))
    inventory = tmp_path_factory.mktemp("multinode") / "inventory.py"
    inventory.write_text(scenario.inventory_text(hosts))
    first = scenario.install(inventory)
    (inventory.parent / "first-install.log").write_text(first.stderr)
    print(f"multi-node install: {first.seconds:.1f}s, {len(first.doc.get('changed_ops', []))} changed")
    if not first.ok:
        pytest.fail(f"first install failed: {first.problem}")
    second = scenario.install(inventory)
    print(f"multi-node re-run: {second.seconds:.1f}s, {len(second.doc.get('changed_ops', []))} changed")
    yield Installed(hosts, inventory, first, second, scenario.client_env(hosts["mgmt"]))


def test_rerun_changes_nothing(installed: Installed) -> None:
    assert installed.first.doc["changed_ops"]
    assert installed.second.ok, installed.second.doc
    assert installed.second.doc["changed_ops"] == [], "\n".join(installed.second.doc["changed_ops"])
    assert installed.second.doc["nothing_changed"] is True


def test_the_manager_runs_unprivileged_with_docker_access_for_the_overlay(installed: Installed) -> None:
    """Least privilege: the manager runs as bai-manager, its config is root:bai-manager 640, and
    (overlay enabled here) the account is in the docker group, which the multi-node session test
    below needs for the manager's overlays."""
    mgmt = installed.hosts["mgmt"]
    pid = mgmt.run("systemctl show -p MainPID --value bai-manager.service", check=True).stdout.strip()
    assert pid not in ("", "0")
    assert mgmt.run(f"ps -o user= -p {pid}", check=True).stdout.split() == ["bai-manager"]
    groups = mgmt.run(f"ps -o supgrp= -p {pid}", check=True).stdout.strip().split(",")
    assert "docker" in groups, groups
    assert mgmt.run("stat -c '%U:%G %a' /etc/backend.ai/manager.toml", check=True).stdout.split() == \
        ["root:bai-manager", "640"]


def test_both_agents_registered(installed: Installed) -> None:
    def alive() -> bool:
        out = scenario.cli(installed.env, "admin", "agent", "list").stdout
        return all(f"i-{a}" in out for a in scenario.AGENTS)

    scenario.wait_until("both agents ALIVE", alive, 60)
    for a in scenario.AGENTS:
        info = scenario.cli(installed.env, "admin", "agent", "info", f"i-{a}").stdout
        assert installed.hosts[a].address in info, info


def test_session_on_each_agent_sees_the_shared_folder(installed: Installed) -> None:
    env = installed.env
    folder = f"mn{uuid.uuid4().hex[:6]}"
    scenario.cli(env, "vfolder", "create", folder)
    names = [f"mn-{i}-{uuid.uuid4().hex[:6]}" for i in range(2)]
    try:
        # each agent has 2 CPUs: two sessions asking for 2 each must land on different agents
        for name in names:
            scenario.cli(env, "session", "create", "-t", name, "-r", "cpu=2", "-r", "mem=256m",
                         "-m", folder, "python", timeout=180)
        placed = {}
        for a in scenario.AGENTS:
            ps = installed.hosts[a].run("docker ps --format '{{.Names}}'", check=True).stdout
            kernels = [line for line in ps.splitlines() if line.startswith("kernel.")]
            assert len(kernels) == 1, (a, ps)  # in that agent's own Docker engine
            placed[a] = kernels[0]
        assert placed["ag1"] != placed["ag2"]
        first, second = names
        out = scenario.cli(env, "run", "-t", first, "-c", "print(1)", "python").stdout
        assert out == "1\n"
        assert scenario.cli(env, "run", "-t", second, "-c", "print(1)", "python").stdout == "1\n"
        stamp = f"written at {time.time()}"
        code = f"open('/home/work/{folder}/note.txt', 'w').write({stamp!r}); print(1)"
        assert scenario.cli(env, "run", "-t", first, "-c", code, "python").stdout == "1\n"
        code = f"print(open('/home/work/{folder}/note.txt').read())"
        assert scenario.cli(env, "run", "-t", second, "-c", code, "python").stdout == stamp + "\n"
    finally:
        for name in names:
            if _exists(env, name):
                scenario.cli(env, "session", "destroy", name)


def _exists(env: dict[str, str], name: str) -> bool:
    try:
        out = scenario.cli(env, "session", "list", "--name-only").stdout
    except AssertionError:
        return False
    return name in out.split()


def test_shared_storage_is_mounted_on_every_agent(installed: Installed) -> None:
    mgmt = installed.hosts["mgmt"]
    for a in scenario.AGENTS:
        r = installed.hosts[a].run(f"findmnt -n -o SOURCE,FSTYPE {scenario.VOLUME}", check=True)
        assert r.stdout.split() == [f"root@{mgmt.address}:{scenario.VOLUME}", "fuse.sshfs"]


def test_swarm_overlay_spans_both_agents(installed: Installed) -> None:
    mgmt, ag1, ag2 = (installed.hosts[n] for n in scenario.HOSTS)
    nodes = mgmt.run("docker node ls --format '{{.Hostname}} {{.Status}}'", check=True).stdout
    assert sorted(nodes.splitlines()) == sorted(f"{n} Ready" for n in scenario.HOSTS), nodes
    for h in (ag1, ag2):
        assert h.run("docker info --format '{{.Swarm.LocalNodeState}}'").stdout.strip() == "active"
    image = "bai.local/stable/python:3.11-debian12"
    server = f"ov-{uuid.uuid4().hex[:6]}"
    # a container on ag1 serves on the overlay; one on ag2 reaches it by name through it
    ag1.run(f"docker run -d --rm --name {server} --network bai-overlay {image} "
            "python3 -m http.server 8000", check=True)
    try:
        code = (f"import urllib.request, time\n"
                f"for i in range(100):\n"
                f"    try:\n"
                f"        print(urllib.request.urlopen('http://{server}:8000/', timeout=2).status); break\n"
                f"    except OSError: time.sleep(0.2)\n")
        r = ag2.run(f"docker run --rm --network bai-overlay {image} python3 -c {shlex.quote(code)}",
                    check=True, timeout=120)
        assert r.stdout.strip() == "200"
    finally:
        ag1.run(f"docker rm -f {server}")


def test_multi_node_session_talks_over_its_own_overlay(installed: Installed) -> None:
    """A two-kernel multi-node session assigned to both agent hosts (``--assign-agent``, the
    admin is a superadmin): the manager makes ``bai-multinode-<session id>`` on the swarm
    manager, each agent attaches its kernel with its cluster hostname, main1 (on ag1) resolves
    and reaches sub1 (on ag2) by name, also over SSH (the session's own keypair), and the overlay is
    removed when the session ends."""
    env, mgmt = installed.env, installed.hosts["mgmt"]
    scenario.cli(env, "admin", "keypair-resource-policy", "update", "default", "--max-containers-per-session", "2")
    name = f"mnc-{uuid.uuid4().hex[:6]}"
    overlay = ""
    try:
        scenario.cli(env, "session", "create", "-t", name, "--cluster-mode", "multi-node", "--cluster-size", "2",
                     "--assign-agent", "i-ag1,i-ag2", "-r", "cpu=1", "-r", "mem=256m", "python", timeout=180)
        nets = mgmt.run("docker network ls --filter driver=overlay --format '{{.Name}}'", check=True).stdout.split()
        overlay, = (n for n in nets if n.startswith("bai-multinode-"))
        sid = overlay.removeprefix("bai-multinode-")
        info = mgmt.run(f"docker network inspect {overlay} --format "
                        "'{{.Scope}} {{.Attachable}} {{index .Labels \"ai.backend.cluster-network\"}}'",
                        check=True).stdout.split()
        assert info == ["swarm", "true", "1"], info
        ps = f"docker ps --filter label=ai.backend.session-id={sid} --format '{{{{.Names}}}}'"
        main1, = installed.hosts["ag1"].run(ps, check=True).stdout.split()
        sub1, = installed.hosts["ag2"].run(ps, check=True).stdout.split()
        assert main1 != sub1
        installed.hosts["ag2"].run(f"docker exec -d {sub1} python3 -m http.server 8000 --bind 0.0.0.0", check=True)
        code = ("import subprocess, time, urllib.request\n"
                "print(subprocess.run(['getent', 'hosts', 'sub1'], capture_output=True, text=True).stdout.split()[1])\n"
                "for i in range(150):\n"
                "    try:\n"
                "        print(urllib.request.urlopen('http://sub1:8000/', timeout=2).status); break\n"
                "    except OSError: time.sleep(0.2)\n"
                # what MPI launchers do: ssh to the other kernel with no password or prompt
                "print(subprocess.run(['ssh', 'sub1', 'hostname'], capture_output=True, text=True,\n"
                "                     timeout=60, stdin=subprocess.DEVNULL).stdout.strip() or 'no ssh')\n")
        out = scenario.cli(env, "run", "-t", name, "-c", code, "python", timeout=120).stdout
        assert out.split() == ["sub1", "200", "sub1"], out
    finally:
        if _exists(env, name):
            scenario.cli(env, "session", "destroy", name)
    assert overlay
    scenario.wait_until(
        "the session's overlay removed",
        lambda: mgmt.run(f"docker network inspect {overlay}").returncode != 0, 60)
