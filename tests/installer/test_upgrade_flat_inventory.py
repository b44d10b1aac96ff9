"""An operator's inventory from 26.12.0 (flat host data: ``agent_id``, ``pg_listen`` ...) keeps
working within the 26.12 line: every old flat key is read as its nested path with a
FlatKeyWarning naming that path (the next release line refuses them); a flat key that
contradicts its nested path is refused naming both. The inventory is 26.12.0's own
``inventories/multi-node.py``, read from its commit in the release manifest."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from installer import engine
from installer import inventory as inventory_mod
from installer.upgrade.releases import load
from roles import settings as settings_mod
from roles.settings import FlatKeyWarning

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_mod, "_FLAT_WARNED", set())  # each message once per process


def _old_inventory(tmp_path: Path) -> Path:
    commit = load().get("26.12.0")
    assert commit is not None and commit.commit
    text = subprocess.run(["git", "-C", str(REPO), "show", f"{commit.commit}:inventories/multi-node.py"],
                          capture_output=True, text=True, check=True, timeout=60).stdout
    assert '"agent_id": "i-gpu1"' in text  # flat, as 26.12.0 wrote them
    path = tmp_path / "multi-node-26.12.0.py"
    path.write_text(text)
    return path


def test_a_26_12_0_inventory_loads_with_warnings_naming_the_nested_keys(
        tmp_path: Path, fresh_warnings: None) -> None:
    with pytest.warns(FlatKeyWarning) as caught:
        inv = inventory_mod.load(_old_inventory(tmp_path))
    messages = {str(w.message) for w in caught}
    for old, new in (("agent_id", "agent.id"), ("pg_listen", "postgresql.listen"),
                     ("storage_volume_path", "storage_proxy.volume_path"), ("manager_addr", "manager.addr")):
        assert f"{old}: an old flat key, read as {new}; nest it (release lines after 26.12 refuse flat keys)" \
            in messages
    s = {h: settings_mod.build(inv.data[h], {}) for h in inv.hosts}
    assert (s["gpu1"].agent.id, s["gpu1"].agent.rpc_addr, s["gpu2"].agent.container_bind_host) == (
        "i-gpu1", "10.0.0.21:6001", "10.0.0.22")
    assert (s["db1"].postgresql.listen, s["db1"].postgresql.allow_cidrs) == ("10.0.0.5", ("10.0.0.10/32",))
    assert s["mgr1"].manager.addr == "10.0.0.10:8081" and s["mgr1"].etcd.addr == "10.0.0.5:2379"
    assert s["st1"].storage_proxy.volume_path == s["gpu1"].storage_proxy.volume_path == "/mnt/vfroot/local"
    # the same roles as the tree's own (nested) multi-node inventory
    nested = inventory_mod.load(REPO / "inventories" / "multi-node.py")
    names = [(p.name, {h: [r.name for r in rs] for h, rs in p.roles.items()}) for p in engine.phases_for(inv)]
    assert names == [(p.name, {h: [r.name for r in rs] for h, rs in p.roles.items()})
                     for p in engine.phases_for(nested)]


def test_a_flat_key_contradicting_its_nested_path_is_refused(tmp_path: Path, fresh_warnings: None) -> None:
    path = tmp_path / "inv.py"
    path.write_text('halfstack = manager = agents = storage = [("h1", {"agent_id": "i-a", '
                    '"agent": {"id": "i-b"}, "pg_port": 5433, "postgresql": {"port": 5433}})]\n')
    with pytest.raises(inventory_mod.InventoryError) as info:
        inventory_mod.load(path)
    assert str(info.value) == (f"{path}: host 'h1': agent_id: an old flat key for agent.id, which is given "
                               "too with another value; keep the nested one")
    # the same value twice is no contradiction
    assert settings_mod.check_host_data({"pg_port": 5433, "postgresql": {"port": 5433}}) == []
