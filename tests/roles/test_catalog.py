"""The role registry (roles/catalog.py) and the nested settings: every role module is in the
catalog, the catalog's order respects the phases, phases and status read from it, and bad host
data is refused before anything runs, naming the host and the key path."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from installer import engine
from installer import inventory as inventory_mod
from roles import catalog
from roles import settings as settings_mod
from roles._service import Service

REPO = Path(__file__).resolve().parents[2]
ROLES_DIR = REPO / "roles"


def _defines_a_deploy(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                if (isinstance(target, ast.Name) and target.id == "deploy") or (
                        isinstance(target, ast.Attribute) and target.attr == "deploy"):
                    return True
    return False


def test_every_module_with_a_deploy_is_in_the_catalog() -> None:
    with_deploy = sorted(p.stem for p in ROLES_DIR.glob("*.py") if _defines_a_deploy(p))
    assert with_deploy, "no @deploy found: the scan is broken"
    assert sorted(catalog.MODULES) == with_deploy
    for name in catalog.MODULES:
        module = importlib.import_module(f"roles.{name}")
        assert isinstance(module.ROLE, catalog.Role), name
    assert [r.name for r in catalog.ROLES] == [importlib.import_module(f"roles.{m}").ROLE.name
                                               for m in catalog.MODULES]
    names = [r.name for r in catalog.ROLES]
    assert len(set(names)) == len(names)


def test_catalog_order_respects_the_groups() -> None:
    """A role's first group (in phase order) never goes back along the catalog: phases run
    group by group, so the catalog order is the order a host in several groups gets them."""
    firsts = [min(catalog.GROUPS.index(g) for g in r.groups) for r in catalog.ROLES]
    assert firsts == sorted(firsts), [(r.name, r.groups) for r in catalog.ROLES]
    assert inventory_mod.GROUPS == catalog.GROUPS


def test_each_role_describes_its_services_and_ports() -> None:
    s = settings_mod.Settings()
    for role in catalog.ROLES:
        for svc in role.services(s):
            assert isinstance(svc, Service) and svc.ready, role.name
        for port in role.ports(s):
            assert isinstance(port, catalog.PortUse) and 0 < port.port < 65536, role.name
            assert port.last is None or port.port <= port.last < 65536
    by_port = {p.port: (r.name, p.bind) for r in catalog.ROLES for p in r.ports(s)}
    assert by_port[8081] == ("bai-manager", "127.0.0.1") and by_port[5432] == ("postgresql", "127.0.0.1")
    assert by_port[6001] == ("bai-agent", "127.0.0.1") and by_port[6022] == ("storage-proxy", "127.0.0.1")
    assert catalog.by_name("etcd").services(s)[0].unit == "etcd.service"
    with pytest.raises(KeyError, match="no role named"):
        catalog.by_name("nope")
    with pytest.raises(ValueError, match="groups"):
        catalog.Role(name="x", groups=("cloud",), deploy=lambda s: None)


def test_a_host_in_several_groups_gets_each_role_once_in_catalog_order(tmp_path: Path) -> None:
    inv_file = tmp_path / "inv.py"
    inv_file.write_text('halfstack = ["a"]\nmanager = ["a", "b"]\nagents = ["b", "c"]\nstorage = ["c"]\n'
                        'data = {"ssh_user": "root"}\n')
    inv = inventory_mod.load(inv_file)
    phases = [(p.name, {h: [r.name for r in roles] for h, roles in p.roles.items()})
              for p in engine.phases_for(inv)]
    assert phases == [
        ("halfstack", {"a": ["os_prep", "base", "postgresql", "redis", "etcd"]}),
        ("manager", {"a": ["bai-manager", "app-proxy", "webserver"],
                     "b": ["os_prep", "base", "bai-manager", "app-proxy", "webserver"]}),
        ("agents", {"b": ["conntrack", "docker", "accelerators", "kernel_image", "bai-agent"],
                    "c": ["os_prep", "base", "conntrack", "docker", "accelerators", "kernel_image", "bai-agent"]}),
        ("storage", {"c": ["storage-proxy"]}),
    ]
    # every host's roles, once each, in catalog order (what status and preflight read)
    order = [r.name for r in catalog.ROLES]
    for host in inv.hosts:
        mine = [r.name for r in catalog.roles_for_host(inv.groups, host, settings_mod.Settings())]
        flat = [n for _, by_host in phases for n in by_host.get(host, [])]
        assert sorted(mine, key=order.index) == mine and sorted(flat, key=order.index) == mine


def test_optional_roles_follow_their_setting(tmp_path: Path) -> None:
    inv_file = tmp_path / "inv.py"
    inv_file.write_text('halfstack = agents = storage = ["@local"]\n'
                        'manager = [("@local", {"registry": {"enabled": True}})]\n')
    phases = {p.name: [r.name for r in p.roles["@local"]] for p in engine.phases_for(inventory_mod.load(inv_file))}
    assert phases["manager"] == ["bai-manager", "registry", "app-proxy", "webserver"]
    default = engine.phases_for(inventory_mod.load(REPO / "inventories" / "local.py"))
    assert all(r.name != "registry" for p in default for roles in p.roles.values() for r in roles)


def test_phases_accept_roles_or_their_deploy_functions() -> None:
    from roles import etcd

    assert engine.Phase("x", {"h": [etcd.etcd]}).roles == {"h": [etcd.ROLE]}
    assert engine.role_name(etcd.etcd) == engine.role_name(etcd.ROLE) == "etcd"


def test_nested_settings_and_their_errors() -> None:
    s = settings_mod.build({"postgresql": {"listen": "10.0.0.5"}, "ssh_user": "root", "_sudo": True},
                           {"db_password": "pw"})
    assert (s.postgresql.listen, s.postgresql.port, s.postgresql.password) == ("10.0.0.5", 5432, "pw")
    assert settings_mod.secret_values(s)["db_password"] == "pw"
    problems = settings_mod.check_host_data({
        "postgresql": {"listen": "x", "prot": 1},
        "redis": {"port": "not a port"},
        "pg_listen": "10.0.0.5",
        "agent": {"rpc_secret": "leak"},
        "redis_password": "leak",
        "nonsense": 1,
    })
    assert "postgresql.prot: unknown key" in problems
    assert any(p.startswith("redis.port: ") for p in problems)
    # (an old flat key is read as its nested path; here that path is given too, differently)
    assert ("pg_listen: an old flat key for postgresql.listen, which is given too with another value; "
            "keep the nested one") in problems
    assert any(p.startswith("agent.rpc_secret: a generated secret") for p in problems)
    assert any(p.startswith("redis_password: a generated secret (redis.password)") for p in problems)
    with pytest.raises(settings_mod.SettingsError) as info:
        settings_mod.build({"nonsense": 1, "manager": {"addr": 8081}}, {})
    assert sorted(info.value.problems) == ["manager.addr: Input should be a valid string", "nonsense: unknown key"]
    # kernel_image is both an old flat key (a string) and a section (a dict)
    assert settings_mod.check_host_data({"kernel_image": {"jupyter_image": ""}}) == []
    assert settings_mod.nest_flat_keys({"kernel_image": "x"}) == (
        {"kernel_image": {"image": "x"}},
        ["kernel_image: an old flat key, read as kernel_image.image; nest it (release lines after 26.12 "
         "refuse flat keys)"], [])
    # every old flat key names a real path
    for old, new in settings_mod.RENAMED.items():
        section, name = new.split(".")
        assert name in type(getattr(settings_mod.Settings(), section)).model_fields, old


def test_inventory_errors_name_the_host_and_the_key_path(tmp_path: Path) -> None:
    inv_file = tmp_path / "bad.py"
    inv_file.write_text('data = {"etcd": {"adr": "10.0.0.5:2379"}}\n'
                        'halfstack = [("db1", {"postgresql": {"port": "x"}})]\n'
                        'manager = [("mgr1", {"manager_addr": "10.0.0.10:8081", "manager": {"addr": "x:1"}})]\n')
    with pytest.raises(inventory_mod.InventoryError) as info:
        inventory_mod.load(inv_file)
    text = str(info.value)
    assert f"{inv_file}: host 'db1': etcd.adr: unknown key" in text
    assert f"{inv_file}: host 'db1': postgresql.port: " in text
    assert (f"{inv_file}: host 'mgr1': manager_addr: an old flat key for manager.addr, which is given too with "
            "another value; keep the nested one") in text


def test_shared_data_merges_section_by_section(tmp_path: Path) -> None:
    inv_file = tmp_path / "inv.py"
    inv_file.write_text('data = {"etcd": {"addr": "10.0.0.5:2379", "namespace": "prod"}}\n'
                        'halfstack = [("db1", {"etcd": {"listen": "10.0.0.5"}})]\n'
                        'manager = [("db1", {"etcd": {"namespace": "other"}})]\n')
    inv = inventory_mod.load(inv_file)
    assert inv.data["db1"]["etcd"] == {"addr": "10.0.0.5:2379", "namespace": "other", "listen": "10.0.0.5"}
