"""Pure pieces of the roles and the engine: settings, secrets, rendered files, fact parsing,
the client env file. No hosts, no Docker."""

from __future__ import annotations

import os
import stat
import subprocess
import tomllib
from pathlib import Path

from installer import probe
from roles import _facts, agent, bai, base, etcd, manager, os_prep, postgresql, redis
from roles import settings as settings_mod
from roles._service import Service


def test_secrets_generated_once_and_reused() -> None:
    first = settings_mod.generate_secrets({})
    assert set(first) == set(settings_mod.SECRET_KEYS) and all(first.values())
    text = settings_mod.render_secrets(first)
    again = settings_mod.generate_secrets(settings_mod.parse_secrets(text))
    assert again == first
    # a missing key is filled in, present ones are kept
    partial = settings_mod.generate_secrets({"db_password": "keep"})
    assert partial["db_password"] == "keep" and partial["rpc_secret"]


def test_settings_from_host_data_ignore_connector_data() -> None:
    s = settings_mod.build({"redis": {"maxmemory": "1gb"}, "ssh_user": "root"}, {"db_password": "pw"})
    assert s.redis.maxmemory == "1gb" and s.postgresql.password == "pw"
    assert s.endpoint == "http://127.0.0.1:8081"


def test_manager_and_agent_toml_match_the_contract() -> None:
    s = settings_mod.build({}, {"db_password": "pw", "rpc_secret": "x"})
    m = tomllib.loads(bai._toml(manager.manager_config(s)))
    assert m["etcd"] == {"namespace": "local", "addr": "127.0.0.1:2379"}
    assert m["db"] == {"addr": "127.0.0.1:5432", "name": "backend", "user": "bai",
                       "password": "pw", "pool-size": 8}
    assert m["manager"]["service-addr"] == "127.0.0.1:8081"
    a = tomllib.loads(bai._toml(agent.agent_config(s)))
    assert a["agent"]["rpc-listen-addr"] == "127.0.0.1:6001"
    assert a["agent"]["ipc-base-path"] == "/var/lib/bai/ipc"
    assert a["container"] == {"port-range": [30000, 31000], "bind-host": "127.0.0.1"}


def test_manager_config_loads_with_the_managers_model() -> None:
    from bai.manager.config import ManagerConfig

    s = settings_mod.build({}, {"db_password": "pw", "rpc_secret": "x"})
    cfg = ManagerConfig.model_validate(manager.manager_config(s))
    assert cfg.db.password == "pw"


def test_services_bind_loopback_by_default() -> None:
    s = settings_mod.Settings()
    assert "listen_addresses = '127.0.0.1'" in postgresql.conf_text(s)
    text = etcd.defaults_text(s)
    assert 'ETCD_LISTEN_CLIENT_URLS="http://127.0.0.1:2379"' in text
    assert "0.0.0.0" not in text
    assert "--listen-peer-urls http://127.0.0.1:2380" in etcd.service(s).command


def test_supervisor_program_file() -> None:
    svc = redis.service(settings_mod.Settings())
    text = svc.program_text()
    assert "[program:bai-redis]" in text
    assert "user=redis" in text
    assert "stdout_logfile=/var/log/bai/redis.log" in text
    assert "--daemonize no" in svc.command


def test_own_units_for_manager_and_agent() -> None:
    s = settings_mod.Settings()
    for svc in (manager.service(s), agent.service(s)):
        assert isinstance(svc, Service) and svc.unit_text
        assert f"ExecStart={svc.command}" in svc.unit_text
        assert "--config /etc/backend.ai/" in svc.command
    # the manager runs as its own account (under supervisord and systemd alike)
    svc = manager.service(s)
    assert svc.user == manager.USER == "bai-manager"
    assert svc.unit_text is not None and "User=bai-manager\nGroup=bai-manager\n" in svc.unit_text
    assert "user=bai-manager\n" in svc.program_text()


def test_ephemeral_ports_do_not_overlap_container_ports() -> None:
    text = os_prep.sysctl_text(os_prep.sysctl_values(settings_mod.Settings()))
    line = next(x for x in text.splitlines() if x.startswith("net.ipv4.ip_local_port_range"))
    lo = int(line.split("=")[1].split()[0])
    assert lo > 31000


def test_fact_parsers() -> None:
    assert _facts.SupervisorState().process(
        ["__up__", "bai-redis  RUNNING   pid 1, uptime 0:00:01", "bai-etcd  FATAL  Exited"]
    ) == {"up": True, "programs": {"bai-redis": "RUNNING", "bai-etcd": "FATAL"}}
    assert _facts.SupervisorState().process(["__down__"])["up"] is False
    import xmlrpc.client

    answer = xmlrpc.client.dumps(([{"name": "bai-redis", "group": "bai-redis", "statename": "RUNNING"},
                                   {"name": "w1", "group": "web", "statename": "FATAL"}],), methodresponse=True)
    assert _facts.SupervisorState().process(["__xml__", *answer.splitlines()]) == {
        "up": True, "programs": {"bai-redis": "RUNNING", "web:w1": "FATAL"}}
    assert _facts.SupervisorState().process(["__xml__", "<garbage"])["up"] is False
    assert _facts.KeyValueFile().process(
        ["# c", "export BACKEND_ACCESS_KEY=AKIA1", "export BACKEND_ENDPOINT='http://x:1'"]
    ) == {"BACKEND_ACCESS_KEY": "AKIA1", "BACKEND_ENDPOINT": "http://x:1"}
    assert _facts.FileText().process(["__absent__"]) is None
    assert _facts.FileText().process(["__present__", "a = 1"]) == "a = 1\n"
    assert _facts.ServiceManager().process(["systemd"]) == "systemd"
    assert _facts.ServiceManager().process(["supervisor"]) == "supervisor"


