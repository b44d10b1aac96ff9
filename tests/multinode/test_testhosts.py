"""The test hosts themselves: systemd and a Docker engine inside, bai installed from this
checkout, the kernel image loaded, the hosts reaching each other by name."""

from __future__ import annotations

from tests.fixtures.testhosts import KERNEL_IMAGES, TestHost


def test_hosts_run_docker_with_bai_and_kernel_image(test_hosts) -> None:  # type: ignore[no-untyped-def]
    hosts: dict[str, TestHost] = test_hosts(["th-a", "th-b"], kernel_images=["th-a"])
    a, b = hosts["th-a"], hosts["th-b"]
    assert a.network == b.network and a.address != b.address
    for h in (a, b):
        assert h.testinfra().service("docker").is_running
        assert h.run("systemctl is-active docker").stdout.strip() == "active"
        assert h.run("docker info --format '{{.Driver}}'").stdout.strip() == "overlay2"
        r = h.run("/opt/bai/venv/bin/bai-agent --help", check=True)
        assert "Usage" in r.stdout
    # the loaded image runs inside the host's own engine
    r = a.run(f"docker run --rm {KERNEL_IMAGES[0]} python3 -c 'print(1)'", check=True)
    assert r.stdout.strip() == "1"
    assert b.run(f"docker image inspect {KERNEL_IMAGES[0]}").returncode != 0
    # by short name, over the test network
    r = b.run("getent hosts th-a", check=True)
    assert r.stdout.split()[0] == a.address
