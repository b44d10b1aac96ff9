"""Pure parts of the agent: the container body, ulimits, slot accounting, agent.toml."""

from __future__ import annotations

import resource
from decimal import Decimal
from pathlib import Path

import pytest

from bai.agent.config import AgentConfig
from bai.agent.docker import Confinement, container_config, exit_code_from_status, host_ulimits
from bai.agent.resources import InsufficientResources, SlotAllocator
from bai.common.agent_rpc import ExecuteRequest, GetLogsRequest, KernelCreationConfig


def _body(**overrides: object) -> dict:
    config = KernelCreationConfig.model_validate({
        "image": {"canonical": "img:1"},
        "cluster_hostname": "sub3",
        "resource_slots": {"cpu": "0.25", "mem": 512 * 2**20},
        "resource_opts": {"shmem": "128m"},
        "environ": {"PYTHONPATH": "/home/work/lib", "FOO": "bar"},
        **overrides,
    })
    return container_config(
        kernel_id="k1", session_id="s1", owner="i-a", config=config,
        slots={"cpu": Decimal("0.25"), "mem": Decimal(512 * 2**20)},
        image_labels={"ai.backend.runtime-path": "/opt/py/bin/python3",
                      "ai.backend.envs.corecount": "OMP_NUM_THREADS,NPROC"},
        runner_dir=Path("/src/bai/kernel"), ipc_dir=Path("/var/lib/bai/ipc/k1"), ulimits=host_ulimits(),
        confinement=Confinement(uid=1000, gid=1000, pids_limit=4096, log_max_size=10 * 2**20, log_max_files=3),
    )


def test_container_body() -> None:
    body = _body()
    host = body["HostConfig"]
    assert host["NanoCpus"] == 250_000_000
    assert host["Memory"] == host["MemorySwap"] == 512 * 2**20
    assert host["ShmSize"] == 128 * 2**20
    assert host["Init"] is True
    assert host["Binds"] == ["/src/bai/kernel:/opt/bai/kernel/bai_kernel:ro", "/var/lib/bai/ipc/k1:/opt/bai/ipc:ro"]
    assert body["Cmd"] == ["/opt/py/bin/python3", "-s", "-m", "bai_kernel"]
    assert body["Hostname"] == "sub3" and body["WorkingDir"] == "/home/work"
    assert body["Labels"]["ai.backend.kernel-id"] == "k1" and body["Labels"]["ai.backend.owner"] == "i-a"
    env = dict(e.split("=", 1) for e in body["Env"])
    # The runner's PYTHONPATH wins; the user's is handed to the runner to restore for user code.
    assert env["PYTHONPATH"] == "/opt/bai/kernel" and env["BAI_ORIG_PYTHONPATH"] == "/home/work/lib"
    assert env["FOO"] == "bar" and env["BACKENDAI_KERNEL_ID"] == "k1" and env["BACKENDAI_CLUSTER_HOST"] == "sub3"
    assert env["OMP_NUM_THREADS"] == env["NPROC"] == "1"
    assert _body(resource_opts={})["HostConfig"]["ShmSize"] == 64 * 2**20


def test_container_is_confined() -> None:
    body = _body()
    host = body["HostConfig"]
    assert body["User"] == "1000:1000"
    assert host["CapDrop"] == ["ALL"] and "CapAdd" not in host
    assert host["SecurityOpt"] == ["no-new-privileges:true"]  # and so Docker's default seccomp profile
    assert host["PidsLimit"] == 4096
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": str(10 * 2**20), "max-file": "3"}}
    # No host path is writable from the container: every bind mount is read-only.
    assert host["Binds"] and all(bind.endswith(":ro") for bind in host["Binds"])
    assert not {"Mounts", "Privileged", "Devices", "PidMode", "NetworkMode", "IpcMode"} & host.keys()


