"""The container registry off loopback, for real, on two Docker-capable test hosts
(tests/fixtures/testhosts.py) on a private network: ``reg`` runs etcd and the registry role
(TLS with the installation's CA, htpasswd credentials), ``agent`` runs the kernel image role
with the registry on (it has this machine's python kernel image pre-loaded, so it builds
nothing: it trusts the CA, tags the image and pushes it). Both roles are applied twice through
the engine; the second run must change nothing. Then: TLS is verified from the agent (system
store and Docker's certs.d, and refused with another CA), anonymous and wrong-password access
is refused, the pushed image is pulled on the other host through the agent's own pull code with
the credentials the manager would hand out (etcd), and the manager's registry client lists it
over TLS with the CA (and refuses without it, with a clear error)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bai.common.docker_registry import RegistryClient, RegistryError
from installer.engine import RunResult
from roles.settings import Settings
from tests.fixtures.testhosts import (  # noqa: F401 (bai_host_image: a fixture)
    TestHost,
    bai_host_image,
    build_halfstack_image,
    kernel_seed,
    remove_hosts,
    start_hosts,
)

LOCAL_IMAGE = "bai.local/stable/python:3.11-debian12"


@dataclass
class Cluster:
    reg: TestHost
    agent: TestHost
    runs: list[RunResult]
    settings: Settings  # the registry host's (with the generated secrets)

    @property
    def hostname(self) -> str:
        return f"{self.reg.address}:5000"

    @property
    def ref(self) -> str:
        return f"{self.hostname}/stable/python:3.11-debian12"


@pytest.fixture(scope="module")
def cluster(bai_host_image: str) -> Iterator[Cluster]:  # noqa: F811 (the fixture imported above)
    from installer.engine import Phase, run
    from roles.etcd import etcd
    from roles.kernel_image import kernel_image
    from roles.registry import registry

    started: list[str] = []
    try:
        t0 = time.monotonic()
        seed = kernel_seed(bai_host_image)
        # etcd's, the registry's and curl's packages pre-installed (apt is not this test's subject)
        hosts = start_hosts(["reg", "agent"], image=build_halfstack_image(bai_host_image),
                            kernel_seed_volume=seed,
                            kernel_images=["agent"], started=started)
        reg, agent = hosts["reg"], hosts["agent"]
        print(f"hosts up: {time.monotonic() - t0:.1f}s")
        shared: dict[str, Any] = {"registry": {"enabled": True, "listen": reg.address},
                                  "kernel_image": {"jupyter_image": ""}}
        targets = {reg.target: shared, agent.target: {**shared, "agent": {"id": "i-agent"}}}
        phases = [Phase("manager", {reg.target: [etcd, registry]}),
                  Phase("agents", {agent.target: [kernel_image]})]
        runs = []
        for _ in range(2):
            t0 = time.monotonic()
            result = run(targets, phases)
            print(f"run {len(runs) + 1}: {time.monotonic() - t0:.1f}s")
            if result.failed:
                bad = [op for op in result.ops if op.ok is False]
                pytest.fail("applying the registry roles failed: " + "\n".join(
                    f"{op.host}: {op.label}\n{op.error}" for op in bad))
            runs.append(result)
        yield Cluster(reg, agent, runs, runs[-1].settings[reg.target])
    finally:
        remove_hosts(started)


def test_first_run_sets_up_tls_credentials_and_the_push_and_the_second_changes_nothing(cluster: Cluster) -> None:
    first = {op.label for op in cluster.runs[0].changed}
    for label in ("registry | Write the registry certificate", "registry | Write the registry key",
                  "registry | Registry credentials (/etc/docker/registry/htpasswd, bcrypt)",
                  "registry | Trust the registry CA (system store)",
                  f"registry | etcd key config/docker/registry/{cluster.reg.address}%3A5000/password",
                  "kernel_image | Trust the registry CA (Docker)",
                  "kernel_image | Registry credentials for docker push",
                  f"kernel_image | Push {cluster.ref}"):
        assert label in first, (label, sorted(first))
    assert not any("Build kernel image" in label for label in first)  # pre-loaded: up to date
    assert [op.label for op in cluster.runs[1].changed] == []


def test_tls_is_verified_from_the_agent_and_anonymous_access_refused(cluster: Cluster) -> None:
    a, url = cluster.agent, f"https://{cluster.hostname}/v2/"
    code = "curl -sS -o /dev/null -w '%{http_code}' --max-time 10"
    # the system store (update-ca-certificates) and Docker's per-registry CA both verify it
    r = a.run(f"{code} {url}; echo; {code} --cacert /etc/docker/certs.d/{cluster.hostname}/ca.crt "
              f"{url}_catalog")
    assert r.stdout.split() == ["401", "401"], r.stdout + r.stderr
    # another CA does not (and no CA directory: curl reads /etc/ssl/certs besides --cacert)
    r = a.run(f"{code} --cacert /usr/share/ca-certificates/mozilla/ISRG_Root_X1.crt "
              f"--capath \"$(mktemp -d)\" {url}")
    assert r.returncode == 60 and "certificate" in r.stderr, r.stdout + r.stderr
    # anonymous and wrong-password pulls are refused by the registry
    r = a.run(f"d=$(mktemp -d); DOCKER_CONFIG=$d docker pull {cluster.ref}")
    assert r.returncode != 0 and "no basic auth credentials" in r.stderr, r.stdout + r.stderr
    r = a.run(f"d=$(mktemp -d); echo wrong | DOCKER_CONFIG=$d docker login -u bai --password-stdin "
              f"{cluster.hostname}")
    assert r.returncode != 0 and "unauthorized" in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
    # and the right credentials, over TLS, from the agent's Docker
    r = a.run(f"d=$(mktemp -d); DOCKER_CONFIG=$d docker login -u bai --password-stdin {cluster.hostname} "
              f">/dev/null && DOCKER_CONFIG=$d docker pull -q {cluster.ref}",
              input=cluster.settings.registry.password.encode())
    assert r.returncode == 0 and r.stdout.strip() == cluster.ref, r.stdout + r.stderr
    # no insecure-registries anywhere
    for h in (cluster.reg, cluster.agent):
        assert "insecure" not in h.run("cat /etc/docker/daemon.json 2>/dev/null").stdout


def test_credentials_and_keys_are_private_and_registered(cluster: Cluster) -> None:
    reg = cluster.reg
    r = reg.run("stat -c '%n %a %U' /etc/docker/registry/tls/server.key /etc/docker/registry/htpasswd "
                "/etc/backend.ai/secrets.toml")
    assert r.stdout.split("\n")[:3] == ["/etc/docker/registry/tls/server.key 600 docker-registry",
                                         "/etc/docker/registry/htpasswd 600 docker-registry",
                                         "/etc/backend.ai/secrets.toml 600 root"], r.stdout + r.stderr
    r = cluster.agent.run("stat -c '%a %U' /etc/backend.ai/registry-docker/config.json")
    assert r.stdout.strip() == "600 root"
    # it listens on the private address only
    assert [addr for addr, port in _listeners(reg) if port == 5000] == [reg.address]
    # etcd: what the manager reads and hands to agents with an image of this registry
    r = reg.run("ETCDCTL_API=3 etcdctl get --prefix /sorna/local/config/docker/registry/")
    lines = r.stdout.split("\n")
    found = dict(zip(lines[0::2], lines[1::2], strict=False))
    key = f"/sorna/local/config/docker/registry/{cluster.reg.address}%3A5000"
    assert found == {key: f"https://{cluster.hostname}", f"{key}/type": "docker",
                     f"{key}/project": "stable", f"{key}/username": "bai",
                     f"{key}/password": cluster.settings.registry.password}
    assert len(cluster.settings.registry.password) >= 32


def _listeners(h: TestHost) -> list[tuple[str, int]]:
    found = []
    for line in h.run("ss -Hltn").stdout.splitlines():
        addr, _, port = line.split()[3].rpartition(":")
        found.append((addr.strip("[]"), int(port)))
    return found


PULL = """
import asyncio, sys, tomllib
import aiodocker
from bai.agent.docker import DockerKernels

