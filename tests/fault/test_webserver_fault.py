"""Faults under the webserver: a real ``bai-webserver`` process on a port of its own, in front of
the fault node's manager (conftest), with its logins in a Redis of its own (append-only, fsync on
every write, so a SIGKILL loses nothing that was acknowledged).

1. SIGKILL of the webserver while logins are in flight, then a restart: every login that was
   answered still works (state is in Redis, not in the process), a login cut off mid-way left no
   half-written record (every stored login is whole and expires), and the cut-off clients got an
   error at once rather than a hang.
2. SIGKILL of Redis under a running webserver, then a restart: while it is down, calls that need
   the session store answer 503 problem+json (never 500) within the deadline, and a login attempt
   changes nothing; once Redis is back the same webserver process serves the old login again and
   takes new ones, its ended-logins subscription back, without being restarted.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bai.manager.store.fixtures import ADMIN_EMAIL
from bai.webserver.sessions import ENDED_CHANNEL, KEY_PREFIX, Login
from tests.fixtures.halfstack import _port_open, free_port

from .conftest import VENV_BIN, Cluster, Process, record, until

pytestmark = pytest.mark.timeout(180)

PROBS = "https://api.backend.ai/probs/webserver/"
#: The longest a call may take while the session store is down (it must answer, not hang).
OUTAGE_ANSWER_DEADLINE = 3.0
#: Logins started at once for the SIGKILL (the manager hashes each password: they overlap).
LOGINS_IN_FLIGHT = 6


@dataclass
class WebNode:
    url: str
    web: Process
    redis: Process
    redis_port: int
    password: str

    def store(self) -> aioredis.Redis:
        return aioredis.Redis(host="127.0.0.1", port=self.redis_port, db=3, socket_timeout=5,
                              socket_connect_timeout=2)


@pytest.fixture(scope="module")
def web_node(cluster_procs: dict[str, Any], cluster: Cluster) -> Iterator[WebNode]:
    root: Path = cluster_procs["root"] / "webserver"
    root.mkdir()
    redis_port, web_port = free_port(), free_port()
    redis = Process("web-redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "yes", "--appendfsync", "always", "--dir", str(root)],
                    root / "redis.log", lambda: _port_open(redis_port))
    (root / "webserver.toml").write_text(f"""
[service]
ip = "127.0.0.1"
port = {web_port}
[api]
endpoint = "{cluster.api}"
connect_timeout = 5
read_timeout = 30
[session.redis]
addr = "127.0.0.1:{redis_port}"
db = 3
""")
    web = Process("webserver", [str(VENV_BIN / "bai-webserver"), "start", "--config", str(root / "webserver.toml")],
                  root / "webserver.log", lambda: _port_open(web_port))
    redis.start()
    try:
        web.start(30)
        yield WebNode(f"http://127.0.0.1:{web_port}", web, redis, redis_port, cluster_procs["admin"].password)
    finally:
        web.stop()
        redis.stop()


class Browser:
    """A cookie jar of its own; answers as (status, parsed body, content type)."""

    def __init__(self, node: WebNode) -> None:
        self.node = node
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def close(self) -> None:
        await self.http.close()

    async def request(self, method: str, path: str, body: Any = None,
                      deadline: float = 30.0) -> tuple[int, Any, str]:
        async with self.http.request(method, self.node.url + path, json=body,
                                     timeout=aiohttp.ClientTimeout(total=deadline)) as resp:
            raw = await resp.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode(errors="replace")
            return resp.status, parsed, resp.content_type

    async def login(self, deadline: float = 30.0) -> tuple[int, Any, str]:
        return await self.request("POST", "/server/login", {"username": ADMIN_EMAIL, "password": self.node.password},
                                  deadline)

    async def logged_in(self) -> bool:
        status, body, _ = await self.request("POST", "/server/login-check", deadline=OUTAGE_ANSWER_DEADLINE)
        return status == 200 and body["authenticated"] is True

    async def signed_call_works(self) -> bool:
        """A /func/ call the manager answers only when the webserver signed it with the login's keypair."""
        status, body, _ = await self.request("GET", "/func/auth/role", deadline=OUTAGE_ANSWER_DEADLINE)
        return status == 200 and body["global_role"] == "superadmin"


@pytest.fixture
async def browsers(web_node: WebNode) -> AsyncIterator[list[Browser]]:
    made: list[Browser] = []
    yield made
    for b in made:
        await b.close()


async def stored_logins(node: WebNode) -> dict[bytes, tuple[Login, int]]:
    """Every login record in the webserver's Redis, parsed (a half-written one fails here), with its TTL."""
    r = node.store()
    try:
        found = {}
        async for key in r.scan_iter(match=KEY_PREFIX + "*"):
            raw, ttl = await r.get(key), await r.ttl(key)
            found[key] = (Login(**json.loads(raw)), ttl)
        return found
    finally:
        await r.aclose()


