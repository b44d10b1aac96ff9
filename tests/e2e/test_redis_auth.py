"""The installed node's Redis wants the password the installer generated, listens on loopback
only, and every daemon uses the password (a session still runs end to end: its events reach the
manager through Redis)."""

from __future__ import annotations

import socket
import subprocess
import tomllib
from pathlib import Path

import pytest
import redis
from redis.exceptions import AuthenticationError, ResponseError

from .conftest import wait_until

SECRETS = Path("/etc/backend.ai/secrets.toml")
ETCD = "http://127.0.0.1:2379"
PORT = 6379


def _password() -> str:
    value = tomllib.loads(SECRETS.read_text()).get("redis_password")
    assert value, f"{SECRETS} has no redis_password: rerun `bash installer/bootstrap.sh`"
    return str(value)


def _client(password: str | None) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=PORT, password=password, socket_timeout=5,
                       socket_connect_timeout=5)


def _raw(command: bytes) -> bytes:
    """One inline command on a fresh connection, without AUTH or HELLO, and its reply line."""
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as sock:
        sock.sendall(command + b"\r\n")
        return sock.makefile("rb").readline()


def test_unauthenticated_connection_gets_noauth() -> None:
    assert _raw(b"PING").startswith(b"-NOAUTH")
    assert _raw(b"XADD events * forged heartbeat").startswith(b"-NOAUTH")
    with _client(None) as r, pytest.raises(AuthenticationError):
        r.xadd("events", {"forged": "heartbeat"})
    with _client("not-the-password") as r, pytest.raises((AuthenticationError, ResponseError)):
        r.ping()


def test_password_from_the_secrets_file_is_the_one_in_etcd() -> None:
    password = _password()
    with _client(password) as r:
        assert r.ping() is True
    out = subprocess.run(["etcdctl", f"--endpoints={ETCD}", "--dial-timeout=3s", "get",
                          "/sorna/local/config/redis/password", "--print-value-only"],
                         env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}, capture_output=True,
                         text=True, timeout=30)
    assert out.stdout.strip() == password, out.stderr


def test_redis_listens_on_loopback_only() -> None:
    out = subprocess.run(["ss", "-Hltn", f"sport = :{PORT}"], capture_output=True, text=True,
                         timeout=30).stdout
    addrs = {line.split()[3].rpartition(":")[0].strip("[]") for line in out.splitlines()}
    assert addrs == {"127.0.0.1"}, out


def test_daemons_work_with_the_password(bai) -> None:
    # create -> RUNNING needs the agent's kernel events, which travel over Redis
    assert bai("run", "--rm", "-c", "print(6*7)", "python").stdout == "42\n"


def test_agent_heartbeats_reach_the_protected_stream() -> None:
    """The agent writes its heartbeats (every 5 s) into the password-protected events stream."""
    from bai.common.events import REDIS_DB_STREAM, STREAM_KEY

    with redis.Redis(host="127.0.0.1", port=PORT, db=REDIS_DB_STREAM, password=_password(),
                     socket_timeout=5) as r:
        start_ms = int(r.time()[0] * 1000)

        def fresh_heartbeat() -> bool:
            for entry_id, fields in r.xrevrange(STREAM_KEY, count=50):
                if int(entry_id.split(b"-")[0]) < start_ms:
                    return False
                if fields.get(b"name") == b"agent_heartbeat":
                    return True
            return False

        wait_until(fresh_heartbeat, "an agent heartbeat newer than the test", deadline=20)
