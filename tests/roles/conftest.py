"""Fixtures for role tests: the offline systemd test image, and two throwaway hosts made from it
(one with systemd as PID 1, one with ``sleep infinity`` as PID 1, the no-systemd path), on which
the half-stack roles are applied through the engine, twice, in parallel.

Every container gets a unique name and is removed at the end. Nothing waits a fixed time: boot
and readiness are polled with deadlines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("BAI_TEST_HOST_IMAGE", "bai-test/systemd-host:bookworm")
SYSTEMD_FLAGS = [
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
    "--stop-signal", "SIGRTMIN+3",
]


def sh(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=timeout)


def wait_until(what: str, fn: Any, timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout}s")
        time.sleep(interval)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[None]:
    """A Docker engine: the running one, or dockerd started here (and stopped at the end)."""
    if shutil.which("docker") is None:
        pytest.fail("docker CLI not installed: run `bash installer/bootstrap.sh` first")
    if sh("docker", "info", check=False).returncode == 0:
        yield
        return
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        pytest.fail("no Docker engine answers and dockerd cannot be started here (root needed)")
    log = open("/tmp/bai-test-dockerd.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
    try:
        wait_until("docker info", lambda: sh("docker", "info", check=False).returncode == 0, 60,
                   0.2)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


@pytest.fixture(scope="session")
def host_image(docker_engine: None) -> str:
    """The systemd test image, built offline once per machine (cached afterwards)."""
    r = subprocess.run(["bash", str(REPO / "tests/hosts/build-systemd-image.sh"), IMAGE],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.fail(f"building {IMAGE} failed:\n{r.stderr[-3000:]}")
    return IMAGE


@dataclass
class Node:
    container: str
    init: str  # "systemd" or "sleep"
    runs: list[dict[str, bool]] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"@docker/{self.container}"

    def run(self, command: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return sh("docker", "exec", self.container, "sh", "-c", command, check=check)

    def listeners(self) -> list[tuple[str, int]]:
        """(address, port) of every listening TCP socket."""
        out = self.run("ss -Hltn").stdout
        found = []
        for line in out.splitlines():
            local = line.split()[3]
            addr, _, port = local.rpartition(":")
            found.append((addr.strip("[]"), int(port)))
        return found


def _start(name: str, image: str, systemd: bool, started: list[str], extra: tuple[str, ...] = ()) -> Node:
    """``extra``: more ``docker run`` arguments (e.g. bind mounts)."""
    started.append(name)  # removed at the end even if it never boots
    if systemd:
        sh("docker", "run", "-d", "--name", name, "--hostname", name, *SYSTEMD_FLAGS, *extra, image,
           "/sbin/init")

        def booted() -> bool:
            # fails for ~0.2 s until the bus exists; then --wait blocks until boot completes
            r = sh("docker", "exec", name, "systemctl", "is-system-running", "--wait", check=False,
                   timeout=60)
            return r.stdout.strip() in ("running", "degraded")

        wait_until(f"systemd boot in {name}", booted, 30)
        return Node(name, "systemd")
    sh("docker", "run", "-d", "--name", name, "--hostname", name, *extra, image, "sleep", "infinity")
    return Node(name, "sleep")


def _without_redis_password(h: Node) -> None:
    """Make ``h`` look like a node installed before the installer set a Redis password, with
    data in Redis that a migration must keep."""
    restart = ("systemctl restart redis-server" if h.init == "systemd"
               else "supervisorctl restart bai-redis >/dev/null")
    r = h.run(
        "set -e; sed -i '/^redis_password = /d' /etc/backend.ai/secrets.toml; "
        "sed -i '/^include \\/etc\\/redis\\/bai-auth.conf$/d' /etc/redis/redis.conf; "
        f"rm /etc/redis/bai-auth.conf; {restart}; "
        "timeout 30 sh -c 'until [ \"$(redis-cli ping)\" = PONG ]; do sleep 0.1; done'; "
        "redis-cli -n 3 set bai-kept yes >/dev/null; redis-cli -n 3 xadd bai-events '*' k v >/dev/null"
    )
    assert r.returncode == 0, r.stdout + r.stderr


def bai_checkout_mounts() -> tuple[str, ...]:
    """Read-only bind mounts that give a test host this machine's bai venv and the checkout(s)
    it runs from (the editable install points into it), at the same paths: enough to run the
    bai daemons there without installing them."""
    import bai
    from roles.settings import Settings

    paths = {Settings().venv, str(REPO), str(Path(bai.__file__).resolve().parents[2])}
    return tuple(arg for path in sorted(paths) for arg in ("-v", f"{path}:{path}:ro"))


@pytest.fixture(scope="session")
def halfstack_hosts(host_image: str) -> Iterator[dict[str, Node]]:
    """Both test hosts with os_prep, postgresql, redis, etcd, conntrack and accelerators applied
    twice, in parallel, through the engine; ``host.runs`` holds {op label: changed} of each run. A third run applies the redis
    role alone with another ``redis.maxmemory``, to see a config change restart the service.
    Then each host is put back to a node installed before the Redis password existed (no
    password anywhere, a key and a stream entry in Redis), and a fourth run must migrate it."""
    from installer.engine import Phase, run
    from roles.accelerators import accelerators
    from roles.conntrack import conntrack
    from roles.etcd import etcd
    from roles.os_prep import os_prep
    from roles.postgresql import postgresql
    from roles.redis import redis

    tag = uuid.uuid4().hex[:8]
    hosts: dict[str, Node] = {}
    started: list[str] = []
    try:
        hosts["systemd"] = _start(f"bai-test-sd-{tag}", host_image, True, started)
        hosts["supervisor"] = _start(f"bai-test-nosd-{tag}", host_image, False, started)
        plain: dict[str, dict[str, Any]] = {h.target: {} for h in hosts.values()}
        changed: dict[str, dict[str, Any]] = {h.target: {"redis": {"maxmemory": "128mb"}}
                                              for h in hosts.values()}
        full = [os_prep, postgresql, redis, etcd, conntrack, accelerators]
        for targets, roles in ((plain, full),
                               (plain, full),
                               (changed, [redis]),
                               (changed, [redis])):
            if len(hosts["systemd"].runs) == 3:
                for h in hosts.values():
                    _without_redis_password(h)
            t0 = time.monotonic()
            result = run(targets, [Phase("halfstack", {t: roles for t in targets})])
            print(f"half-stack run {len(hosts['systemd'].runs) + 1}: "
                  f"{time.monotonic() - t0:.1f}s")
            if result.failed:
                bad = [op for op in result.ops if op.ok is False]
                detail = "\n".join(f"{op.host}: {op.label}\n{op.error}" for op in bad)
                pytest.fail(f"applying the half-stack roles failed: {result.error}\n{detail}")
            for h in hosts.values():
                h.runs.append(result.changed_by_host(h.target))
        yield hosts
    finally:
        for name in started:
            sh("docker", "rm", "-f", name, check=False)