def test_ulimits_never_exceed_host_hard_limits() -> None:
    limits = {u["Name"]: u for u in host_ulimits()}
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("memlock", resource.RLIMIT_MEMLOCK)):
        hard = resource.getrlimit(which)[1]
        if hard != resource.RLIM_INFINITY:
            assert 0 <= int(limits[name]["Hard"]) <= hard
        assert limits[name]["Soft"] == limits[name]["Hard"]


def test_slot_allocator() -> None:
    alloc = SlotAllocator({"cpu": Decimal(2), "mem": Decimal(2**30)})
    alloc.allocate("a", {"cpu": Decimal("1.5"), "mem": Decimal(2**29)})
    with pytest.raises(InsufficientResources, match="not enough cpu"):
        alloc.allocate("b", {"cpu": Decimal(1), "mem": Decimal(1)})
    with pytest.raises(InsufficientResources, match="no slot type cuda.device"):
        alloc.allocate("b", {"cpu": Decimal("0.5"), "cuda.device": Decimal(1)})
    alloc.allocate("b", {"cpu": Decimal("0.5"), "mem": Decimal(2**29), "cuda.device": Decimal(0)})
    alloc.release("a")
    assert alloc.used() == {"cpu": Decimal("0.5"), "mem": Decimal(2**29)}


def test_exit_code_from_listing_status() -> None:
    assert exit_code_from_status("Exited (137) 3 seconds ago") == 137
    assert exit_code_from_status("Up 2 minutes") is None


def test_agent_toml_kebab_case_and_sizes() -> None:
    cfg = AgentConfig.model_validate({
        "agent": {"id": "i-x", "rpc-listen-addr": "127.0.0.1:7001", "heartbeat-interval": 2},
        "resource": {"reserved-cpu": 1, "reserved-mem": "1g"},
    })
    assert cfg.agent.id == "i-x" and cfg.rpc_host_port == ("127.0.0.1", 7001)
    assert cfg.resource.reserved_mem == 2**30 and cfg.resource.reserved_cpu == 1
    assert cfg.agent.ipc_base_path == Path("/var/lib/bai/ipc")
    with pytest.raises(ValueError):
        AgentConfig.model_validate({"agent": {"no-such-key": 1}})


def test_container_section_defaults_and_limits() -> None:
    c = AgentConfig.model_validate({}).container
    assert (c.kernel_uid, c.kernel_gid, c.pids_limit) == (1000, 1000, 4096)
    assert (c.log_max_size, c.log_max_files, c.output_buffer_size) == (10 * 2**20, 3, 4 * 2**20)
    c = AgentConfig.model_validate({"container": {"kernel-uid": 2000, "kernel-gid": 2001, "pids-limit": 256,
                                                  "log-max-size": "1m", "log-max-files": 2,
                                                  "output-buffer-size": "64k"}}).container
    assert (c.kernel_uid, c.kernel_gid, c.pids_limit, c.log_max_size, c.output_buffer_size) == \
        (2000, 2001, 256, 2**20, 2**16)
    for bad in ({"kernel-uid": 0}, {"kernel-gid": 0}, {"pids-limit": 0}, {"log-max-files": 0}):
        with pytest.raises(ValueError):  # root in the container, or no limit at all, is refused
            AgentConfig.model_validate({"container": bad})


def test_get_logs_tail_is_bounded() -> None:
    req = GetLogsRequest.model_validate({"kernel_id": "k"})
    assert (req.tail_lines, req.max_bytes) == (1000, 2**20)
    for bad in ({"tail_lines": 0}, {"tail_lines": 10**6}, {"max_bytes": 2**30}):
        with pytest.raises(ValueError):
            GetLogsRequest.model_validate({"kernel_id": "k", **bad})


def test_execute_request_rules() -> None:
    assert ExecuteRequest.model_validate({"kernel_id": "k", "mode": "query", "run_id": None}).flush_timeout == 2.0
    with pytest.raises(ValueError):
        ExecuteRequest.model_validate({"kernel_id": "k", "mode": "continue", "run_id": None})
    with pytest.raises(ValueError):
        ExecuteRequest.model_validate({"kernel_id": "../x", "mode": "query"})
