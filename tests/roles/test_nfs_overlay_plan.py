"""The shared-storage (nfs) and overlay (swarm) roles without hosts: where they run (off by
default; the serving / swarm-manager host in the manager phase, before any agent mounts or
joins), what they write (exports, fstab lines, the sshfs key pair and its restricted
authorisation), and the errors of a half-configured inventory. The multi-node scenario
(tests/multinode/) applies both for real."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from installer import engine
from installer import inventory as inventory_mod
from roles import nfs, overlay
from roles import settings as settings_mod

REPO = Path(__file__).resolve().parents[2]

INVENTORY = """
data = {"storage_proxy": {"volume_path": "/mnt/vfroot/local"},
        "nfs": {"enabled": True, "server": "10.0.0.10", "allow": ["10.0.0.0/24"]},
        "overlay": {"enabled": True}}
halfstack = [("mgr1", {})]
manager = [("mgr1", {"nfs": {"serve": True},
                     "overlay": {"swarm_manager": True, "advertise_addr": "10.0.0.10"}})]
agents = [("gpu1", {}), ("gpu2", {})]
storage = [("st1", {"overlay": {"enabled": False}})]
"""


def _phases(tmp_path: Path, text: str) -> dict[str, dict[str, list[str]]]:
    path = tmp_path / "inv.py"
    path.write_text(text)
    return {p.name: {h: [engine.role_name(r) for r in roles] for h, roles in p.roles.items()}
            for p in engine.phases_for(inventory_mod.load(path))}


def test_off_by_default() -> None:
    phases = engine.phases_for(inventory_mod.load(REPO / "inventories" / "local.py"))
    names = {engine.role_name(r) for p in phases for roles in p.roles.values() for r in roles}
    assert "nfs" not in names and "overlay" not in names


def test_server_and_swarm_manager_come_before_the_agents(tmp_path: Path) -> None:
    phases = _phases(tmp_path, INVENTORY)
    manager = phases["manager"]["mgr1"]
    assert manager.index("nfs") < manager.index("overlay")
    for agent in ("gpu1", "gpu2"):
        roles = phases["agents"][agent]
        # mounted and joined before the agent starts and bind-mounts folders from the volume
        assert roles.index("nfs") < roles.index("overlay") < roles.index("bai-agent")
    # a storage-only host mounts before its proxy starts, and joins no swarm
    st1 = phases["storage"]["st1"]
    assert st1.index("nfs") < st1.index("storage-proxy") and "overlay" not in st1


def test_exports_and_fstab() -> None:
    s = settings_mod.build({"storage_proxy": {"volume_path": "/srv/vf"},
                            "nfs": {"enabled": True, "server": "10.0.0.10",
                                    "allow": ["10.0.0.0/24", "10.0.1.0/24"]}}, {})
    assert nfs.exports_text(s).splitlines()[1] == (
        "/srv/vf 10.0.0.0/24(rw,sync,no_subtree_check,no_root_squash) "
        "10.0.1.0/24(rw,sync,no_subtree_check,no_root_squash)")
    assert nfs.fstab_line(s) == "10.0.0.10:/srv/vf /srv/vf nfs rw,hard,noatime,_netdev 0 0"
    s = settings_mod.build({"nfs": {"enabled": True, "server": "m", "transport": "sshfs",
                                    "export": "/export/vf"}}, {"shared_storage_key": "k"})
    line = nfs.fstab_line(s).split()
    assert line[:3] == ["root@m:/export/vf", s.storage_proxy.volume_path, "fuse.sshfs"]
    assert "allow_other" in line[3] and "IdentityFile=/etc/backend.ai/shared-storage.key" in line[3]


def test_sshfs_key_pair_is_stable_valid_and_restricted(tmp_path: Path) -> None:
    private, public = nfs.keypair("secret-1")
    assert nfs.keypair("secret-1") == (private, public)  # reruns write identical bytes
    assert nfs.keypair("secret-2")[1] != public
    key = tmp_path / "key"
    key.write_text(private)
    key.chmod(0o600)
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True,
                             text=True, check=True).stdout.split()
    assert derived[:2] == public.split()[:2]
    s = settings_mod.build({"nfs": {"enabled": True, "serve": True, "transport": "sshfs",
                                    "allow": ["10.0.0.0/24"]}}, {"shared_storage_key": "secret-1"})
    line = nfs.authorized_line(s)
    assert line.startswith('from="10.0.0.0/24",restrict,command="/usr/lib/openssh/sftp-server" ')
    assert line.endswith(public)


def test_the_key_is_a_generated_secret_not_inventory_data() -> None:
    assert "shared_storage_key" in settings_mod.generate_secrets({})
    problems = settings_mod.check_host_data({"nfs": {"key": "mine"}})
    assert problems and problems[0].startswith("nfs.key: a generated secret")


def test_bad_values_are_named() -> None:
    problems = settings_mod.check_host_data({"nfs": {"transport": "smb"}, "overlay": {"netwrk": "x"}})
    assert any(p.startswith("nfs.transport:") for p in problems)
    assert any(p.startswith("overlay.netwrk: unknown key") for p in problems)


def test_ports() -> None:
    server = settings_mod.build({"nfs": {"enabled": True, "serve": True}}, {})
    assert nfs.ports(server) == [] and [s.unit for s in nfs.services(server)] == ["nfs-server.service"]
    sftp = settings_mod.build({"nfs": {"enabled": True, "serve": True, "transport": "sshfs"}}, {})
    assert [p.port for p in nfs.ports(sftp)] == [22]
    assert [s.unit for s in nfs.services(sftp)] == ["ssh.service"]  # preflight: port 22 is ours
    client = settings_mod.build({"nfs": {"enabled": True, "server": "x"}}, {})
    assert nfs.ports(client) == [] and nfs.services(client) == []
    mgr = settings_mod.build({"overlay": {"enabled": True, "swarm_manager": True,
                                          "advertise_addr": "10.0.0.10"}}, {})
    assert [(p.port, p.protocol) for p in overlay.ports(mgr)] == [
        (2377, "tcp"), (7946, "tcp"), (7946, "udp"), (4789, "udp")]
    assert overlay.manager_addr(mgr) == "10.0.0.10:2377"
    assert [s.unit for s in overlay.ROLE.services(mgr)] == ["docker.service"]
    assert overlay.etcd_key(mgr, "swarm-worker/token") == "/sorna/local/sgroup/default/swarm-worker/token"


def test_half_configured_hosts_are_refused_before_any_operation() -> None:
    # each deploy calls its check first: nothing is prepared, let alone run, on such a host
    half = settings_mod.build({"overlay": {"enabled": True, "swarm_manager": True}}, {})
    with pytest.raises(ValueError, match="overlay.advertise_addr"):
        overlay.check(half)
    with pytest.raises(ValueError, match="nfs.server"):
        nfs.check(settings_mod.build({"nfs": {"enabled": True}}, {}))
    nfs.check(settings_mod.build({"nfs": {"enabled": True, "serve": True}}, {}))
    if "docker" in settings_mod.Settings.model_fields:  # (the docker section: roles/docker.py)
        with pytest.raises(ValueError, match="docker.live_restore"):
            overlay.check(settings_mod.build({"overlay": {"enabled": True}}, {}))
        overlay.check(settings_mod.build({"overlay": {"enabled": True},
                                          "docker": {"live_restore": False}}, {}))
    else:
        overlay.check(settings_mod.build({"overlay": {"enabled": True}}, {}))
