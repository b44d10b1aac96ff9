"""molecule verify (testinfra) for the multi-node scenario: the management host runs the
control plane and sees both agents; each agent host runs its agent and Docker engine."""

from __future__ import annotations

from typing import Any


def _name(host: Any) -> str:
    return str(host.backend.get_hostname())


def test_services(host: Any) -> None:
    if _name(host).endswith("mgmt"):
        units = ("postgresql@15-main", "redis-server", "etcd", "bai-manager",
                 "bai-storage-proxy", "bai-app-proxy")
    else:
        units = ("docker", "bai-agent")
    for unit in units:
        assert host.service(unit).is_running, unit


def test_both_agents_registered(host: Any) -> None:
    if not _name(host).endswith("mgmt"):
        return
    out = host.check_output(". /etc/backend.ai/client.env && backend.ai admin agent list")
    assert "i-ag1" in out and "i-ag2" in out
