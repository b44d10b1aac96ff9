"""Helpers the molecule scenarios call (with /opt/bai/venv/bin/python, from the repository root):

    python molecule/hosts.py prepare [--images] CONTAINER...   copy this checkout to /opt/bai/src
                                                              (+ docker load the kernel images)
    python molecule/hosts.py converge SCENARIO CONTAINER...   write the scenario's inventory and
                                                              run bai-install; print its JSON

SCENARIO ``all-in-one``: one container in every group. ``multi-node``: the management host, then
two agent hosts (the same inventory as tests/multinode/, see tests/multinode/scenario.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.testhosts import KERNEL_IMAGES, TestHost, checkout_tar  # noqa: E402
from tests.multinode import scenario  # noqa: E402

#: all-in-one loads JupyterLab's image too (the kernel_image role then builds nothing)
ALL_IN_ONE_IMAGES = (*KERNEL_IMAGES, "bai.local/stable/python-jupyter:3.11-debian12")


def _host(container: str, name: str) -> TestHost:
    fmt = "{{range $net, $v := .NetworkSettings.Networks}}{{$net}} {{$v.IPAddress}} {{end}}"
    network, addr = subprocess.run(["docker", "inspect", "-f", fmt, container], check=True,
                                   capture_output=True, text=True).stdout.split()[:2]
    return TestHost(name=name, container=container, network=network, address=addr)


def prepare(containers: list[str], images: tuple[str, ...]) -> None:
    tree = checkout_tar()
    for c in containers:
        h = _host(c, c)
        h.put_tree(tree, "/opt/bai/src")
        h.run("timeout 60 sh -c 'until docker info >/dev/null 2>&1; do sleep 0.2; done'", check=True)
        if images:
            save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
            subprocess.run(["docker", "exec", "-i", c, "docker", "load", "-q"], stdin=save.stdout,
                           check=True, capture_output=True, timeout=900)
            save.wait(timeout=60)


def all_in_one_inventory(container: str) -> str:
    target = f"@docker/{container}"
    return ("# written by molecule/hosts.py: everything on one test host\n"
            + "".join(f"{g} = [{target!r}]\n" for g in ("halfstack", "manager", "agents", "storage")))


def converge(name: str, containers: list[str]) -> int:
    if name == "all-in-one":
        text = all_in_one_inventory(containers[0])
    elif name == "multi-node":
        # by name (ansible lists the platforms in its own order): bai-molecule-mgmt is mgmt
        by_role = {n: [c for c in containers if c.endswith(f"-{n}")] for n in scenario.HOSTS}
        if any(len(found) != 1 for found in by_role.values()):
            raise SystemExit(f"multi-node needs one container per name {scenario.HOSTS}: {containers}")
        hosts = {n: _host(found[0], n) for n, found in by_role.items()}
        text = scenario.inventory_text(hosts)
    else:
        raise SystemExit(f"unknown scenario {name}")
    inventory = Path(f"/tmp/bai-molecule-{name}.py")
    inventory.write_text(text)
    run = scenario.install(inventory)
    print(json.dumps(run.doc))
    if not run.ok:
        print(run.stderr[-4000:], file=sys.stderr)
    return 0 if run.ok else 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["prepare"]:
        rest = argv[1:]
        images: tuple[str, ...] = ()
        if rest[:1] == ["--images"]:
            images, rest = ALL_IN_ONE_IMAGES, rest[1:]
        prepare(rest, images)
        return 0
    if argv[:1] == ["converge"] and len(argv) >= 3:
        return converge(argv[1], argv[2:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
