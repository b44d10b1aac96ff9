"""The OS, Docker and accelerator roles' pure parts: rendered files, the service account check,
daemon.json merging, and GPU detection and decisions against readings of a real NVIDIA H100 host
(/work/shared/fixtures/gpu/), loaded by the agent's own config models."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from bai.agent.compute.cuda.plugin import CUDASettings
from bai.agent.compute.mock import load_mock_config
from bai.agent.config import AgentConfig
from roles import _ops, accelerators, agent, conntrack, docker, os_prep
from roles import settings as settings_mod
from roles.accelerators import GPUFacts, decide

FIXTURE = Path("/work/shared/fixtures/gpu/nvidia-h100-80gb")
SECRETS = {"db_password": "d", "rpc_secret": "r", "redis_password": "p"}


def _settings(**sections: dict[str, object]) -> settings_mod.Settings:
    return settings_mod.build(dict(sections), SECRETS)


# -- os_prep --------------------------------------------------------------------------------------

def test_sysctl_values_follow_the_guide_without_overlapping_container_ports() -> None:
    values = os_prep.sysctl_values(_settings())
    assert values["net.core.somaxconn"] == "1024" and values["fs.file-max"] == "2048000"
    assert values["net.ipv4.tcp_rmem"] == "4096 12582912 16777216"
    assert values["net.ipv4.ip_local_port_range"] == "40000 65000"
    wide = os_prep.sysctl_values(_settings(agent={"container_port_range": (30000, 45000)}))
    assert wide["net.ipv4.ip_local_port_range"] == "45001 65000"
    text = os_prep.sysctl_text(values)
    assert text.startswith("# managed by bai-install") and "vm.overcommit_memory = 1\n" in text
    assert all(re.fullmatch(r"[a-z0-9_.-]+ = [0-9 ]+", line) for line in text.splitlines()[1:])


def test_limits_for_root_and_the_account() -> None:
    text = os_prep.limits_text(_settings(os={"user": "svc", "nofile": 100000}))
    assert "root soft nofile 100000" in text and "svc hard nofile 100000" in text
    assert "svc hard nproc 65536" in text
    assert len(os_prep.limits_text(_settings(os={"user": "root"})).splitlines()) == 5  # root once


def test_account_check_refuses_ids_of_another_account() -> None:
    def ok(**os: object) -> bool:
        check, _ = os_prep.account_check(_settings(os=os))
        return subprocess.run(["sh", "-c", check], timeout=10).returncode == 0

    assert not ok(user="bai-test-nobody", uid=65534, gid=65534)  # nobody / nogroup
    assert ok(user="nobody", uid=65534, gid=65534) is False  # gid 65534 is the group nogroup
    assert ok(user="bai-test-free", uid=54321, gid=54321)
    _, fail = os_prep.account_check(_settings(os={"uid": 65534}))
    r = subprocess.run(["sh", "-c", fail], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "uid 65534 or gid 1100 belongs to another account (nobody" in r.stderr


def test_account_commands_only_for_what_differs() -> None:
    def cmds(passwd: str, group: str, **kw: object) -> list[str]:
        found = {"passwd": passwd.split(":") if passwd else [], "group": group.split(":") if group else []}
        args = {"home": "/var/lib/bai", "shell": "/usr/sbin/nologin", "uid": 1100, "gid": 1100, **kw}
        return _ops.account_commands(found, "bai", **args)  # type: ignore[arg-type]

    assert cmds("", "") == ["groupadd --system -g 1100 bai",
                            "useradd --system -u 1100 -g bai -d /var/lib/bai -M -s /usr/sbin/nologin bai"]
    ok = "bai:x:1100:1100::/var/lib/bai:/usr/sbin/nologin"
    assert cmds(ok, "bai:x:1100:") == []
    assert cmds("bai:x:1100:1100::/home/bai:/bin/bash", "bai:x:1100:") == [
        "usermod -d /var/lib/bai -s /usr/sbin/nologin bai"]
    assert cmds("bai:x:1001:1001::/var/lib/bai:/usr/sbin/nologin", "bai:x:1001:") == [
        "groupmod -g 1100 bai", "usermod -u 1100 -g bai bai"]
    # no fixed ids (the app proxy's user): whatever the system gave it stays
    assert cmds("bai:x:999:995::/var/lib/bai:/usr/sbin/nologin", "bai:x:995:", uid=None, gid=None) == []
    assert cmds("", "", uid=None, gid=None) == [
        "groupadd --system bai", "useradd --system -g bai -d /var/lib/bai -M -s /usr/sbin/nologin bai"]


def test_conntrack_applies_only_where_the_module_is() -> None:
    assert conntrack.plan_for(loaded=True, loadable=False) == "apply"
    assert conntrack.plan_for(loaded=False, loadable=True) == "load"
    assert conntrack.plan_for(loaded=False, loadable=False) == "skip"
    assert conntrack.VALUES["net.netfilter.nf_conntrack_max"] == "10485760"


# -- docker ---------------------------------------------------------------------------------------

def test_daemon_json_keeps_foreign_keys_and_sets_ours() -> None:
    s = _settings()
    fresh = docker.daemon_config(s, None)
    assert fresh == {"log-driver": "json-file", "log-opts": {"max-size": "100m", "max-file": "3"},
                     "live-restore": True}
    assert docker.needs_restart({}, fresh)  # log settings: only a restart applies them
    mine = json.dumps({"registry-mirrors": ["https://m"], "log-opts": {"labels": "x"}, "storage-driver": "vfs"})
    merged = docker.daemon_config(s, mine)
    assert merged["registry-mirrors"] == ["https://m"] and merged["storage-driver"] == "vfs"
    assert merged["log-opts"] == {"labels": "x", "max-size": "100m", "max-file": "3"}
    # rendered stably: a rerun writes the same bytes
    text = docker.daemon_json_text(merged)
    assert docker.daemon_json_text(docker.daemon_config(s, text)) == text
    # only live-restore differs: a reload does it, no restart
    before = {**merged, "live-restore": False}
    assert not docker.needs_restart(before, merged)
    swarm = docker.daemon_config(_settings(docker={"live_restore": False, "storage_driver": "overlay2"}), text)
    assert swarm["live-restore"] is False and swarm["storage-driver"] == "overlay2"
    assert docker.needs_restart(merged, swarm)
    for bad in ("{not json", "[1, 2]"):
        with pytest.raises(docker.DaemonJsonError, match="/etc/docker/daemon.json"):
            docker.daemon_config(s, bad)


# -- accelerators ---------------------------------------------------------------------------------

def _fixture_output(runtimes: str = "{\"runc\":{}}", tools: tuple[str, ...] = ("nvidia-smi",),
                    nodes: bool = True) -> list[str]:
    """What NvidiaGPUs's command prints on the fixture's host: its nvidia-smi query and XML, its
    /dev/nvidia* nodes (from env.txt), and the bus id the driver's /proc lists."""
    csv = (FIXTURE / "query-gpu.csv").read_text().splitlines()
    xml = [line for line in (FIXTURE / "nvidia-smi-q.xml").read_text().splitlines()
           if re.search(r"<(driver|cuda)_version>", line)][:2]
    env = (FIXTURE / "env.txt").read_text()
    dev_nodes = sorted(set(re.findall(r"(/dev/nvidia[\w-]*)", env)))
    caps = [f"/dev/nvidia-caps/{n}" for n in re.findall(r"(nvidia-cap\d+)", env)]
    return (["__proc__", "0000:00:06.0", "__smi__", *csv, "__xml__", *xml, "__nodes__",
             *((dev_nodes + caps) if nodes else []), "__tools__", *tools, "__libcuda__", "2",
             "__runtimes__", runtimes])


