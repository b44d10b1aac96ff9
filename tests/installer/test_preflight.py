"""Preflight (installer/preflight.py, ``bai-install preflight``), each failure produced for real
against this machine's installed node (@local) where possible: a port taken by a socket this test
binds, an unresolvable host name, a host whose SSH port refuses or does not answer, settings that
do not validate or contradict each other, thresholds above what the machine has. The host's
clock is the one reading that is faked (a host with a wrong clock cannot be made here): the skew
check itself is the real one. The installed node passes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from installer import inventory, preflight
from installer.preflight import CheckResult, Thresholds

REPO = Path(__file__).resolve().parents[2]
GPU = Path("/work/shared/fixtures/gpu/nvidia-h100-80gb")


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "installer.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def write_inventory(tmp_path: Path, body: str, name: str = "inv.py") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


def local_with(tmp_path: Path, data: dict[str, Any]) -> Path:
    """All-in-one on this machine, with ``data`` as @local's host data."""
    return write_inventory(tmp_path, f"halfstack = manager = agents = storage = [('@local', {data!r})]\n")


def of(results: list[CheckResult], check: str, status: str | None = None) -> list[CheckResult]:
    return [r for r in results if r.check == check and (status is None or r.status == status)]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 held by this test (a program that is not ours)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_installed_node_passes() -> None:
    results = preflight.run(inventory.load())
    assert preflight.failed(results) == [], results
    checks = {r.check for r in results}
    assert {"reach", "os", "ports", "disk", "memory", "docker", "clock"} <= checks
    # the node's own services hold their ports: that is a re-run, not a conflict
    held = [r.message for r in of(results, "ports") if "held by our service" in r.message]
    assert any("127.0.0.1:8081 (manager API" in m for m in held), held
    assert any("127.0.0.1:5432 (PostgreSQL" in m for m in held), held
    r = cli("preflight", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["summary"]["fail"] == 0
    assert all(set(x) == {"host", "check", "status", "message", "remedy"} for x in doc["results"])


def test_port_in_use_fails_naming_host_port_and_holder(tmp_path: Path, taken_port: int) -> None:
    inv = inventory.load(local_with(tmp_path, {"manager": {"addr": f"127.0.0.1:{taken_port}"}}))
    results = preflight.run(inv)
    bad = of(results, "ports", "fail")
    assert len(bad) == 1, results
    msg = bad[0].message
    assert msg.startswith("@local: port ") and f"127.0.0.1:{taken_port} (manager API" in msg
    assert f"(pid {os.getpid()})" in msg and bad[0].remedy
    # everything else about the node still passes
    assert [r for r in preflight.failed(results) if r.check != "ports"] == []


def test_install_stops_before_any_change_on_a_failed_check(tmp_path: Path, taken_port: int) -> None:
    inv = local_with(tmp_path, {"manager": {"addr": f"127.0.0.1:{taken_port}"}})
    r = cli("install", "-i", str(inv), "--non-interactive", "--log-dir", str(tmp_path / "logs"))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "preflight failed" in r.stderr and "nothing was changed" in r.stderr
    assert f"127.0.0.1:{taken_port}" in r.stderr
    [log] = (tmp_path / "logs").glob("install-*.log")
    assert f"log: {log}" in r.stderr
    text = log.read_text()
    assert "nothing was changed" in text
    # no phase started, no operation ran
    assert not [line for line in text.splitlines() if line.split()[1] in ("phase", "start")]
    # --json: the same, as one document
    r = cli("install", "-i", str(inv), "--non-interactive", "--json", "--log-dir", str(tmp_path / "logs"))
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["mode"] == "preflight" and doc["ok"] is False
    assert any(c["status"] == "fail" and c["check"] == "ports" for c in doc["preflight"])


def test_skip_preflight_is_loud(tmp_path: Path) -> None:
    """A host that does not exist: preflight stops the install; with --skip-preflight the run
    goes on (loudly) and fails where the engine connects. Nothing anywhere is changed."""
    inv = write_inventory(tmp_path, "halfstack = manager = agents = storage = ['@docker/bai-no-such-container']\n")
    r = cli("install", "-i", str(inv), "--non-interactive", "--log-dir", str(tmp_path))
    assert r.returncode == 1 and "preflight failed" in r.stderr
    assert "@docker/bai-no-such-container: unreachable" in r.stderr
    r = cli("install", "-i", str(inv), "--non-interactive", "--skip-preflight", "--log-dir", str(tmp_path))
    assert r.returncode == 1 and "preflight checks SKIPPED" in r.stderr and "preflight failed" not in r.stderr
    assert "bai-no-such-container" in r.stderr


def test_unresolvable_and_unreachable_hosts_are_failed_checks(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: connection refused
    inv = write_inventory(tmp_path, f"""
halfstack = manager = storage = ["@local"]
agents = ["@local", "no-such-host.invalid", ("gpu9", {{"ssh_hostname": "127.0.0.1", "ssh_port": {port}}}),
          ("gpu8", {{"ssh_hostname": "192.0.2.1"}})]
""")
    t0 = time.monotonic()
    results = preflight.run(inventory.load(inv), Thresholds(connect_timeout=1))
    assert time.monotonic() - t0 < 30
    dns = of(results, "dns", "fail")
    assert [r.host for r in dns] == ["no-such-host.invalid"]
    assert "'no-such-host.invalid' does not resolve" in dns[0].message
    reach = {r.host: r.message for r in of(results, "reach", "fail")}
    assert reach["gpu9"].startswith(f"gpu9: unreachable: TCP connection to 127.0.0.1:{port} failed")
    assert reach["gpu8"].startswith(("gpu8: unreachable: TCP connection to 192.0.2.1:22",
                                     "gpu8: unreachable: SSH to 192.0.2.1:22"))
    # what could not be looked at is said, per host
    for host in ("no-such-host.invalid", "gpu9", "gpu8"):
        skipped = [r for r in results if r.host == host and r.check == "disk"]
        assert skipped and "not checked" in skipped[0].message
    # the reachable host is checked as usual
    assert [r for r in preflight.failed(results) if r.host == "@local"] == []


def test_invalid_settings_name_host_and_key_path(tmp_path: Path) -> None:
    inv = local_with(tmp_path, {"redis": {"maxmemroy": "1gb"}, "postgresql": {"port": "many"}})
    r = cli("preflight", "-i", str(inv), "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    text = "\n".join(x["message"] for x in doc["results"] if x["status"] == "fail")
    assert "@local" in text and "redis.maxmemroy" in text and "postgresql.port" in text
    assert {x["check"] for x in doc["results"]} == {"inventory"}


def test_contradictory_settings(tmp_path: Path) -> None:
    """The daemons pointing at an etcd no half-stack host serves."""
    inv = inventory.load(local_with(tmp_path, {"etcd": {"addr": "127.0.0.1:2999"}}))
    results = preflight.run(inv)
    bad = of(results, "inventory", "fail")
    assert bad and all("points at etcd 127.0.0.1:2999, which no half-stack host serves" in r.message
                       for r in bad)
    assert "@local on 127.0.0.1:2379" in bad[0].message
    # a remote agent pointing at the half-stack's loopback address cannot reach it
    inv2 = inventory.load(write_inventory(tmp_path, """
halfstack = manager = storage = ["@local"]
agents = [("gpu1", {"ssh_hostname": "127.0.0.1", "ssh_port": 1})]
""", "inv2.py"))
    plans = preflight.host_plans(inv2)
    bad2 = preflight.check_contradictions(plans, inv2)
    assert [r.host for r in bad2] == ["gpu1"] and "etcd 127.0.0.1:2379" in bad2[0].message


def test_disk_and_memory_thresholds_from_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bai-install.toml"
    cfg.write_text('[preflight]\ndisk_images = "500t"\nmemory_recommended = "100t"\n')
    r = cli("preflight", "--config", str(cfg), "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    disk = [x for x in doc["results"] if x["check"] == "disk" and x["status"] == "fail"]
    assert disk and "GiB free on" in disk[0]["message"] and "needed" in disk[0]["message"]
    assert "/var/lib/docker" in " ".join(x["message"] for x in disk)
    mem = [x for x in doc["results"] if x["check"] == "memory"]
    assert mem[0]["status"] == "warn" and "recommended" in mem[0]["message"]
    cfg.write_text('[preflight]\nmemory_min = "100t"\n')
    doc = json.loads(cli("preflight", "--config", str(cfg), "--json").stdout)
    assert [x["status"] for x in doc["results"] if x["check"] == "memory"] == ["fail"]
    cfg.write_text('[preflight]\nmax_clock_skew = "soon"\n')
    r = cli("preflight", "--config", str(cfg), "--json")
    assert r.returncode == 2 and "preflight.max_clock_skew" in r.stderr


def test_clock_skew(tmp_path: Path) -> None:
    """The host's clock reading is faked (1 h ahead, then 3 s behind); the check is real."""
    inv = inventory.load()

    def ahead(state: Any, host: Any) -> float:
        return preflight.read_clock(state, host) + 3600

    def behind(state: Any, host: Any) -> float:
        return preflight.read_clock(state, host) - 3

    [bad] = of(preflight.run(inv, clock_reader=ahead), "clock")
    assert bad.status == "fail" and bad.message.startswith("@local: clock ahead of this machine's by 36")
    assert "time sync" in bad.remedy
    [warn] = of(preflight.run(inv, Thresholds(max_clock_skew=5), clock_reader=behind), "clock")
    assert warn.status == "warn" and "behind" in warn.message
    [ok] = of(preflight.run(inv, Thresholds(max_clock_skew=10), clock_reader=behind), "clock")
    assert ok.status == "ok"


def test_os_docker_gpu_checks_on_readings() -> None:
    """The OS, Docker and GPU checks on fact readings: other systems, and the recorded H100
    host's nvidia-smi answer (there is no GPU here)."""
    fact = preflight.HostReport()
    rep = fact.process(["os centos 9 CentOS Stream 9", "apt no", "docker absent", "gpudirs 0"])
    assert preflight.check_os("h", rep).status == "fail"
    assert preflight.check_docker("h", rep, Thresholds()).status == "fail"
    rep = fact.process(["os ubuntu 24.04 Ubuntu 24.04 LTS", "apt yes", "docker 19.03.1"])
    assert preflight.check_os("h", rep).status == "warn"
    assert preflight.check_docker("h", rep, Thresholds()).message == "h: Docker 19.03.1 is older than 20.10"
    nvml = json.loads((GPU / "nvml.json").read_text())
    driver = nvml["driver"]
    names = [line.split(",")[2].strip() for line in (GPU / "query-gpu.csv").read_text().splitlines()[1:]]
    rep = fact.process([f"gpu {i}, {name}, {driver}" for i, name in enumerate(names)] + ["gpudirs 1"])
    ok = preflight.check_gpus("gpu1", rep, "525.60.13")
    assert ok.status == "ok" and "H100" in ok.message and str(driver) in ok.message
    old = preflight.check_gpus("gpu1", rep, "999.1")
    assert old.status == "fail" and "older than 999.1" in old.message
    none = preflight.check_gpus("gpu1", fact.process(["gpudirs 0"]), "525.60.13")
    assert none.status == "fail" and "no NVIDIA GPU" in none.message


def test_docker_engine_down_reads_as_down_not_as_a_version(tmp_path: Path) -> None:
    """With the CLI installed and no engine answering, `docker version --format` prints an empty
    line and exits 1 (Docker 28): the reading is "down" (the docker role starts the engine), not
    an empty version that fails as "older than 20.10" (a fresh machine's first install did)."""
    stub = tmp_path / "docker"
    stub.write_text("#!/bin/sh\necho\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    stub.chmod(0o755)
    fact = preflight.HostReport()
    out = subprocess.run(["bash", "-c", fact.command(("/",))], capture_output=True, text=True,
                         env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}, check=True)
    rep = fact.process(out.stdout.splitlines())
    assert rep["docker"] == "down"
    assert preflight.check_docker("h", rep, Thresholds()).status == "warn"


def test_gpus_required_on_a_host_without_any(tmp_path: Path) -> None:
    """accelerators.cuda = "on" on this GPU-less machine fails; "auto" does not check; the mock
    accelerator needs none."""
    found = {}
    for cuda, mock in (("on", False), ("auto", False), ("on", True)):
        inv = inventory.load(local_with(tmp_path, {"accelerators": {"cuda": cuda, "mock": mock}}))
        found[(cuda, mock)] = of(preflight.run(inv), "gpu")
    [on] = found[("on", False)]
    assert on.status == "fail" and 'accelerators.cuda is "on" but no NVIDIA GPU was found' in on.message
    assert found[("auto", False)] == [] and found[("on", True)] == []


def test_a_wildcard_listen_is_served_at_every_address_the_host_reports(tmp_path: Path) -> None:
    """``postgresql.listen = "0.0.0.0"`` on a ``@docker/...`` target: a manager on another host
    reaching it by the container's address, hostname or container name is served (it read as
    "no half-stack host serves" because the inventory names such a host by its connector only);
    an address the server does not have still fails."""
    inv = inventory.load(write_inventory(tmp_path, """
halfstack = [("@docker/bai-db", {"postgresql": {"listen": "0.0.0.0"}, "redis": {"listen": "0.0.0.0"},
                                 "etcd": {"listen": "0.0.0.0"}})]
manager = agents = storage = [("@docker/bai-mgr", {"postgresql": {"host": "172.30.0.2"},
                                                   "redis": {"addr": "db:6379"},
                                                   "etcd": {"addr": "bai-db:2379"}})]
"""))
    plans = preflight.host_plans(inv)
    # what HostReport reads on the server: `hostname` and `hostname -I`
    reported = {"@docker/bai-db": {"db", "172.30.0.2", "fd00::2"}}
    assert preflight.check_contradictions(plans, inv, reported) == []
    bad = preflight.check_contradictions(plans, inv, {"@docker/bai-db": {"other", "172.30.0.9"}})
    assert {r.host for r in bad} == {"@docker/bai-mgr"} and all(r.status == "fail" for r in bad)
    assert sorted(r.message.split(" points at ")[1].split(",")[0] for r in bad) == [
        "postgresql 172.30.0.2:5432", "redis db:6379"]  # the container name serves without a report
    # the report's line, as the real command prints it on this machine
    out = subprocess.run(["sh", "-c", preflight.HostReport().command(("/",))], capture_output=True,
                         text=True, timeout=60).stdout.splitlines()
    names = preflight.HostReport().process(out)["names"]
    assert socket.gethostname() in names and len(names) >= 2, out
