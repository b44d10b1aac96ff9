"""The HA half-stack without hosts: inventories/ha.py loads and validates, each component is told
about every etcd member, the sentinels and both PostgreSQL servers, the single-host rendering is
unchanged, and contradictory HA data is refused at load naming the host and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from installer import engine
from installer import inventory as inventory_mod
from roles import etcd, manager, postgresql, redis, webserver
from roles import settings as settings_mod
from roles._ha import check_topology

REPO = Path(__file__).resolve().parents[2]
HA = REPO / "inventories" / "ha.py"
SECRETS = {"redis_password": "rpw", "db_password": "dbpw"}
DB = ["10.0.0.5", "10.0.0.6", "10.0.0.7"]


def _settings(inv: inventory_mod.Inventory, host: str) -> settings_mod.Settings:
    return settings_mod.build(inv.data[host], SECRETS)


def test_ha_inventory_loads_with_the_same_groups() -> None:
    inv = inventory_mod.load(HA)
    assert set(inv.groups) == set(inventory_mod.GROUPS)
    phases = {p.name: {h: [r.name for r in roles] for h, roles in p.roles.items()}
              for p in engine.phases_for(inv)}
    assert phases["halfstack"] == {"db1": ["os_prep", "base", "postgresql", "redis", "etcd"],
                                   "db2": ["os_prep", "base", "postgresql", "redis", "etcd"],
                                   "db3": ["os_prep", "base", "redis", "etcd"]}
    assert list(phases["manager"]) == ["mgr1", "mgr2"]


def test_every_component_is_told_about_the_ha_half_stack() -> None:
    inv = inventory_mod.load(HA)
    etcd_addr = ",".join(f"{a}:2379" for a in DB)
    for host in inv.hosts:
        s = _settings(inv, host)
        assert s.etcd.addr == etcd_addr, host
        assert s.etcd.endpoint == ",".join(f"http://{a}:2379" for a in DB)
    mgr = _settings(inv, "mgr1")
    conf = manager.manager_config(mgr)
    assert conf["db"]["addr"] == "10.0.0.5:5432,10.0.0.6:5432"
    assert conf["etcd"]["addr"] == etcd_addr
    session_redis = webserver.config(mgr)["session"]["redis"]
    assert session_redis["sentinel"] == [f"{a}:26379" for a in DB]
    assert session_redis["service-name"] == "mymaster"
    # the etcd keys the manager role writes (config/redis/sentinel as a comma list)
    ops = _etcd_key_commands(mgr)
    assert any("config/redis/sentinel" in c and ",".join(f"{a}:26379" for a in DB) in c for c in ops)
    assert any("config/redis/service_name" in c and "mymaster" in c for c in ops)


def _etcd_key_commands(s: settings_mod.Settings) -> list[str]:
    """The commands of manager.etcd_key_ops, captured without pyinfra (the op decorator is
    bypassed: ensure's keyword arguments are recorded)."""
    seen: list[str] = []

    def fake_ensure(**kwargs: Any) -> None:
        seen.extend(kwargs["commands"])

    original = manager._ops.ensure
    manager._ops.ensure = fake_ensure  # type: ignore[assignment]
    try:
        manager.etcd_key_ops(s)
    finally:
        manager._ops.ensure = original  # type: ignore[assignment]
    return seen


def test_each_half_stack_host_renders_its_member() -> None:
    inv = inventory_mod.load(HA)
    text = etcd.defaults_text(_settings(inv, "db2"))
    assert 'ETCD_NAME="etcd-10-0-0-6"' in text
    assert ('ETCD_INITIAL_CLUSTER="etcd-10-0-0-5=http://10.0.0.5:2380,etcd-10-0-0-6=http://10.0.0.6:2380,'
            'etcd-10-0-0-7=http://10.0.0.7:2380"') in text
    assert 'ETCD_INITIAL_CLUSTER_STATE="new"' in text
    assert 'ETCD_LISTEN_CLIENT_URLS="http://10.0.0.6:2379,http://127.0.0.1:2379"' in text
    s3 = _settings(inv, "db3")
    assert [svc.name for svc in redis.services(s3)] == ["redis", "redis-sentinel"]
    seed = redis.sentinel_seed(s3)
    assert "sentinel monitor mymaster 10.0.0.5 6379 2" in seed and "bind 10.0.0.7" in seed
    assert "rpw" not in seed  # the password is the shell's $PW, never in the op's command
    assert "masterauth rpw" in redis.auth_text(s3)
    assert [p.port for p in redis.ports(s3)] == [6379, 26379]
    assert postgresql.ROLE.enabled(_settings(inv, "db2")) and not postgresql.ROLE.enabled(s3)
    assert "hot_standby = on" in postgresql.conf_text(_settings(inv, "db2"))
    assert postgresql.is_primary(_settings(inv, "db1")) and not postgresql.is_primary(_settings(inv, "db2"))
    # the replication password derives from the database password: the same on every host
    assert postgresql.pgpass_text(_settings(inv, "db1")) == postgresql.pgpass_text(_settings(inv, "db2"))
    assert "dbpw" not in postgresql.pgpass_text(_settings(inv, "db1"))


def test_single_host_rendering_is_unchanged() -> None:
    s = settings_mod.build({}, SECRETS)
    assert etcd.defaults_text(s) == (
        "# managed by bai-install; changes are overwritten\n"
        'ETCD_NAME="default"\nETCD_DATA_DIR="/var/lib/etcd/default"\n'
        'ETCD_LISTEN_CLIENT_URLS="http://127.0.0.1:2379"\nETCD_ADVERTISE_CLIENT_URLS="http://127.0.0.1:2379"\n'
        'ETCD_LISTEN_PEER_URLS="http://127.0.0.1:2380"\nETCD_INITIAL_ADVERTISE_PEER_URLS="http://127.0.0.1:2380"\n'
        'ETCD_INITIAL_CLUSTER="default=http://127.0.0.1:2380"\nETCD_AUTO_COMPACTION_RETENTION="1"\n')
    assert redis.auth_text(s) == "# managed by bai-install; changes are overwritten\nrequirepass rpw\n"
    assert [svc.name for svc in redis.services(s)] == ["redis"]
    assert "hot_standby" not in postgresql.conf_text(s)
    assert manager.manager_config(s)["db"]["addr"] == "127.0.0.1:5432"
    assert "sentinel" not in webserver.config(s)["session"]["redis"]
    assert s.etcd.endpoint == "http://127.0.0.1:2379"
    assert not any("sentinel" in c for c in _etcd_key_commands(s))


def _load(tmp_path: Path, text: str) -> str:
    path = tmp_path / "inv.py"
    path.write_text(text)
    with pytest.raises(inventory_mod.InventoryError) as exc:
        inventory_mod.load(path)
    return str(exc.value)


HEAD = f"""
DB = {DB!r}
data = {{"etcd": {{"members": DB, "addr": ",".join(a + ":2379" for a in DB)}},
        "redis": {{"sentinel": [a + ":26379" for a in DB], "primary": DB[0] + ":6379"}},
        "postgresql": {{"primary": DB[0], "replicas": [DB[1]]}}}}
"""


def _halfstack(overrides: dict[str, Any] | None = None) -> str:
    hosts = []
    for i, a in enumerate(DB):
        d: dict[str, Any] = {"etcd": {"listen": a}, "redis": {"listen": a},
                             "postgresql": {"listen": a} if i < 2 else {"enabled": False}}
        for section, values in ((overrides or {}).get(f"h{i + 1}") or {}).items():
            d[section] = {**d.get(section, {}), **values}
        hosts.append((f"h{i + 1}", d))
    return f"halfstack = {hosts!r}\nmanager = [('m1', {{}})]\n"


def test_the_fixture_inventory_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "inv.py"
    path.write_text(HEAD + _halfstack())
    assert inventory_mod.load(path).groups["halfstack"] == ["h1", "h2", "h3"]


@pytest.mark.parametrize(("change", "expected"), [
    ('data["etcd"]["members"] = DB + ["10.0.0.8"]',
     "host 'h1': etcd.members: Value error, 4 members: an etcd cluster needs an odd number"),
    ('data["redis"]["quorum"] = 4', "redis.quorum 4 is more than the 3 sentinel(s)"),
    ('data["postgresql"]["primary"] = ""', "postgresql.replicas without postgresql.primary"),
    ('data["redis"]["primary"] = ""', "redis.sentinel without redis.primary"),
    ('data["redis"]["primary"] = "10.0.0.9:6379"',
     "host 'h1': redis.primary: 10.0.0.9:6379 is no half-stack host's redis.listen:redis.port"),
    ('data["postgresql"]["replicas"] = [DB[1], "10.0.0.9"]',
     "postgresql.replicas: 10.0.0.9 is no half-stack host's postgresql.listen"),
])
def test_bad_ha_data_is_refused_naming_host_and_key(tmp_path: Path, change: str, expected: str) -> None:
    assert expected in _load(tmp_path, HEAD + change + "\n" + _halfstack())


def test_a_member_whose_listen_is_not_in_the_list_is_named(tmp_path: Path) -> None:
    msg = _load(tmp_path, HEAD + _halfstack({"h3": {"etcd": {"listen": "10.0.0.9"}}}))
    assert "host 'h3': etcd.listen: 10.0.0.9 is not one of etcd.members" in msg
    assert "etcd.members: 10.0.0.7 is no half-stack host's etcd.listen" in msg


def test_a_host_with_its_own_view_of_the_half_stack_is_named(tmp_path: Path) -> None:
    msg = _load(tmp_path, HEAD + _halfstack({"h2": {"redis": {"service_name": "other"}}}))
    assert "host 'h2': redis.service_name: 'other' differs from host 'h1'" in msg


def test_several_half_stack_hosts_need_the_ha_settings(tmp_path: Path) -> None:
    text = "halfstack = [('a', {}), ('b', {})]\n"
    msg = _load(tmp_path, text)
    for key in ("etcd.members", "redis.sentinel", "postgresql.primary"):
        assert f"host 'a': {key}: 2 half-stack hosts need the HA settings" in msg


def test_a_half_stack_host_that_is_neither_primary_nor_replica(tmp_path: Path) -> None:
    msg = _load(tmp_path, HEAD + _halfstack({"h3": {"postgresql": {"enabled": True, "listen": DB[2]}}}))
    assert "host 'h3': postgresql.listen: 10.0.0.7 is neither postgresql.primary" in msg


def test_check_topology_is_empty_for_single_host_inventories() -> None:
    for name in ("local.py", "multi-node.py"):
        inv = inventory_mod.load(REPO / "inventories" / name)
        assert check_topology(inv.groups, inv.data) == []