def test_client_env_file(tmp_path: Path) -> None:
    src = tmp_path / "fixture.json"
    src.write_text('log line\n{"access_key": "AKIATEST", "secret_key": "s3cr$t", '
                   '"endpoint": "http://127.0.0.1:8081"}')
    out = tmp_path / "client.env"
    probe.client_env(str(src), "http://fallback", str(out))
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    r = subprocess.run(["bash", "-c", f". {out}; echo $BACKEND_ENDPOINT $BACKEND_ACCESS_KEY "
                        "$BACKEND_SECRET_KEY $BACKEND_ENDPOINT_TYPE"],
                       capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["http://127.0.0.1:8081", "AKIATEST", "s3cr$t", "api"]


def _sh(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """bash with an empty environment (PATH from the test only), as a fresh shell has."""
    return subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), "bash", "-c", script],
                          capture_output=True, text=True, timeout=30)


def test_client_env_puts_the_commands_on_path_once(tmp_path: Path) -> None:
    src = tmp_path / "fixture.json"
    src.write_text('{"access_key": "AKIATEST", "secret_key": "s", "endpoint": "http://x:1"}')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "backend.ai").write_text("#!/bin/sh\necho bai-cli\n")
    (bin_dir / "backend.ai").chmod(0o755)
    out = tmp_path / "client.env"
    probe.client_env(str(src), "http://fallback", str(out), str(bin_dir))
    r = _sh(f". {out}; . {out}; backend.ai; echo $PATH", PATH="/usr/bin:/bin")
    assert r.stdout.split() == ["bai-cli", f"{bin_dir}:/usr/bin:/bin"], r.stderr
    assert settings_mod.path_line(str(bin_dir)) in out.read_text().splitlines()


def test_profile_snippet_puts_bin_dir_first_once() -> None:
    s = settings_mod.Settings()
    text = base.profile_text(s)
    r = _sh(f"{text}\n{text}\necho $PATH", PATH="/usr/local/bin:/usr/bin")
    assert r.stdout.strip() == "/opt/bai/bin:/usr/local/bin:/usr/bin"


def test_command_links_converge(tmp_path: Path) -> None:
    def venv(name: str) -> Path:
        b = tmp_path / name / "bin"
        b.mkdir(parents=True)
        for cmd in settings_mod.COMMANDS:
            (b / cmd).write_text("#!/bin/sh\n")
        return tmp_path / name

    bin_dir = tmp_path / "links"
    s = settings_mod.Settings(venv=str(venv("venv1")), bin_dir=str(bin_dir))
    check, commands = base.command_links(s)

    def ok() -> bool:
        return _sh(check, PATH="/usr/bin:/bin").returncode == 0

    def apply(s: settings_mod.Settings) -> None:
        r = _sh(base.command_links(s)[1][0], PATH="/usr/bin:/bin")
        assert r.returncode == 0, r.stderr

    assert not ok()
    apply(s)
    assert ok()
    assert {p.name: os.readlink(p) for p in bin_dir.iterdir()} == {
        cmd: f"{s.venv}/bin/{cmd}" for cmd in settings_mod.COMMANDS}
    # a stale link of ours goes, a file that is not a link stays untouched
    (bin_dir / "bai-old").symlink_to(f"{s.venv}/bin/bai-old")
    (bin_dir / "notes").write_text("mine")
    assert not ok()
    apply(s)
    assert ok() and not (bin_dir / "bai-old").is_symlink() and (bin_dir / "notes").read_text() == "mine"
    # another venv: every link follows it
    s2 = settings_mod.Settings(venv=str(venv("venv2")), bin_dir=str(bin_dir))
    assert _sh(base.command_links(s2)[0], PATH="/usr/bin:/bin").returncode != 0
    apply(s2)
    assert os.readlink(bin_dir / "backend.ai") == f"{s2.venv}/bin/backend.ai"


def test_redis_password_stays_off_command_lines() -> None:
    s = settings_mod.build({}, {"redis_password": "pw-xyz", "db_password": "d", "rpc_secret": "r"})
    assert redis.auth_text(s).splitlines()[-1] == "requirepass pw-xyz"
    ready = redis.service(s).ready
    assert "REDISCLI_AUTH=" in ready and "pw-xyz" not in ready
    assert "pw-xyz" not in agent.redis_stamp(s)
    assert agent.redis_stamp(s) != agent.redis_stamp(
        s.model_copy(update={"redis": s.redis.model_copy(update={"password": "other"})}))


def test_code_stamp_changes_with_the_checkout_location(tmp_path: Path) -> None:
    """Daemons started from another clone (a CI run's, deleted afterwards) must be restarted by
    a run from this one, even when the code is byte for byte the same."""
    import shutil

    here = bai.code_stamp()
    assert bai.code_stamp() == here  # stable for one checkout
    clone = tmp_path / "components"
    shutil.copytree(Path(bai.__file__).resolve().parents[1] / "components" / "bai", clone / "bai",
                    ignore=shutil.ignore_patterns("__pycache__"))
    elsewhere = subprocess.run(
        ["/opt/bai/venv/bin/python", "-c", "import bai, roles.bai as r; print(bai.__file__); print(r.code_stamp(), end='')"],
        env={**os.environ, "PYTHONPATH": f"{clone}:{Path(bai.__file__).resolve().parents[1]}"},
        capture_output=True, text=True, check=True, timeout=60)
    origin, stamp = elsewhere.stdout.split("\n", 1)
    assert origin.startswith(str(clone)) and stamp != here