async def test_sigkill_mid_login_keeps_answered_logins(web_node: WebNode, browsers: list[Browser]) -> None:
    browsers.extend(Browser(web_node) for _ in range(LOGINS_IN_FLIGHT + 1))
    keeper, *racers = browsers
    status, body, _ = await keeper.login()
    assert status == 200 and body["authenticated"] is True, body
    assert await keeper.signed_call_works()

    tasks = [asyncio.create_task(b.login()) for b in racers]

    async def some_answered_some_not() -> bool:
        return any(t.done() for t in tasks) and not all(t.done() for t in tasks)

    # SIGKILL once some logins were answered and others are still on their way.
    await until(some_answered_some_not, "a first login of the racing ones answered", 60, interval=0.01)
    in_flight = sum(not t.done() for t in tasks)
    web_node.web.kill()
    killed_at = time.monotonic()
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
    cut_off_seconds = time.monotonic() - killed_at
    answered = [b for b, o in zip(racers, outcomes, strict=True) if isinstance(o, tuple) and o[0] == 200]
    cut_off = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(o, aiohttp.ClientError) for o in cut_off), outcomes
    assert len(answered) + len(cut_off) == len(racers), outcomes

    restart_seconds = web_node.web.start(30)
    for b in [keeper, *answered]:
        assert await b.logged_in(), "a login answered before the SIGKILL was lost"
        assert await b.signed_call_works()
    logins = await stored_logins(web_node)
    # each answered login is stored whole; a cut-off one is at most a whole record nobody holds a
    # cookie for, expiring by itself
    assert len(logins) >= 1 + len(answered)
    assert all(ttl > 0 and login.secret_key and login.csrf_token for login, ttl in logins.values()), logins
    record("webserver SIGKILL mid-login", in_flight=in_flight, answered_before=len(answered) + 1,
           cut_off=len(cut_off), cut_off_seconds=cut_off_seconds, restart_seconds=restart_seconds,
           logins_lost=0)


async def test_redis_restart_under_the_webserver(web_node: WebNode, browsers: list[Browser]) -> None:
    browsers.extend(Browser(web_node) for _ in range(2))
    old, newcomer = browsers
    status, _, _ = await old.login()
    assert status == 200
    pid = web_node.web.proc.pid if web_node.web.proc else None
    before = set(await stored_logins(web_node))

    web_node.redis.kill()
    down_at = time.monotonic()
    answers: list[tuple[str, int, float]] = []

    async def timed(what: str, call: Any) -> tuple[int, Any, str]:
        began = time.monotonic()
        status, body, ctype = await call
        answers.append((what, status, time.monotonic() - began))
        return status, body, ctype

    async def refused_for_the_store() -> bool:
        # a login cached before Redis went may be served until the process notices the outage
        status, body, ctype = await timed("login-check", old.request("POST", "/server/login-check",
                                                                      deadline=OUTAGE_ANSWER_DEADLINE))
        assert status in (200, 503), (status, body)
        if status != 503:
            return False
        assert ctype == "application/problem+json" and body["type"] == PROBS + "session-store-unavailable", body
        return True

    await until(refused_for_the_store, "503 while the session store is down", 15)
    status, body, ctype = await timed("signed call", old.request("GET", "/func/auth/role",
                                                                  deadline=OUTAGE_ANSWER_DEADLINE))
    assert (status, ctype) == (503, "application/problem+json"), body
    status, body, ctype = await timed("login", newcomer.login(OUTAGE_ANSWER_DEADLINE))
    assert (status, ctype) == (503, "application/problem+json"), body
    # what needs no login does not need the store either
    status, body, _ = await timed("public call", newcomer.request("GET", "/func/", deadline=OUTAGE_ANSWER_DEADLINE))
    assert status == 200, body
    slowest = max(seconds for _, _, seconds in answers)
    assert slowest < OUTAGE_ANSWER_DEADLINE, answers

    web_node.redis.start()
    back_at = time.monotonic()
    recovered = await until(old.logged_in, "the old login served again", 30)
    assert await old.signed_call_works()
    status, _, _ = await newcomer.login()
    assert status == 200 and await newcomer.logged_in()
    after = set(await stored_logins(web_node))
    # nothing acknowledged was lost, and the refused login wrote nothing: one more, the newcomer's
    assert before <= after and len(after) == len(before) + 1, (before, after)
    r = web_node.store()
    try:
        async def subscribed_again() -> bool:
            return dict(await r.pubsub_numsub(ENDED_CHANNEL)).get(ENDED_CHANNEL.encode(), 0) >= 1
        resubscribed = await until(subscribed_again, "the ended-logins subscription back", 15)
    finally:
        await r.aclose()
    assert (web_node.web.proc.pid if web_node.web.proc else None) == pid, "the webserver was restarted"
    record("webserver under a Redis restart", outage_seconds=back_at - down_at, slowest_outage_answer=slowest,
           recovered_seconds=recovered, resubscribed_seconds=resubscribed,
           statuses=sorted({s for _, s, _ in answers}), logins_lost=0)
