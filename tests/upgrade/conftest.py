"""An all-in-one node of the first release (26.11.0, commit 189f6e9: the walking skeleton),
installed from its own commit by its own installer into a Docker-capable systemd test host
(tests/fixtures/testhosts.py), for the upgrade scenario.

The release's code is ``git archive`` of its commit, installed the way its bootstrap.sh did
(editable, into /opt/bai/venv); its one dependency the tree no longer has (aetcd) comes from a
wheel directory built once per machine on this machine (the hosts reach no package index)."""

from __future__ import annotations

import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from installer import inventory as inventory_mod
from installer.upgrade.releases import Release, load
from roles.settings import FlatKeyWarning
from tests.fixtures.testhosts import TestHost, bai_host_image, test_hosts  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
#: dependencies of old releases that the test host's wheelhouse (the tree's) lacks
OLD_EXTRA_WHEELS = ("aetcd==1.0.0",)
EXTRA_WHEELS_DIR = Path("/var/cache/bai/upgrade-test-wheels")
#: pip in the hosts: the image's wheelhouse only (no index is reachable from them)
PIP_ARGS = "--no-index --find-links /opt/bai/wheelhouse --find-links /opt/bai/upgrade-wheels"


def extra_wheels() -> Path:
    done = EXTRA_WHEELS_DIR / ".complete"
    if not done.exists():
        EXTRA_WHEELS_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["/opt/bai/venv/bin/pip", "wheel", "-q", "--disable-pip-version-check",
                        "-w", str(EXTRA_WHEELS_DIR), *OLD_EXTRA_WHEELS], check=True, timeout=600)
        done.touch()
    return EXTRA_WHEELS_DIR


def _tar_dir(path: Path) -> bytes:
    return subprocess.run(["tar", "-C", str(path), "-c", "--exclude=.complete", "."],
                          capture_output=True, check=True, timeout=120).stdout


def _at(commit: str, path: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:{path}"],
                          capture_output=True, check=True, text=True, timeout=60).stdout


def install_release(host: TestHost, release: Release) -> float:
    """Install ``release`` from its commit with its own installer, as its bootstrap.sh did
    (editable, into /opt/bai/venv); return the seconds taken. Releases that build the JupyterLab
    image are told not to (it needs PyPI inside the host)."""
    assert release.commit
    t0 = time.monotonic()
    src = f"/opt/bai/src-{release.version}"
    tree = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", release.commit],
                          capture_output=True, check=True, timeout=120).stdout
    host.put_tree(tree, src)
    extra = [w for w in OLD_EXTRA_WHEELS
             if w.split("==")[0] in _at(release.commit, "pyproject.toml")]
    pip = (f"/opt/bai/venv/bin/pip install -q {PIP_ARGS} --no-build-isolation --no-deps -e "
           f"{src}")
    if extra:
        host.put_tree(_tar_dir(extra_wheels()), "/opt/bai/upgrade-wheels")
        pip += f" && /opt/bai/venv/bin/pip install -q {PIP_ARGS} {' '.join(extra)}"
    else:
        host.run("mkdir -p /opt/bai/upgrade-wheels", check=True)
    host.run(pip, check=True, timeout=600)
    data = {"jupyter_image": ""} if "jupyter_image" in _at(release.commit,
                                                            "roles/settings.py") else {}
    text = f"halfstack = manager = agents = storage = [('@local', {data!r})]\n"
    host.run(f"cat > {src}/inventories/upgrade-test.py", input=text.encode(), check=True)
    r = host.run(f"cd {src} && /opt/bai/venv/bin/bai-install install --non-interactive "
                 f"-i inventories/upgrade-test.py 2>&1", timeout=900)
    assert r.returncode == 0, r.stdout[-4000:]
    return time.monotonic() - t0


@dataclass
class OldNode:
    host: TestHost
    inv: inventory_mod.Inventory
    record_dir: Path
    install_seconds: float

    def sh(self, cmd: str, timeout: float = 180) -> str:
        r = self.host.run(cmd, timeout=timeout)
        assert r.returncode == 0, f"{cmd}: {r.stdout[-2000:]} {r.stderr[-2000:]}"
        return r.stdout

    def client(self, args: str, timeout: float = 180) -> str:
        return self.sh(f"set -a; . /etc/backend.ai/client.env; set +a; "
                       f"/opt/bai/venv/bin/backend.ai {args}", timeout)

    def sql(self, query: str) -> list[str]:
        out = self.sh("runuser -u postgres -- psql -X -q -t -A -d backend -c "
                      f"\"{query}\"")
        return [line for line in out.splitlines() if line.strip()]


