"""molecule verify (testinfra) for the all-in-one scenario: every service up, and a session
runs code through the installed CLI."""

from __future__ import annotations

from typing import Any

UNITS = ("postgresql@15-main", "redis-server", "etcd", "docker", "bai-manager", "bai-agent",
         "bai-storage-proxy", "bai-app-proxy")


def test_services_running_and_enabled(host: Any) -> None:
    for unit in UNITS:
        svc = host.service(unit)
        assert svc.is_running, unit
        assert svc.is_enabled, unit


def test_manager_answers_on_loopback_only(host: Any) -> None:
    assert host.socket("tcp://127.0.0.1:8081").is_listening
    assert not host.socket("tcp://0.0.0.0:8081").is_listening


def test_a_session_runs_code(host: Any) -> None:
    out = host.check_output(". /etc/backend.ai/client.env && "
                            "backend.ai run --rm -c 'print(6*7)' python")
    assert out.strip() == "42"
