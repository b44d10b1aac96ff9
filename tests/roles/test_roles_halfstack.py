"""The half-stack roles (postgresql, redis, etcd) applied twice through the engine on two fresh
hosts built from the same image: one with systemd as PID 1 (Debian's units), one with ``sleep``
as PID 1 (supervisor programs). See conftest.py for how the hosts are made and applied."""

from __future__ import annotations

from typing import Any

import pytest

# the session fixture (two hosts booted, four runs of the roles) is timed with the first test:
# ~4 min on a busy 2-core machine
pytestmark = pytest.mark.timeout(600)

KINDS = ["systemd", "supervisor"]
PORTS = {"postgresql": 5432, "redis": 6379, "etcd": 2379, "etcd-peer": 2380}
UNITS = ["postgresql@15-main.service", "redis-server.service", "etcd.service"]
PROGRAMS = ["bai-postgresql", "bai-redis", "bai-etcd"]


@pytest.fixture(params=KINDS)
def h(request: pytest.FixtureRequest, halfstack_hosts: dict[str, Any]) -> Any:
    return halfstack_hosts[request.param]


def test_first_run_changes_each_role(h: Any) -> None:
    for role in ("postgresql", "redis", "etcd"):
        assert any(changed for label, changed in h.runs[0].items()
                   if label.startswith(role + " |")), f"first run changed nothing in {role}"


def test_second_run_changes_nothing(h: Any) -> None:
    assert [label for label, changed in h.runs[1].items() if changed] == []


def test_listening_on_loopback_only(h: Any) -> None:
    listeners = h.listeners()
    for service, port in PORTS.items():
        addrs = {addr for addr, p in listeners if p == port}
        assert addrs == {"127.0.0.1"}, f"{service} listens on {addrs or 'nothing'}"


REDIS_AUTH = ("REDISCLI_AUTH=\"$(sed -n 's/^redis_password = \"\\(.*\\)\"$/\\1/p' "
              "/etc/backend.ai/secrets.toml)\" ")


def test_services_answer(h: Any) -> None:
    # Redis wants the password of the secrets file: without it, NOAUTH
    assert h.run("redis-cli -h 127.0.0.1 ping").stdout.strip().startswith("NOAUTH")
    assert h.run(f"{REDIS_AUTH}redis-cli --no-auth-warning -h 127.0.0.1 ping").stdout.strip() == "PONG"
    assert h.run("stat -c '%a %U:%G' /etc/redis/bai-auth.conf").stdout.strip() == "640 root:redis"
    etcdctl = "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379"
    r = h.run(f"{etcdctl} put /t/k v && {etcdctl} get /t/k --print-value-only")
    assert r.stdout.split()[-1] == "v", r.stderr
    # role bai logs in with the password kept in the secrets file, and owns database backend
    r = h.run("PGPASSWORD=\"$(sed -n 's/^db_password = \"\\(.*\\)\"$/\\1/p' "
              "/etc/backend.ai/secrets.toml)\" psql -X -tA -h 127.0.0.1 -U bai -d backend "
              "-c 'SELECT current_user, pg_get_userbyid(datdba) FROM pg_database "
              "WHERE datname = current_database()'")
    assert r.stdout.strip() == "bai|bai", r.stderr
    assert h.run("stat -c %a /etc/backend.ai/secrets.toml").stdout.strip() == "600"


def test_config_change_restarts_only_that_service(h: Any) -> None:
    restart = ("redis | Restart redis-server.service on changed config" if h.init == "systemd"
               else "redis | Restart bai-redis on changed config")
    assert [label for label, changed in h.runs[2].items() if changed] == [
        "redis | Max memory", restart]
    r = h.run(f"{REDIS_AUTH}redis-cli --no-auth-warning -h 127.0.0.1 config get maxmemory")
    assert r.stdout.split()[-1] == "134217728", r.stdout + r.stderr


def test_rerun_sets_a_redis_password_on_an_older_node_and_keeps_its_data(h: Any) -> None:
    restart = ("redis | Restart redis-server.service on changed config" if h.init == "systemd"
               else "redis | Restart bai-redis on changed config")
    assert [label for label, changed in h.runs[3].items() if changed] == [
        "redis | Write secrets file", "redis | Write the password file (requirepass)",
        "redis | Include the password file", restart]
    assert h.run("redis-cli -n 3 get bai-kept").stdout.strip().startswith("NOAUTH")
    r = h.run(f"{REDIS_AUTH}redis-cli --no-auth-warning -n 3 get bai-kept; "
              f"{REDIS_AUTH}redis-cli --no-auth-warning -n 3 xlen bai-events")
    assert r.stdout.split() == ["yes", "1"], r.stdout + r.stderr


# -- the systemd path -----------------------------------------------------------------------------

@pytest.mark.parametrize("unit", UNITS)
def test_systemd_units_running_and_enabled(halfstack_hosts: dict[str, Any], unit: str) -> None:
    h = halfstack_hosts["systemd"]
    assert h.run(f"systemctl is-active {unit}").stdout.strip() == "active"
    assert h.run(f"systemctl is-enabled {unit}").stdout.strip() == "enabled"


def test_systemd_host_uses_no_supervisor(halfstack_hosts: dict[str, Any]) -> None:
    h = halfstack_hosts["systemd"]
    assert h.run("ls /etc/supervisor/conf.d/bai-*.conf").returncode != 0


# -- the no-systemd path --------------------------------------------------------------------------

@pytest.mark.parametrize("program", PROGRAMS)
def test_supervisor_programs_running(halfstack_hosts: dict[str, Any], program: str) -> None:
    h = halfstack_hosts["supervisor"]
    assert h.run("cat /proc/1/comm").stdout.strip() == "sleep"
    out = h.run(f"supervisorctl status {program}").stdout
    assert out.split()[1] == "RUNNING", out
    assert h.run(f"test -s /var/log/bai/{program.removeprefix('bai-')}.log").returncode == 0


def test_os_prep_on_both_kinds_of_host(h: Any) -> None:
    """The service account, the tuning files, limits; the clock reported, not set (a container)."""
    assert h.run("getent passwd bai").stdout.strip() == "bai:x:1100:1100::/var/lib/bai:/usr/sbin/nologin"
    assert h.run("getent group bai").stdout.startswith("bai:x:1100:")
    r = h.run("cat /etc/sysctl.d/90-bai.conf /etc/security/limits.d/90-bai.conf")
    assert "net.core.somaxconn = 1024" in r.stdout and "bai hard nofile 512000" in r.stdout
    first = h.runs[0]
    assert first["os_prep | Write sysctl tuning"] and not first["os_prep | uid 1100 / gid 1100 free for bai"]
    notes = [label for label in first if label.startswith("os_prep | Time sync: ")]
    assert len(notes) == 1 and ("a container" in notes[0] or "no systemd" in notes[0]), notes
    assert "accelerators | no NVIDIA GPU found: CUDA not configured" in first