def test_detection_reads_the_h100_host() -> None:
    facts = accelerators.parse(_fixture_output())
    assert facts.present and len(facts.gpus) == 1
    gpu = facts.gpus[0]
    assert (gpu.uuid, gpu.name, gpu.memory_mib, gpu.mig) == (
        "GPU-2ae65ffe-34ec-cd9b-efee-ac85ca8575f7", "NVIDIA H100 80GB HBM3", 81559, False)
    assert (facts.driver, facts.cuda) == ("580.159.04", "13.0")
    assert {"/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia0"} <= facts.nodes
    assert facts.libcuda and not facts.nvidia_runtime
    # a host without any NVIDIA driver
    empty = accelerators.parse(["__proc__", "__nodes__", "__tools__", "__libcuda__", "0", "__runtimes__"])
    assert empty == GPUFacts()


def test_decisions() -> None:
    facts = accelerators.parse(_fixture_output())
    s = _settings()
    d = decide(s.accelerators, facts)
    assert (d.use, d.passthrough, d.problems) == ("cuda", "device-nodes", ())
    assert "1 NVIDIA GPU(s) (NVIDIA H100 80GB HBM3), driver 580.159.04, CUDA 13.0: discrete" in d.notes
    toolkit = decide(s.accelerators, accelerators.parse(_fixture_output(runtimes='{"nvidia":{},"runc":{}}')))
    assert toolkit.passthrough == "toolkit" and toolkit.problems == ()
    old = decide(_settings(accelerators={"min_driver": "600.1"}).accelerators, facts)
    assert old.problems == ("NVIDIA driver 580.159.04 is older than 600.1 (accelerators.min_driver): "
                            "upgrade the driver",)
    frac = _settings(accelerators={"cuda_mode": "fractional"}).accelerators
    assert any("nvidia-cuda-mps-control" in p for p in decide(frac, facts).problems)
    with_mps = accelerators.parse(_fixture_output(tools=("nvidia-smi", "nvidia-cuda-mps-control")))
    assert decide(frac, with_mps).problems == ()
    no_uvm = accelerators.parse(_fixture_output(nodes=False, tools=("nvidia-smi", "nvidia-modprobe")))
    d = decide(s.accelerators, no_uvm)
    assert d.fixes == ("nvidia-modprobe -u -c=0",) and d.problems == ("/dev/nvidiactl is missing: the "
                                                                     "NVIDIA kernel module is not loaded",)
    no_smi = accelerators.parse(["__proc__", "0000:00:06.0", "__tools__"])
    assert any("nvidia-smi is missing" in p for p in decide(s.accelerators, no_smi).problems)
    # no GPU: nothing, unless GPUs are required
    assert decide(s.accelerators, GPUFacts()) == accelerators.Decision(
        "none", notes=("no NVIDIA GPU found: CUDA not configured",))
    assert decide(_settings(accelerators={"cuda": "on"}).accelerators, GPUFacts()).problems
    assert decide(_settings(accelerators={"cuda": "off"}).accelerators, facts).use == "none"
    assert decide(_settings(accelerators={"mock": True}).accelerators, facts).use == "mock"


