"""Unattended mode: every wizard choice from ``bai-install.toml`` (``--config``) and flags
(``--set``), applied to the inventory; bad files refused naming the file and key path (exit 2);
and the run log every run keeps (installer/runlog.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from installer import inventory, runconfig, runlog
from tests.installer.test_preflight import cli, write_inventory


def test_config_file_and_flags(tmp_path: Path) -> None:
    inv = write_inventory(tmp_path, "halfstack = manager = ['db1']\nagents = storage = [('gpu1', {'agent': {'id': 'a1'}})]\n")
    cfg_path = tmp_path / "bai-install.toml"
    cfg_path.write_text("""
inventory = "inv.py"            # relative to this file
non_interactive = true
log_dir = "logs"
[settings]
redis = { maxmemory = "1gb" }
[hosts.gpu1]
agent = { rpc_addr = "10.0.0.21:6001" }
[preflight]
max_clock_skew = "2s"
disk_images = "20g"
""")
    cfg = runconfig.load(cfg_path)
    assert cfg.inventory == str(inv) and cfg.non_interactive and cfg.log_dir == str(tmp_path / "logs")
    assert cfg.preflight.max_clock_skew == 2.0 and cfg.preflight.disk_images == 20 * 2**30
    cfg.settings = runconfig.merge(cfg.settings, runconfig.parse_set(["redis.port=6380", "manager.addr=10.0.0.10:8081"]))
    loaded = runconfig.load_inventory(cfg)
    assert loaded.data["db1"] == {"redis": {"maxmemory": "1gb", "port": 6380}, "manager": {"addr": "10.0.0.10:8081"}}
    assert loaded.data["gpu1"]["agent"] == {"id": "a1", "rpc_addr": "10.0.0.21:6001"}
    assert runconfig.parse_set(["a.b=[1, 2]", "a.c=true", "x=plain text"]) == {"a": {"b": [1, 2], "c": True}, "x": "plain text"}


@pytest.mark.parametrize(("text", "message"), [
    ('inventory = "a.py"\nfrom_stack = "b.json"\n', "give `inventory` or `from_stack`, not both"),
    ("inventroy = 'a.py'\n", "inventroy: unknown key"),
    ("[preflight]\ndisk_data = 'lots'\n", "preflight.disk_data: Value error, not a size"),
    ("[settings\n", "not TOML"),
])
def test_bad_config_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(runconfig.RunConfigError, match=message.replace("(", r"\(").replace("`", ".")):
        runconfig.load(path)
    r = cli("preflight", "--config", str(path), timeout=60)
    assert r.returncode == 2 and str(path) in r.stderr


def test_unknown_host_section_and_bad_set(tmp_path: Path) -> None:
    cfg = runconfig.RunConfig(hosts={"nope": {"redis": {"port": 1}}})
    with pytest.raises(runconfig.RunConfigError, match=r"\[hosts\] names nope, not in .*local.py \(hosts: @local\)"):
        runconfig.apply_overrides(inventory.load(), cfg)
    r = cli("install", "--set", "justakey", "--dry-run", timeout=60)
    assert r.returncode == 2 and "expected KEY.PATH=VALUE" in r.stderr


def test_settings_override_reaches_the_plan_and_the_log(tmp_path: Path) -> None:
    """``--config`` with a settings override: the real plan on this node shows the Redis config
    change (and changes nothing), and the run's log lands where the file says (paths in the
    file are relative to it)."""
    write_inventory(tmp_path, "halfstack = ['@local']\n")  # this node's half-stack only: a shorter plan
    cfg = tmp_path / "bai-install.toml"
    cfg.write_text('inventory = "inv.py"\nlog_dir = "logs"\n[settings]\nredis = { maxmemory = "384mb" }\n')
    r = cli("install", "--config", str(cfg), "--dry-run", "--json", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    plan = json.loads(r.stdout)
    redis = [op for op in plan["plan"] if op["role"] == "redis" and op["will_change"]]
    assert redis, [op["label"] for op in plan["plan"] if op["role"] == "redis"]
    [log] = (tmp_path / "logs").glob("install-*.log")
    text = log.read_text()
    assert "bai-install install --config" in text and '"mode": "plan"' in text


def test_run_log_lines_and_pruning(tmp_path: Path) -> None:
    for i in range(runlog.KEEP + 3):
        (tmp_path / f"install-2026010{i:04d}.log").write_text("old\n")
    with runlog.RunLog(tmp_path) as log:
        log.line("phase", "\x1b[1mhalfstack\x1b[0m")
        logging.getLogger("pyinfra").info("[@local] \x1b[32mSuccess\x1b[0m")
        log.data("summary", {"ok": True})
    lines = log.path.read_text().splitlines()
    assert [line.split(None, 1)[1] for line in lines] == ["phase     halfstack", "pyinfra   [@local] Success",
                                                          'summary   {"ok": true}']
    assert len(list(tmp_path.glob("install-*.log"))) == runlog.KEEP
    assert not (tmp_path / "install-20260100000.log").exists()
