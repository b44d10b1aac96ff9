"""The docker role applied twice to a Docker-capable systemd test host (tests/fixtures/
testhosts.py) whose engine already runs a container: the first run writes daemon.json, reloads
dockerd (live-restore on) and then restarts it for the log settings, and the container keeps
running through that restart; the second run changes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.testhosts import KERNEL_IMAGES, bai_host_image, test_hosts  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def docker_host(test_hosts: Callable[..., dict[str, Any]]) -> tuple[Any, list[dict[str, bool]], str]:  # noqa: F811
    from installer.engine import Phase, run
    from roles.accelerators import accelerators
    from roles.docker import docker

    h = test_hosts(["dk"], install_bai=False, kernel_images=["dk"])["dk"]
    h.run(f"docker run -d --name keep --entrypoint sleep {KERNEL_IMAGES[0]} infinity", check=True, timeout=120)
    started = h.run("docker inspect -f '{{.State.StartedAt}}' keep", check=True).stdout.strip()
    runs = []
    for _ in range(2):
        result = run({h.target: {}}, [Phase("agents", {h.target: [docker, accelerators]})])
        if result.failed:
            bad = [op for op in result.ops if op.ok is False]
            pytest.fail("the docker role failed: " + "\n".join(f"{op.label}\n{op.error}" for op in bad))
        runs.append(result.changed_by_host(h.target))
    return h, runs, started


def test_daemon_json_and_restart_keep_the_running_container(docker_host: tuple[Any, list[dict[str, bool]], str]) -> None:
    h, (first, second), started = docker_host
    assert first["docker | Write /etc/docker/daemon.json (log limits, live-restore)"]
    assert first["docker | Reload dockerd (live-restore before any restart)"]
    assert first["docker | Restart docker.service on changed config"]
    config = json.loads(h.run("cat /etc/docker/daemon.json", check=True).stdout)
    assert config["live-restore"] is True and config["log-opts"] == {"max-size": "100m", "max-file": "3"}
    info = h.run("docker info --format '{{.LiveRestoreEnabled}} {{.LoggingDriver}}'", check=True).stdout.split()
    assert info == ["true", "json-file"]
    # the same container process, never restarted
    state = h.run("docker inspect -f '{{.State.Running}} {{.State.StartedAt}}' keep", check=True).stdout.split()
    assert state == ["true", started]
    assert [label for label, changed in second.items() if changed] == []
    assert "accelerators | no NVIDIA GPU found: CUDA not configured" in first