def _agent_toml(s: settings_mod.Settings, facts: GPUFacts) -> AgentConfig:
    fragment = accelerators.agent_fragment(s, decide(s.accelerators, facts), facts)
    text = agent.toml_text(agent.agent_config(s, fragment))
    return AgentConfig.model_validate(tomllib.loads(text))


def test_agent_toml_per_decision_loads_with_the_agents_models(tmp_path: Path) -> None:
    facts = accelerators.parse(_fixture_output())
    # no GPU, no mock: agent.toml exactly as without this role
    s = _settings()
    assert agent.agent_config(s, accelerators.agent_fragment(s, decide(s.accelerators, GPUFacts()), GPUFacts())) \
        == agent.agent_config(s)
    frac = _settings(accelerators={"cuda_mode": "fractional", "cuda_unit_mem": "4g"})
    cfg = _agent_toml(frac, facts)
    assert cfg.agent.allow_compute_plugins is None  # every plugin, cuda included
    cuda = CUDASettings.from_config(cfg.plugins["cuda"])
    assert (cuda.mode, cuda.unit_mem) == ("fractional", 4 * 2**30)
    off = _agent_toml(_settings(accelerators={"cuda": "off"}), facts)
    assert off.agent.block_compute_plugins == ("cuda",)
    mock = _settings(accelerators={"mock": True, "mock_devices": 3, "mock_mode": "fractional"},
                     config_dir=str(tmp_path))
    cfg = _agent_toml(mock, GPUFacts())
    assert cfg.agent.allow_compute_plugins == ("mock",)
    path = Path(cfg.plugins["mock"]["config-path"])
    assert path == tmp_path / "mock-accelerator.toml"
    import tomli_w

    path.write_text(tomli_w.dumps(accelerators.mock_config(mock)))
    loaded = load_mock_config(path)
    assert loaded.slot_name == "cuda" and len(loaded.devices) == 3 and loaded.allocation_mode == "fractional"
    assert accelerators.mock_config(mock) == accelerators.mock_config(mock)  # stable ids: reruns change nothing
