"""Install benchmark on fresh Docker-capable systemd test hosts (tests/fixtures/testhosts.py).

Prints, in one run:
  (a) fresh all-in-one install (`bai-install install` into a new host) and an immediate re-run
      (must change nothing), next to the raw steps it is made of, timed on another fresh host:
      `apt-get install` of the packages the roles install and `pip install` of bai's
      dependencies into a new venv (from the wheelhouse);
  (b) the multi-node scenario (tests/multinode/scenario.py: a management host and two agents):
      converge and re-run.
Kernel images: by default the agents get this machine's images pre-loaded (a seed volume);
with --build-images the all-in-one host builds them itself (debootstrap + docker import, and
JupyterLab's image from PyPI), as a real fresh install does, and the baseline adds a raw
debootstrap. (Test hosts trust this machine's extra CAs, see tests/fixtures/testhosts.py, so
PyPI answers there as it does here.)
Targets (issue 10): fresh all-in-one < 6 min including the kernel images; re-run < 30 s, zero changes.

Usage: /opt/bai/venv/bin/python bench/install.py [--build-images] [--skip-multinode] [--json]
Needs the installed node of this machine (bash installer/bootstrap.sh).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.fixtures import testhosts  # noqa: E402
from tests.multinode import scenario  # noqa: E402

#: what the roles apt-get install on an all-in-one host (base, half-stack, docker, the
#: storage proxy's etcd client, the image builder)
PACKAGES = ("ca-certificates procps iproute2 python3 util-linux postgresql-15 postgresql-client-15 "
            "redis-server redis-tools etcd-server etcd-client docker.io debootstrap")


def all_in_one_inventory(host: testhosts.TestHost, build_images: bool) -> str:
    data = "" if build_images else "data = {'kernel_image': {'jupyter_image': ''}}\n"
    return data + "".join(f"{g} = [{host.target!r}]\n"
                          for g in ("halfstack", "manager", "agents", "storage"))


def timed_install(inventory: Path) -> tuple[float, dict[str, Any]]:
    run = scenario.install(inventory, timeout=1800)
    if not run.ok:
        raise SystemExit(f"install failed: {run.problem}")
    return run.seconds, run.doc


def baseline(image: str, build_images: bool, started: list[str]) -> dict[str, float]:
    """The raw steps on a fresh host: apt-get install, pip install, (debootstrap)."""
    host = testhosts.start_hosts(["raw"], image=image, install_bai=False, started=started)["raw"]
    out: dict[str, float] = {}
    t0 = time.monotonic()
    host.run("apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
             f"--no-install-recommends {PACKAGES} >/dev/null", check=True, timeout=1200)
    out["apt-get install (the roles' packages)"] = time.monotonic() - t0
    t0 = time.monotonic()
    # (not under /tmp: a tmpfs mounted noexec in the test hosts)
    host.run("python3 -m venv /var/tmp/v && /var/tmp/v/bin/pip install -q --no-index "
             "--find-links /opt/bai/wheelhouse -r /opt/bai/requirements.txt", check=True,
             timeout=1200)
    out["pip install (bai's dependencies, wheelhouse)"] = time.monotonic() - t0
    if build_images:
        t0 = time.monotonic()
        host.run("debootstrap --variant=minbase bookworm /var/tmp/rootfs http://deb.debian.org/debian "
                 ">/dev/null", check=True, timeout=1200)
        out["debootstrap (kernel image rootfs)"] = time.monotonic() - t0
    return out


class Figures(dict[str, float]):
    """The figures, each printed as soon as it is taken (a later failure loses none)."""

    def __init__(self, quiet: bool) -> None:
        super().__init__()
        self.quiet = quiet

    def __setitem__(self, key: str, value: float) -> None:
        super().__setitem__(key, value)
        if not self.quiet:
            unit = "" if "changed ops" in key else " s"
            print(f"{key:<55} {value:8.1f}{unit}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-images", action="store_true",
                    help="build the kernel images in the all-in-one host (a real fresh install)")
    ap.add_argument("--skip-multinode", action="store_true")
    ap.add_argument("--skip-ha", action="store_true", help="leave out the HA half-stack scenario")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    image = testhosts.build_image()
    seed = testhosts.kernel_seed(image)
    started: list[str] = []
    figures = Figures(quiet=args.json)
    work = Path(tempfile.mkdtemp(prefix="bai-bench-install-"))
    try:
        aio = testhosts.start_hosts(
            ["aio"], image=image, started=started,
            kernel_seed_volume=None if args.build_images else seed,
            kernel_images=() if args.build_images else ["aio"])["aio"]
        inv = work / "all-in-one.py"
        inv.write_text(all_in_one_inventory(aio, args.build_images))
        figures["all-in-one: fresh install"], doc = timed_install(inv)
        built = [op for op in doc.get("changed_ops", []) if "Build kernel image" in op]
        if args.build_images and len(built) != 2:
            raise SystemExit(f"the fresh install built {built}, not both kernel images")
        figures["all-in-one: re-run"], again = timed_install(inv)
        figures["all-in-one: re-run changed ops"] = float(again["changed"])
        for k, v in baseline(image, args.build_images, started).items():
            figures[f"baseline: {k}"] = v
        if not args.skip_multinode:
            hosts = testhosts.start_hosts(list(scenario.HOSTS), image=image, started=started,
                                          kernel_seed_volume=seed,
                                          kernel_images=list(scenario.AGENTS))
            inv = work / "multi-node.py"
            inv.write_text(scenario.inventory_text(hosts))
            figures["multi-node: converge"], _ = timed_install(inv)
            figures["multi-node: re-run"], again = timed_install(inv)
            figures["multi-node: re-run changed ops"] = float(again["changed"])
        if not args.skip_ha:  # (c) tests/ha/scenario.py: three half-stack hosts, a manager on one
            from tests.ha import scenario as ha

            hosts = testhosts.start_hosts(list(ha.HOSTS), image=image, started=started)
            inv = work / "ha.py"
            inv.write_text(ha.inventory_text(hosts))
            figures["HA half-stack: converge"], _ = timed_install(inv)
            figures["HA half-stack: re-run"], again = timed_install(inv)
            figures["HA half-stack: re-run changed ops"] = float(again["changed"])
    finally:
        testhosts.remove_hosts(started)
    if args.json:
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
