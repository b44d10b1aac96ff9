"""GraphQL limits (document size, depth, fields, aliases; fragments expanded), checked before
validation and with parsing and validation off the event loop: hostile documents get 400
problem+json while other requests keep answering within 100 ms; the official client's queries and
a full introspection query pass."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import pytest
from aiohttp import web
from graphql import get_introspection_query

from bai.manager.api import gql, root
from bai.manager.config import GraphQLConfig

from .conftest import ApiClient, ManagerDB
from .test_gql import KEYPAIR_INFO_Q, SESSION_INFO_Q, SESSION_LIST_Q

PROBS = "https://api.backend.ai/probs/"
LIMITS = GraphQLConfig()

WIDE = "{ keypair { " + "access_key " * 20_000 + "} }"                      # 20,000 fields, 220 KB
WIDE_UNDER_SIZE = "{ keypair { " + "access_key " * 2_900 + "} }"             # under the size cap
DEEP = "query { " + "a { " * 40 + "b" + " }" * 41                            # 41 levels
VERY_DEEP = "query { " + "a { " * 5_000 + "b" + " }" * 5_001                # beyond the parser's guard
ALIASES = "{ " + " ".join(f"k{i}: keypair {{ access_key }}" for i in range(200)) + " }"
FRAGMENT_BOMB = ("query { ...F0 } " + " ".join(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}"
                                               for i in range(40))
                 + " fragment F40 on Query { keypair { access_key } }")     # 2^40 fields, 2 KB
HOSTILE = {"wide": (WIDE, "max-document-size"), "wide-under-size": (WIDE_UNDER_SIZE, "max-fields"),
           "deep": (DEEP, "max-depth"), "very-deep": (VERY_DEEP, "max-depth"),
           "aliases": (ALIASES, "max-aliases"), "fragment-bomb": (FRAGMENT_BOMB, "max-fields")}


def _routes(app: web.Application) -> None:
    root.routes(app)
    gql.routes(app)


@pytest.fixture(scope="module")
async def api(make_client: Any) -> ApiClient:
    client: ApiClient = await make_client(_routes)
    return client


@pytest.mark.parametrize("path", ["/admin/gql", "/admin/graphql"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_queries_are_refused(api: ApiClient, manager_db: ManagerDB, path: str, case: str) -> None:
    query, limit = HOSTILE[case]
    started = time.monotonic()
    got = await api.post(path, {"query": query}, manager_db.admin)
    assert (got.status, got.content_type, got.body["type"]) == (400, "application/problem+json",
                                                                PROBS + "graphql-error")
    assert limit in got.body["msg"] and got.body["data"] == [{"message": got.body["msg"]}]
    assert time.monotonic() - started < 2


async def test_official_queries_and_introspection_pass(api: ApiClient, manager_db: ManagerDB) -> None:
    for query, variables in [(KEYPAIR_INFO_Q, None), (SESSION_LIST_Q, {"limit": 10, "offset": 0}),
                             (SESSION_INFO_Q, {"id": "00000000-0000-0000-0000-000000000000"}),
                             (get_introspection_query(descriptions=True, specified_by_url=True,
                                                      directive_is_repeatable=True, schema_description=True,
                                                      input_value_deprecation=True), None)]:
        got = await api.post("/admin/gql", {"query": query, "variables": variables}, manager_db.admin)
        assert got.status == 200 and "errors" not in got.body, got.body


async def test_syntax_and_validation_errors_keep_their_answers(api: ApiClient, manager_db: ManagerDB) -> None:
    got = await api.post("/admin/gql", {"query": "{ keypair { "}, manager_db.admin)
    assert got.status == 200 and got.body["data"] is None and "Syntax Error" in got.body["errors"][0]["message"]
    got = await api.post("/admin/gql", {"query": "{ keypair { no_such_field } }"}, manager_db.admin)
    assert got.status == 200 and "no_such_field" in got.body["errors"][0]["message"]
    got = await api.post("/admin/graphql", {"query": "{ keypair { no_such_field } }"}, manager_db.admin)
    assert (got.status, got.body["type"]) == (400, PROBS + "graphql-error")


async def test_oversized_body_refused_before_reading(api: ApiClient, manager_db: ManagerDB) -> None:
    huge = b'{"query": "' + b"{ keypair { access_key } }" + b" " * (7 * LIMITS.max_document_size + 2**20) + b'"}'
    got = await api.post("/admin/gql", creds=manager_db.admin, raw=huge)
    assert (got.status, got.body["type"]) == (400, PROBS + "graphql-error") and "body" in got.body["msg"]


async def test_other_requests_stay_fast_during_hostile_queries(api: ApiClient, manager_db: ManagerDB) -> None:
    """GET / is timed while hostile queries arrive. A slow answer only counts against the
    manager when this process was busy meanwhile (its CPU time close to the wall time): on a
    loaded machine the OS may not run the process at all for a while, which is no stall of ours."""
    samples: list[tuple[float, float]] = []  # (wall seconds, process CPU seconds) per request
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            wall, cpu = time.perf_counter(), time.process_time()
            async with api.client.get("/") as resp:
                assert resp.status == 200
                await resp.read()
            samples.append((time.perf_counter() - wall, time.process_time() - cpu))
            await asyncio.sleep(0.005)

    async def attack() -> list[int]:
        statuses = []
        for _ in range(6):
            replies = await asyncio.gather(*(api.post("/admin/gql", {"query": q}, manager_db.admin)
                                             for q, _ in HOSTILE.values()))
            statuses += [r.status for r in replies]
        return statuses

    prober = asyncio.create_task(probe())
    try:
        statuses = await asyncio.wait_for(attack(), 60)
    finally:
        done.set()
        await asyncio.wait_for(prober, 10)
    assert statuses == [400] * len(statuses)
    assert len(samples) >= 5
    stalls = [(wall, cpu) for wall, cpu in samples if wall >= 0.1 and cpu >= 0.5 * wall]
    walls = sorted(wall for wall, _ in samples)
    assert not stalls, (f"stalled by the manager: {stalls}; median {statistics.median(walls) * 1000:.1f} ms")
    assert statistics.median(walls) < 0.05
