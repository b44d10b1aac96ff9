"""The HA half-stack scenario, shared by tests/ha/ and bench/install.py: three half-stack test
hosts (an etcd member, Redis with a Sentinel on each; PostgreSQL primary on ha1, streaming replica
on ha2, none on ha3) and the manager (with its app proxy and webserver) on ha1, written as a
bai-install inventory shaped like inventories/ha.py and installed with ``bai-install install -i``
from this machine over pyinfra's docker connector.

Sentinel here declares a primary down after 2 s without an answer (``redis.down_after_ms``;
inventories/ha.py keeps the 5 s default) so the failover the test provokes is quick.
"""

from __future__ import annotations

import asyncio
import pprint
import shlex
from collections.abc import Awaitable, Callable
from typing import Any

from roles._common import secret_expr
from roles.settings import Settings
from tests.fixtures.testhosts import TestHost

HOSTS = ("ha1", "ha2", "ha3")
SERVICE = "mymaster"


def inventory_text(hosts: dict[str, TestHost]) -> str:
    a = {name: hosts[name].address for name in HOSTS}
    members = [a[n] for n in HOSTS]
    data: dict[str, Any] = {
        "etcd": {"members": members, "addr": ",".join(f"{m}:2379" for m in members)},
        "redis": {"sentinel": [f"{m}:26379" for m in members], "service_name": SERVICE,
                  "primary": f"{a['ha1']}:6379", "addr": f"{a['ha1']}:6379",
                  "down_after_ms": 2000, "failover_timeout_ms": 10000},
        "postgresql": {"primary": a["ha1"], "replicas": [a["ha2"]],
                       # the manager (on ha1) logs in over the network to either server
                       "allow_cidrs": [f"{a['ha1']}/32"]},
    }
    halfstack = [(hosts[n].target, {"etcd": {"listen": a[n]}, "redis": {"listen": a[n]},
                                    "postgresql": ({"listen": a[n]} if n != "ha3"
                                                   else {"enabled": False})})
                 for n in HOSTS]
    manager = [(hosts["ha1"].target, {"manager": {"id": "i-ha1", "addr": f"{a['ha1']}:8081"},
                                      "app_proxy": {"bind_host": a["ha1"],
                                                    "advertised_host": a["ha1"]}})]
    return (f"# written by tests/ha/scenario.py\ndata = {pprint.pformat(data)}\n\n"
            f"halfstack = {pprint.pformat(halfstack)}\n\nmanager = {pprint.pformat(manager)}\n")


def _auth() -> str:
    return f"REDISCLI_AUTH={secret_expr(Settings(), 'redis_password')}"


def redis_cli(host: TestHost, port: int, *args: str, timeout: float = 15) -> str:
    """redis-cli on ``host`` against its own address (password from its secrets file)."""
    r = host.run(f"{_auth()} redis-cli --no-auth-warning -h {host.address} -p {port} "
                 + " ".join(map(shlex.quote, args)), timeout=timeout)
    return r.stdout.strip()


def sentinel_primary(host: TestHost) -> str:
    """The primary ``host``'s Sentinel names, as ``address:port`` ("" when it does not answer)."""
    out = redis_cli(host, 26379, "sentinel", "get-master-addr-by-name", SERVICE).split()
    return ":".join(out) if len(out) == 2 else ""


def redis_role(host: TestHost) -> str:
    out = redis_cli(host, 6379, "role").split()
    return out[0] if out else ""


def etcdctl(host: TestHost, *args: str, endpoints: str | None = None) -> str:
    ep = endpoints or f"http://{host.address}:2379"
    r = host.run(f"ETCDCTL_API=3 etcdctl --endpoints={ep} --dial-timeout=3s --command-timeout=5s "
                 + " ".join(map(shlex.quote, args)), timeout=30)
    return r.stdout + r.stderr


def psql(host: TestHost, sql: str, db: str = "backend") -> str:
    r = host.run(f"runuser -u postgres -- psql -X -q -t -A -d {db} -c {shlex.quote(sql)}", timeout=30)
    return r.stdout.strip()


def api(env: dict[str, str], call: Callable[[Any], Awaitable[Any]], timeout: float = 20) -> Any:
    """One signed call with our client SDK (``call(api_session)``), bounded in time."""
    from bai.client.config import APIConfig
    from bai.client.request import APISession

    async def go() -> Any:
        config = APIConfig.from_env(environ=dict(env), dotenv=False)
        async with APISession(config) as session:
            return await asyncio.wait_for(call(session), timeout)

    return asyncio.run(go())
