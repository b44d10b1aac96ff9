"""The optional registry role: left out unless the host data asks for it, and what it would do
when asked (a dry-run plan against this machine: facts only, nothing is changed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bai.manager.store import registries as registry_store
from installer import engine
from installer import inventory as inventory_mod
from roles import registry
from roles import settings as settings_mod
from roles.settings import Settings

REPO = Path(__file__).resolve().parents[2]
INVENTORY = '''halfstack = agents = ["@local"]
manager = [("@local", {"registry": {"enabled": True}})]
'''


def _names(phase: engine.Phase) -> dict[str, list[str]]:
    return {host: [engine.role_name(r) for r in roles] for host, roles in phase.roles.items()}


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inv") / "with_registry.py"
    path.write_text(INVENTORY)
    return path


def test_the_role_runs_only_where_enabled(inventory: Path) -> None:
    default = inventory_mod.load(REPO / "inventories" / "local.py")
    assert all("registry" not in roles for p in engine.phases_for(default) for roles in _names(p).values())
    enabled = {p.name: _names(p) for p in engine.phases_for(inventory_mod.load(inventory))}
    assert enabled["manager"] == {"@local": ["bai-manager", "registry", "app-proxy", "webserver"]}


def test_config_and_etcd_entries_match_what_the_manager_reads() -> None:
    s = Settings()
    text = registry.config_text(s)
    assert "  addr: 127.0.0.1:5000\n" in text and "rootdirectory: /var/lib/docker-registry\n" in text
    assert "auth:" not in text
    entries = dict(registry.etcd_entries(s))
    assert entries == {"config/docker/registry/127.0.0.1%3A5000": "http://127.0.0.1:5000",
                       "config/docker/registry/127.0.0.1%3A5000/type": "docker",
                       "config/docker/registry/127.0.0.1%3A5000/project": "stable"}
    # the manager's store reads exactly these keys (URL under the registry's own key)
    flat = {k.removeprefix(registry_store._key("127.0.0.1:5000")).lstrip("/"): v for k, v in entries.items()}
    found = registry_store._settings("127.0.0.1:5000", flat)
    assert found == registry_store.RegistrySettings(hostname="127.0.0.1:5000", url="http://127.0.0.1:5000",
                                                    project=["stable"])
    svc = registry.service(s)
    assert svc.unit == "docker-registry.service" and svc.user == "docker-registry"
    assert svc.command == "/usr/bin/docker-registry serve /etc/docker/registry/config.yml"


def test_dry_run_plan(inventory: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "installer.cli", "install", "--inventory", str(inventory), "--dry-run", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    plan = json.loads(r.stdout)["plan"]
    labels = [op["label"] for op in plan if op["role"] == "registry"]
    for expected in ("registry | Install docker-registry", "registry | Registry storage",
                     "registry | Write /etc/docker/registry/config.yml", "registry | Wait for registry",
                     "registry | etcd key config/docker/registry/127.0.0.1%3A5000",
                     "registry | etcd key config/docker/registry/127.0.0.1%3A5000/type",
                     "registry | etcd key config/docker/registry/127.0.0.1%3A5000/project",
                     "registry | Allow the registry in the default domain"):
        assert expected in labels, (expected, labels)
    # after the manager role (bai-manager and etcd are there), before the agents
    roles = [op["role"] for op in plan]
    assert max(i for i, role in enumerate(roles) if role == "bai-manager") < roles.index("registry")
    assert roles.index("registry") < roles.index("bai-agent")


def _tls_settings(**registry_data: object) -> Settings:
    from roles.settings import build

    return build({"registry": {"enabled": True, "listen": "10.1.2.3", **registry_data}},
                 {"registry_ca_seed": "seed-1", "registry_password": "pw-1"})


def test_off_loopback_it_serves_tls_with_credentials() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

    s = _tls_settings()
    assert registry.tls_enabled(s) and registry.hostname(s) == "10.1.2.3:5000"
    text = registry.config_text(s)
    assert "  addr: 10.1.2.3:5000\n" in text
    assert f"  tls:\n    certificate: {registry.SERVER_CERT}\n    key: {registry.SERVER_KEY}\n" in text
    assert f"auth:\n  htpasswd:\n    realm: bai-registry\n    path: {registry.HTPASSWD}\n" in text
    assert dict(registry.etcd_entries(s)) == {
        "config/docker/registry/10.1.2.3%3A5000": "https://10.1.2.3:5000",
        "config/docker/registry/10.1.2.3%3A5000/type": "docker",
        "config/docker/registry/10.1.2.3%3A5000/project": "stable",
        "config/docker/registry/10.1.2.3%3A5000/username": "bai"}  # (the password: piped from the secrets file)
    ca = x509.load_pem_x509_certificate(registry.ca_pem(s).encode())
    cert = x509.load_pem_x509_certificate(registry.server_cert_pem(s).encode())
    key = load_pem_private_key(registry.server_key_pem(s).encode(), None)
    # the server certificate: for the advertised address, signed by the CA, with its key
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    cert.verify_directly_issued_by(ca)
    assert key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw) == \
        cert.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # derived from the seed: a re-run writes the same bytes; another seed makes another CA
    assert registry.ca_pem(_tls_settings()) == registry.ca_pem(s)
    assert registry.server_cert_pem(_tls_settings()) == registry.server_cert_pem(s)
    other = _tls_settings(advertised_host="registry.example")
    assert registry.ca_pem(other) == registry.ca_pem(s)
    dns = x509.load_pem_x509_certificate(registry.server_cert_pem(other).encode())
    assert dns.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["registry.example"]
    from roles.settings import build
    reseeded = build({"registry": {"enabled": True, "listen": "10.1.2.3"}}, {"registry_ca_seed": "seed-2"})
    assert registry.ca_pem(reseeded) != registry.ca_pem(s)
    # loopback stays plain HTTP without credentials unless asked
    assert not registry.tls_enabled(Settings()) and registry.tls_enabled(
        build({"registry": {"tls": True}}, {}))


def test_a_wildcard_listen_needs_the_advertised_name() -> None:
    from roles.settings import check_host_data

    problems = check_host_data({"registry": {"enabled": True, "listen": "0.0.0.0"}})
    assert len(problems) == 1 and "registry.advertised_host is required" in problems[0], problems
    assert check_host_data({"registry": {"enabled": True, "listen": "0.0.0.0",
                                         "advertised_host": "reg.example"}}) == []
    s = _tls_settings(listen="0.0.0.0", advertised_host="reg.example")
    assert registry.hostname(s) == "reg.example:5000" and "  addr: 0.0.0.0:5000\n" in registry.config_text(s)
    assert "--resolve reg.example:5000:127.0.0.1 https://reg.example:5000/v2/" in registry.service(s).ready


def test_kernel_images_are_pushed_by_the_builder_only() -> None:
    from roles import kernel_image
    from roles.settings import build

    s = _tls_settings(builder="i-gpu1")
    assert kernel_image.registry_ref(s, "bai.local/stable/python:3.11-debian12") == \
        "10.1.2.3:5000/stable/python:3.11-debian12"
    assert not kernel_image.is_builder(s)
    gpu1 = build({"registry": {"enabled": True, "listen": "10.1.2.3", "builder": "i-gpu1"},
                  "agent": {"id": "i-gpu1"}}, {"registry_ca_seed": "x", "registry_password": "pw"})
    assert kernel_image.is_builder(gpu1) and kernel_image.is_builder(Settings())
    doc = json.loads(kernel_image.docker_config_text(gpu1))
    assert doc == {"auths": {"10.1.2.3:5000": {"auth": "YmFpOnB3"}}}  # base64("bai:pw")


def test_the_multi_node_example_documents_the_optional_roles(tmp_path: Path) -> None:
    """inventories/multi-node.py writes out the nfs, overlay and registry sections, off: loading
    it validates them; the same file with them on plans each role where it belongs."""
    path = REPO / "inventories" / "multi-node.py"
    inv = inventory_mod.load(path)  # (validates every host's data: no SSH)
    for section in ("nfs", "overlay", "registry"):
        assert all(inv.data[h][section]["enabled"] is False for h in inv.hosts), section
    assert not any(r in ("nfs", "overlay", "registry") for p in engine.phases_for(inv)
                   for roles in _names(p).values() for r in roles)
    on = tmp_path / "multi-node-on.py"
    on.write_text(path.read_text().replace('"enabled": False', '"enabled": True'))
    phases = {p.name: _names(p) for p in engine.phases_for(inventory_mod.load(on))}
    assert {"registry", "nfs", "overlay"} <= set(phases["manager"]["mgr1"])
    assert {"nfs", "overlay", "kernel_image"} <= set(phases["agents"]["gpu1"])
    gpu1, gpu2 = (settings_mod.build(inventory_mod.load(on).data[h], {}) for h in ("gpu1", "gpu2"))
    from roles import kernel_image
    assert kernel_image.is_builder(gpu1) and not kernel_image.is_builder(gpu2)
    assert registry.hostname(gpu2) == "10.0.0.10:5000" and registry.tls_enabled(gpu2)
