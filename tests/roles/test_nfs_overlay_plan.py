"""The shared-storage (nfs) and overlay (swarm) roles without hosts: where they run (off by
default; the serving / swarm-manager host in the manager phase, before any agent mounts or
joins), what they write (exports, fstab lines, the sshfs key pair and its restricted
authorisation), and the errors of a half-configured inventory. The multi-node scenario
(tests/multinode/) applies both for real."""

from __future__ import annotations

import json
import re
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


# -- HA managers in the swarm, overlay MTU, address pools, the agent's Redis stamp -----------------

HA_INVENTORY = """
data = {"overlay": {"enabled": True}, "docker": {"live_restore": False}}
halfstack = [("db1", {})]
manager = [("mgr1", {"overlay": {"swarm_manager": True, "advertise_addr": "10.0.0.10"}}),
           ("mgr2", {"overlay": {"advertise_addr": "10.0.0.11"}})]
agents = [("gpu1", {}), ("mgr2", {})]
"""


def test_every_manager_group_host_is_a_swarm_manager(tmp_path: Path) -> None:
    phases = _phases(tmp_path, HA_INVENTORY)
    # both managers join in the manager phase (mgr2 also an agent: still a manager), before agents
    assert "overlay" in phases["manager"]["mgr1"] and "overlay" in phases["manager"]["mgr2"]
    assert "overlay" in phases["agents"]["gpu1"] and "overlay" not in phases["agents"]["mgr2"]
    inv = inventory_mod.load(tmp_path / "inv.py")
    kinds = {h: overlay.member_kind(settings_mod.build(inv.data[h], {}), (group,))
             for group, hosts in (("manager", ["mgr1", "mgr2"]), ("agents", ["gpu1"])) for h in hosts}
    assert kinds == {"mgr1": "init", "mgr2": "manager", "gpu1": "worker"}


def test_the_engine_names_the_phase_group_to_the_deploys() -> None:
    from installer import pyinfra_driver

    s = pyinfra_driver.Session([("mgr2", {}), ("gpu1", {})], False, {"manager": ["mgr2"]})
    assert "manager" in s.state.inventory.get_host("mgr2").groups
    assert "manager" not in s.state.inventory.get_host("gpu1").groups


def test_a_joining_manager_needs_its_address() -> None:
    s = settings_mod.build({"overlay": {"enabled": True}, "docker": {"live_restore": False}}, {})
    overlay.check(s, "worker")  # a worker may let Docker pick its address
    with pytest.raises(ValueError, match="overlay.advertise_addr: a manager-group host"):
        overlay.check(s, "manager")


