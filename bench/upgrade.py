"""Wall time of an upgrade of an all-in-one node and of its rollback, next to the raw times of
the steps they are made of, measured in the same run on the same host.

    /opt/bai/venv/bin/python bench/upgrade.py [--from 26.12.0] [--keep]

A Docker-capable systemd test host (tests/fixtures/testhosts.py) gets the release ``--from``
(default: the release before the tree: a patch upgrade) installed from its commit by its own
installer, with a running session; then ``bai-install upgrade`` (the playbook) takes it to the
tree and ``bai-install rollback`` brings it back. Raw baselines, in the same host: ``pg_dump``
of the node's database, ``pip install`` of the tree into a scratch venv (what the prepare phase
did before it started from a copy of the running venv), that copy, a plain restart of the bai
services. A patch upgrade (the default) keeps a session's execute round trips going for the
whole upgrade and reports the longest gap between two answers. Targets: upgrade < 180 s,
rollback < 120 s, no execute interrupted for more than 10 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from installer.upgrade import playbook  # noqa: E402
from installer.upgrade.releases import load  # noqa: E402
from tests.fixtures import testhosts  # noqa: E402
from tests.upgrade.conftest import (  # noqa: E402
    PIP_ARGS,
    install_release,
    start_exec_loop,
    stop_exec_loop,
    write_inventory,
)


def _timed(host: testhosts.TestHost, cmd: str, timeout: float = 600) -> float:
    t = time.monotonic()
    r = host.run(cmd, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd}: {r.stdout[-1500:]} {r.stderr[-1500:]}")
    return time.monotonic() - t


def main() -> int:
    m = load()
    ap = argparse.ArgumentParser()
    ap.add_argument("--from", dest="source", default=str(m.releases[-2].version))
    ap.add_argument("--keep", action="store_true", help="leave the host running")
    args = ap.parse_args()
    source = m.get(args.source)
    if source is None or source.is_tree:
        ap.error(f"--from must be a release with a commit: {[str(r.version) for r in m.releases]}")
    image = testhosts.build_image()
    seed = testhosts.kernel_seed(image)
    started: list[str] = []
    figures: dict[str, Any] = {"from": str(source.version), "to": str(m.current.version)}
    try:
        hosts = testhosts.start_hosts(["bench-up"], image=image, install_bai=False,
                                      kernel_seed_volume=seed, kernel_images=["bench-up"],
                                      started=started)
        host = hosts["bench-up"]
        figures["install_old_s"] = round(install_release(host, source), 1)
        tmp = Path(f"/tmp/bench-upgrade-{host.container}")
        tmp.mkdir(parents=True, exist_ok=True)
        inv = write_inventory(tmp / "inventory.py", host.target)
        env = "set -a; . /etc/backend.ai/client.env; set +a; /opt/bai/venv/bin/backend.ai"
        path = playbook.check(inv).path
        patch = path is not None and not path.requires_drain  # a patch step keeps sessions
        if patch:
            _timed(host, f"{env} session create -t bench1 python")
            _timed(host, f"{env} run -t bench1 -c 'x = 41' python")

        # raw baselines
        figures["raw_pg_dump_s"] = round(_timed(
            host, "runuser -u postgres -- pg_dump -Fc -f /tmp/raw.dump backend"), 2)
        tar = playbook.release_tarball(m.current, tmp)
        host.put_tree(tar.read_bytes(), "/opt/bench-src")
        figures["raw_pip_install_s"] = round(_timed(
            host, "cd /opt && python3 -m venv bench-venv && bench-venv/bin/pip install -q "
                  f"--no-compile {PIP_ARGS} 'setuptools>=68' wheel && bench-venv/bin/pip "
                  f"install -q --no-compile --no-build-isolation {PIP_ARGS} /opt/bench-src"), 1)
        figures["raw_copy_venv_s"] = round(_timed(  # what prepare starts from now
            host, "cp -a \"$(readlink -f /opt/bai/venv)\" /opt/bench-venv-copy"), 1)
        figures["raw_restart_s"] = round(_timed(
            host, "systemctl restart bai-manager bai-agent && sleep 0"), 2)
        host.run("rm -rf /opt/bench-venv /opt/bench-venv-copy /opt/bench-src /tmp/raw.dump")

        if patch:  # execute round trips back to back for the whole upgrade
            start_exec_loop(host, "bench1", "print(x + 1)", "42")
        t = time.monotonic()
        phases: dict[str, float] = {}
        done = playbook.upgrade(inv, record_dir=tmp / "records", pip_args=PIP_ARGS,
                                tarballs={str(m.current.version): tar},
                                emit=lambda line: phases.__setitem__(
                                    line["phase"], line["seconds"]) if "seconds" in line else None)
        figures["upgrade_s"] = round(time.monotonic() - t, 1)
        if patch:
            figures["execute_during_upgrade"] = stop_exec_loop(host)
        figures["upgrade_phases_s"] = dict(phases)
        figures["upgrade_steps"] = done["steps"]
        phases.clear()
        t = time.monotonic()
        playbook.rollback(inv, record_dir=tmp / "records")
        figures["rollback_s"] = round(time.monotonic() - t, 1)
        sessions = host.run("runuser -u postgres -- psql -At -d backend -c "
                            "\"select name, status from sessions where name = 'bench1'\"").stdout
        figures["bench_session_after"] = sessions.strip()
    finally:
        if not args.keep:
            testhosts.remove_hosts(started)
    print(json.dumps(figures, indent=1))
    print(f"upgrade {figures.get('upgrade_s')} s (target < 180), rollback "
          f"{figures.get('rollback_s')} s (target < 120); raw: pg_dump "
          f"{figures.get('raw_pg_dump_s')} s, pip install {figures.get('raw_pip_install_s')} s, "
          f"venv copy {figures.get('raw_copy_venv_s')} s, "
          f"service restart {figures.get('raw_restart_s')} s")
    loop = figures.get("execute_during_upgrade")
    if loop:
        print(f"execute round trips during the upgrade: {loop['answered']} of {loop['round_trips']} "
              f"answered, longest gap {loop['longest_gap_s']} s (target < 10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