def write_inventory(path: Path, target: str) -> inventory_mod.Inventory:
    """The operator's inventory, as 26.12.0 wrote them: FLAT host data (``jupyter_image``, not
    ``kernel_image.jupyter_image``), which the 26.12 line still reads, with a warning naming the
    nested path. (The jupyter image is left out: building it needs PyPI inside the host.)"""
    path.write_text(f'host = ("{target}", {{"jupyter_image": ""}})\n'
                    "halfstack = manager = agents = storage = [host]\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FlatKeyWarning)
        return inventory_mod.load(path)


@pytest.fixture(scope="module")
def old_node(test_hosts: Callable[..., dict[str, TestHost]],  # noqa: F811
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OldNode]:
    hosts = test_hosts(["up1"], install_bai=False, kernel_images=["up1"])
    host = hosts["up1"]
    first = load().releases[0]
    seconds = install_release(host, first)
    tmp = tmp_path_factory.mktemp("upgrade")
    inv = write_inventory(tmp / "inventory.py", host.target)
    yield OldNode(host=host, inv=inv, record_dir=tmp / "records", install_seconds=seconds)


def snapshot(node: OldNode) -> dict[str, Any]:
    """What an upgrade must keep (or a refused one must leave alone)."""
    return {
        "users": node.sql("SELECT email, coalesce(full_name, '') FROM users ORDER BY email"),
        "sessions": node.sql("SELECT name, status FROM sessions ORDER BY created_at"),
        "keypairs": node.sql("SELECT access_key FROM keypairs ORDER BY access_key"),
        "venv": node.sh("readlink /opt/bai/venv || echo plain-directory").strip(),
        "record": node.sh("cat /etc/backend.ai/release.toml 2>/dev/null || echo none").strip(),
        "head": node.sql("SELECT version_num FROM alembic_version"),
    }


#: An execute round trip after another in a running session, inside the host (its client, its
#: client.env), each logged with its start and end time and the last line it printed.
LOOP = """set -a; . /etc/backend.ai/client.env; set +a
while [ ! -e /tmp/loop.stop ]; do
  t0=$(date +%s.%N)
  out=$(timeout 60 /opt/bai/venv/bin/backend.ai run -t "$1" -c "$2" python 2>&1)
  if printf '%s\n' "$out" | grep -qx "$3"; then said=ok; else said="failed: $(printf '%s' "$out" | tail -n 1)"; fi
  echo "$t0 $(date +%s.%N) $said" >> /tmp/loop.log
done
touch /tmp/loop.done
"""


def start_exec_loop(host: TestHost, session: str, code: str, expect: str) -> None:
    """Round trips of ``code`` in ``session``, each answered when it printed the line ``expect``."""
    host.run("rm -f /tmp/loop.log /tmp/loop.stop /tmp/loop.done", check=True)
    host.run("cat > /tmp/loop.sh", input=LOOP.encode(), check=True)
    subprocess.run(["docker", "exec", "-d", host.container, "sh", "/tmp/loop.sh", session,
                    code, expect], check=True, timeout=30)


def stop_exec_loop(host: TestHost, deadline: float = 90) -> dict[str, Any]:
    """Stop the loop (after its round trip under way) and say how it went: round trips, those
    answered, the longest time between two answers, and whether the last was answered."""
    host.run("touch /tmp/loop.stop", check=True)
    end = time.monotonic() + deadline
    while host.run("test -e /tmp/loop.done").returncode != 0:
        if time.monotonic() > end:
            raise TimeoutError("the execute loop did not stop")
        time.sleep(0.5)
    rows = [line.split(" ", 2) for line in host.run("cat /tmp/loop.log", check=True).stdout.splitlines()]
    rows = [r + [""] * (3 - len(r)) for r in rows]
    ok = [float(r[1]) for r in rows if r[2] == "ok"]
    gaps = [b - a for a, b in zip(ok, ok[1:], strict=False)]
    return {"round_trips": len(rows), "answered": len(ok),
            "longest_gap_s": round(max(gaps, default=0.0), 1),
            "last_answered": bool(rows) and rows[-1][2] == "ok",
            "last_lines": [" ".join(r) for r in rows[-3:]]}
