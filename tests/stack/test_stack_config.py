"""The stack's configuration: defaults, and bad values refused with a message that names the key
before the program declares a single resource."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest

from stack import config
from tests.stack import mocks
from tests.stack.conftest import BASE


def _error(values: dict[str, Any]) -> str:
    with pytest.raises(config.ConfigError) as info:
        config.parse(values)
    return str(info.value)


def test_defaults() -> None:
    cfg = config.parse(BASE)
    assert (cfg.topology, cfg.services, cfg.agent_count) == ("multi-node", "self-hosted", 1)
    assert cfg.agent_instance_type == "g5.xlarge" and cfg.bastion and not cfg.install_on_up
    assert cfg.operator_cidrs == ["203.0.113.0/24"] and cfg.management_count == 1
    assert config.parse({**BASE, "topology": "ha", "services": "managed"}).management_count == 3


def test_lists_take_json_or_commas() -> None:
    a = config.parse({**BASE, "operatorCidrs": '["203.0.113.0/24", "198.51.100.7/32"]'})
    b = config.parse({**BASE, "operatorCidrs": "203.0.113.0/24, 198.51.100.7/32"})
    assert a.operator_cidrs == b.operator_cidrs == ["203.0.113.0/24", "198.51.100.7/32"]


@pytest.mark.parametrize(("values", "message"), [
    ({"agentInstanceType": "x9.large"},
     "bai:agentInstanceType: 'x9.large' is not an NVIDIA GPU instance type: family 'x9' is unknown"),
    ({"agentInstanceType": "m6i.large"},
     "family 'm6i' is general-purpose (set bai:cpuOnlyAgents true)"),
    ({"agentInstanceType": "g4ad.xlarge"}, "'g4ad.xlarge' is not an NVIDIA GPU instance type"),
    ({"managementInstanceType": "zz1.huge"}, "bai:managementInstanceType: unknown instance type family 'zz1'"),
    ({"agentCount": "0"}, "bai:agentCount: Input should be greater than or equal to 1"),
    ({"agentCount": "two"}, "bai:agentCount: Input should be a valid integer"),
    ({"operatorCidrs": "0.0.0.0/0"},
     "bai:operatorCidrs: 0.0.0.0/0 opens (nearly) everything; give the operator's own range"),
    ({"operatorCidrs": "::/0"}, "bai:operatorCidrs: ::/0 opens (nearly) everything"),
    ({"sshCidrs": "0.0.0.0/1"}, "bai:sshCidrs: 0.0.0.0/1 opens (nearly) everything"),
    ({"operatorCidrs": "203.0.113.5/24"}, "bai:operatorCidrs: '203.0.113.5/24' is not a CIDR"),
    ({"operatorCidrs": ""}, "bai:operatorCidrs: required"),
    ({"topology": "ha"}, "bai:services: topology ha needs managed services"),
    ({"topology": "ha", "services": "self-hosted"}, "topology ha needs managed services"),
    ({"topology": "all-in-one", "agentCount": "3"}, "bai:agentCount: all-in-one is one host"),
    ({"topology": "cluster"}, "bai:topology: Input should be 'all-in-one', 'multi-node' or 'ha'"),
    ({"vpcCidr": "8.8.0.0/16"}, "bai:vpcCidr: 8.8.0.0/16 must be a private IPv4 range"),
    ({"azCount": "1"}, "bai:azCount: Input should be greater than or equal to 2"),
    ({"sshPublicKey": ""}, "bai:sshPublicKey: required (or bai:keyName"),
    ({"installOnUp": "true"}, "bai:baiRepoUrl: required with installOnUp"),
    ({"dbPassword": "short"}, "bai:dbPassword: at least 16 characters"),
    ({"storageVolumePath": "../etc"}, "bai:storageVolumePath: an absolute path"),
    ({"agentcount": "2"}, "bai:agentcount: unknown configuration key (did you mean bai:agentCount?)"),
])
def test_bad_config_is_refused_with_the_key(values: dict[str, Any], message: str) -> None:
    assert message in _error({**BASE, **values})


def test_every_problem_at_once_and_secrets_never_echoed() -> None:
    text = _error({**BASE, "agentInstanceType": "x9.large", "topology": "ha",
                   "operatorCidrs": "0.0.0.0/0", "dbPassword": "oops@secret-value"})
    assert "agentInstanceType" in text and "bai:services" in text and "operatorCidrs" in text
    assert "oops@secret-value" not in text and "bai:dbPassword" in text


def test_a_bad_config_stops_the_program_before_any_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = mocks.Recorder()
    with mocks.own_loop():
        mocks.use(recorder)
        from stack import program

        pulumi.runtime.set_all_config({"bai:operatorCidrs": "0.0.0.0/0", "bai:agentCount": "0",
                                       "bai:sshPublicKey": "ssh-ed25519 AAAA op"})
        monkeypatch.delenv("PULUMI_CONFIG", raising=False)
        try:
            with pytest.raises(SystemExit) as info:
                program.main()
        finally:
            pulumi.runtime.set_all_config({})
    assert "bai stack: bad configuration" in str(info.value)
    assert "bai:agentCount" in str(info.value)
    assert recorder.resources == [] and recorder.calls == []


def test_the_program_reads_pulumi_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The keys `pulumi config set` stores reach the program (here through PULUMI_CONFIG, the
    environment the Pulumi engine hands a Python program)."""
    monkeypatch.setenv("PULUMI_CONFIG", '{"bai:operatorCidrs": "203.0.113.0/24", '
                       '"bai:keyName": "ops", "bai:topology": "all-in-one", "aws:region": "eu-west-1"}')
    pulumi.runtime.set_all_config({})
    cfg = config.load()
    assert cfg.topology == "all-in-one" and cfg.key_name == "ops"


def test_the_entry_point_runs_as_pulumi_runs_it_and_stops_on_bad_config() -> None:
    """``main: stack/`` in Pulumi.yaml: Pulumi runs the directory as a script. Without a
    Pulumi engine it gets as far as the config, which is the point: no key is set, so it
    stops there, naming the required keys, before any resource."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    assert "main: stack/" in (repo / "Pulumi.yaml").read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    r = subprocess.run([sys.executable, "stack/"], cwd=repo, capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 1, r.stderr
    assert "bai stack: bad configuration" in r.stderr
    assert "bai:operatorCidrs: required" in r.stderr and "bai:sshPublicKey: required" in r.stderr