def test_the_manager_token_never_reaches_a_command_line() -> None:
    s = settings_mod.build({"overlay": {"enabled": True, "advertise_addr": "10.0.0.11"},
                            "docker": {"live_restore": False}}, {})
    cmd = overlay.join_as_manager_command(s, 90)
    assert subprocess.run(["sh", "-n", "-c", cmd], capture_output=True).returncode == 0
    assert "--token" not in cmd and "docker swarm join" not in cmd
    # printf (a builtin) pipes the body, curl reads it from stdin
    assert "--data-binary @- http://localhost/swarm/join" in cmd and "--unix-socket /var/run/docker.sock" in cmd
    assert "/sorna/local/sgroup/default/swarm-manager/token" in cmd
    # the body it sends: listen, advertise, remote address and token, as JSON
    printf = re.search(r"printf .*?\"\$token\"", cmd)
    assert printf is not None
    body = subprocess.run(["sh", "-c", printf.group(0)], capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", "addr": "10.0.0.10:2377", "token": "SWMTKN-1-x"}).stdout
    assert json.loads(body) == {"ListenAddr": "10.0.0.11:2377", "AdvertiseAddr": "10.0.0.11",
                                "RemoteAddrs": ["10.0.0.10:2377"], "JoinToken": "SWMTKN-1-x"}
    assert "end=$(( $(date +%s) + 90 ))" in cmd  # waits for the initialising host, bounded


def _ensure_commands(fn: object, s: settings_mod.Settings) -> list[tuple[str, str, list[str]]]:
    """(name, check, commands) of every _ops.ensure a role step prepares (pyinfra bypassed)."""
    seen: list[tuple[str, str, list[str]]] = []

    def fake_ensure(**kwargs: object) -> None:
        seen.append((str(kwargs["name"]), str(kwargs["check"]), list(kwargs["commands"])))  # type: ignore[call-overload]

    original = overlay._ops.ensure
    overlay._ops.ensure = fake_ensure  # type: ignore[assignment]
    try:
        fn(s)  # type: ignore[operator]
    finally:
        overlay._ops.ensure = original  # type: ignore[assignment]
    return seen


def test_the_initialising_host_publishes_both_tokens_and_the_mtu() -> None:
    s = settings_mod.build({"overlay": {"enabled": True, "swarm_manager": True, "advertise_addr": "10.0.0.10",
                                        "mtu": 1450}, "docker": {"live_restore": False}}, {})
    ops = {name: (check, cmds) for name, check, cmds in _ensure_commands(overlay._swarm_init, s)}
    for kind, name in (("worker", "swarm-worker/token"), ("manager", "swarm-manager/token")):
        check, (cmd,) = ops[f"etcd key {name}"]
        assert cmd.startswith(f"docker swarm join-token -q {kind} | tr -d ")  # piped to etcdctl
        assert f"put /sorna/local/sgroup/default/{name} >/dev/null" in cmd
    check, (cmd,) = ops["etcd key config/network/overlay/mtu"]
    assert cmd.endswith("put /sorna/local/config/network/overlay/mtu -- 1450 >/dev/null")
    assert check.endswith("= 1450 ]")  # written only when etcd holds another value
    assert "etcd key config/network/overlay/enabled" in ops
    # a worker where a manager is wanted is refused, saying what to do
    check, (cmd,) = _ensure_commands(overlay._not_a_worker, s)[0][1:]
    assert check.endswith('!= "active false" ]') and "docker node promote" in cmd and "exit 1" in cmd


def test_overlay_mtu_bounds_are_named() -> None:
    assert settings_mod.build({}, {}).overlay.mtu == 1500
    assert any(p.startswith("overlay.mtu:") for p in settings_mod.check_host_data({"overlay": {"mtu": 9001}}))
    assert any(p.startswith("overlay.mtu:") for p in settings_mod.check_host_data({"overlay": {"mtu": 575}}))


def test_address_pools_go_into_daemon_json_only_when_set() -> None:
    from roles import docker

    plain = settings_mod.build({}, {})
    assert "default-address-pools" not in docker.daemon_config(plain, None)
    # a pool set by hand stays when the inventory sets none
    hand = '{"default-address-pools": [{"base": "172.80.0.0/16", "size": 24}]}'
    assert docker.daemon_config(plain, hand)["default-address-pools"] == [{"base": "172.80.0.0/16", "size": 24}]
    s = settings_mod.build({"docker": {"address_pools": [{"base": "10.201.0.0/16", "size": 24},
                                                         {"base": "10.202.0.0/16", "size": 26}]}}, {})
    wanted = docker.daemon_config(s, None)
    assert wanted["default-address-pools"] == [{"base": "10.201.0.0/16", "size": 24},
                                               {"base": "10.202.0.0/16", "size": 26}]
    before = docker.daemon_config(plain, None)
    assert docker.needs_restart(before, wanted)  # not reloadable: dockerd restarts
    text = docker.daemon_json_text(wanted)
    assert docker.daemon_json_text(docker.daemon_config(s, text)) == text  # a rerun: same bytes
    assert not docker.needs_restart(wanted, docker.daemon_config(s, text))


def test_bad_address_pools_are_named() -> None:
    for pool, why in (({"base": "10.0.0.0/33", "size": 24}, "not a network in CIDR form"),
                      ({"base": "10.0.0.1/16", "size": 24}, "not a network in CIDR form"),  # host bits set
                      ({"base": "10.0.0.0/16", "size": 8}, "must lie between"),
                      ({"base": "10.0.0.0/16"}, "Field required"),
                      ({"base": "10.0.0.0/16", "size": 24, "extra": 1}, "unknown key")):
        problems = settings_mod.check_host_data({"docker": {"address_pools": [pool]}})
        assert problems and problems[0].startswith("docker.address_pools.0") and why in problems[0], problems


def test_agent_restart_stamp_covers_sentinel_settings() -> None:
    import hashlib

    from roles import agent

    secrets = {"redis_password": "pw"}
    plain = settings_mod.build({}, secrets)
    # without Sentinel the stamp is what it was before (an upgrade restarts no agent for it)
    assert agent.redis_stamp(plain) == hashlib.sha256(b"127.0.0.1:6379\npw").hexdigest() + "\n"
    sentinels = ["10.0.0.5:26379", "10.0.0.6:26379"]

    def with_redis(**redis: object) -> settings_mod.Settings:
        return settings_mod.build({"redis": {"primary": "10.0.0.5:6379", "sentinel": sentinels, **redis}}, secrets)

    ha, other_name = with_redis(), with_redis(service_name="other")
    other_sentinels = with_redis(sentinel=["10.0.0.5:26379", "10.0.0.7:26379"])
    stamps = {agent.redis_stamp(s) for s in (plain, ha, other_name, other_sentinels)}
    assert len(stamps) == 4 and all("pw" not in st for st in stamps)