async def main() -> None:
    password = tomllib.load(open("/etc/backend.ai/secrets.toml", "rb"))["registry_password"]
    seen = []
    async def progress(done: int, total: int) -> None:
        seen.append((done, total))
    async with aiodocker.Docker() as docker:
        await DockerKernels(docker, "test").pull(sys.argv[1], {"username": "bai", "password": password}, progress)
    print("pulled", len(seen) > 0)

asyncio.run(main())
"""


def test_the_pushed_image_is_pulled_on_the_other_host_by_the_agents_code(cluster: Cluster) -> None:
    """The registry host pulls what the agent pushed, with the agent's pull (the credentials as
    the manager sends them: etcd's username and password), over TLS (Docker's certs.d)."""
    reg = cluster.reg
    assert reg.run(f"docker image inspect {cluster.ref}").returncode != 0
    reg.run("cat > /var/tmp/pull.py", input=PULL.encode(), check=True)
    r = reg.run(f"/opt/bai/venv/bin/python /var/tmp/pull.py {cluster.ref}", timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "pulled True", r.stdout + r.stderr
    ids = [h.run(f"docker image inspect -f '{{{{.Id}}}}' {cluster.ref}").stdout.strip()
           for h in (reg, cluster.agent)]
    assert ids[0] == ids[1] and ids[0].startswith("sha256:")


async def _scan(client: RegistryClient) -> tuple[list[str], list[str], dict[str, str]]:
    async with client as reg:
        repos = await reg.repositories()
        tags = await reg.tags("stable/python")
        (image,) = await reg.images("stable/python", tags[0])
        return repos, tags, image.labels


def test_the_managers_registry_client_verifies_the_ca(cluster: Cluster, tmp_path: Path) -> None:
    from roles import registry

    ca = tmp_path / "ca.crt"
    ca.write_text(registry.ca_pem(cluster.settings))
    url, pw = f"https://{cluster.hostname}", cluster.settings.registry.password
    repos, tags, labels = asyncio.run(_scan(RegistryClient(url, "bai", pw, ca_file=str(ca))))
    assert repos == ["stable/python"] and tags == ["3.11-debian12"]
    assert "ai.backend.kernelspec" in labels
    with pytest.raises(RegistryError, match="TLS certificate is not trusted"):
        asyncio.run(_scan(RegistryClient(url, "bai", pw)))  # this machine does not trust the CA
    with pytest.raises(RegistryError, match="refused our credentials"):
        asyncio.run(_scan(RegistryClient(url, "bai", "wrong", ca_file=str(ca))))
    # on the registry's host (the manager's), the system store trusts it (update-ca-certificates)
    script = ("import asyncio, sys, tomllib\nfrom bai.common.docker_registry import RegistryClient\n"
              "pw = tomllib.load(open('/etc/backend.ai/secrets.toml', 'rb'))['registry_password']\n"
              "async def main():\n    async with RegistryClient(sys.argv[1], 'bai', pw) as reg:\n"
              "        print(await reg.repositories())\nasyncio.run(main())\n")
    cluster.reg.run("cat > /var/tmp/scan.py", input=script.encode(), check=True)
    r = cluster.reg.run(f"/opt/bai/venv/bin/python /var/tmp/scan.py {url}")
    assert r.returncode == 0 and json.loads(r.stdout.replace("'", '"')) == ["stable/python"], r.stdout + r.stderr
