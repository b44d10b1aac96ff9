"""Resource use statistics (/resource/stats/*, /resource/usage/*) over real kernel rows in a real
database, through the real middlewares: exact figures computed by hand below, who sees what, and
bad ranges refused with 400.

The kernels (times are seconds after BASE, midnight UTC three days ago; 15-minute buckets):
  S1 (user1, project default): K1 cpu 2 + 1 GiB and K1b cpu 1, RUNNING 300 -> 2100 (TERMINATED)
  S2 (user1, project research): K2 cpu 1 + 512 MiB + cuda.shares 0.5, RUNNING 900 -> 1800
      (TERMINATED with no terminated_at: it ended at its status change)
  S3 (user2): K3 asked for cpu 4 but was CANCELLED before it ran: never counts
  S4 (user2): K4 cpu 1, RUNNING since 30 minutes ago, still running
  S5 (the other domain's admin): K5 cpu 8, RUNNING 0 -> 900
So user1's buckets: [0, 900): 3 cpu x 600/900 = 2 cpu, 1 GiB x 600/900; [900, 1800): 3 + 1 = 4 cpu,
1.5 GiB, gpu 0.5, 2 sessions; [1800, 2700): 3 x 300/900 = 1 cpu, 1 GiB x 300/900."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from bai.common.auth import API_VERSION, sign_request
from bai.manager.api import usage_stats
from bai.manager.store import tables as t

from .conftest import ApiClient, Creds, ManagerDB, Reply
from .test_gql import Owner, _add_user

GIB = 1024 ** 3
MIB = 1024 ** 2
NOW = datetime.now(UTC)
BASE = int(NOW.timestamp()) // 86400 * 86400 - 3 * 86400
DAY = datetime.fromtimestamp(BASE, UTC).strftime("%Y%m%d")


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(BASE + seconds, UTC)


@dataclass
class World:
    client: ApiClient
    admin: Creds
    user1: Owner
    user2: Owner
    other_admin: Owner
    monitor: Owner
    default_group: uuid.UUID
    research: uuid.UUID
    other_group: uuid.UUID


async def _session(conn: Any, owner: Owner, group: uuid.UUID, name: str,
                   kernels: list[dict[str, Any]]) -> None:
    sid = uuid.uuid4()
    await conn.execute(sa.insert(t.sessions).values(
        id=sid, name=name, domain_name=owner.domain, group_id=group, user_uuid=owner.uuid,
        access_key=owner.creds.access_key, status=kernels[0]["status"], created_at=kernels[0]["created_at"]))
    for i, k in enumerate(kernels):
        running = k.pop("running_at", None)
        await conn.execute(sa.insert(t.kernels).values(
            id=uuid.uuid4(), session_id=sid, session_name=name, cluster_idx=i + 1, domain_name=owner.domain,
            group_id=group, user_uuid=owner.uuid, access_key=owner.creds.access_key, image="python",
            status_history={"PENDING": k["created_at"].isoformat(),
                            **({"RUNNING": running.isoformat()} if running else {})}, **k))


@pytest.fixture(scope="module")
async def world(manager_db: ManagerDB, make_client: Any) -> World:
    async with manager_db.engine.begin() as conn:
        default_group = await conn.scalar(sa.select(t.groups.c.id).where(t.groups.c.domain_name == "default"))
        research, other_group = uuid.uuid4(), uuid.uuid4()
        await conn.execute(sa.insert(t.groups).values(id=research, name="research", domain_name="default"))
        await conn.execute(sa.insert(t.domains).values(name="other"))
        await conn.execute(sa.insert(t.groups).values(id=other_group, name="default", domain_name="other"))
        user1 = await _add_user(conn, "u1@usage.example", "default", "user", default_group)
        await conn.execute(sa.insert(t.association_groups_users).values(user_id=user1.uuid, group_id=research))
        user2 = await _add_user(conn, "u2@usage.example", "default", "user", default_group)
        other_admin = await _add_user(conn, "boss@other.example", "other", "admin", other_group)
        monitor = await _add_user(conn, "eye@usage.example", "default", "monitor", default_group)
        ended = {"status": "TERMINATED", "created_at": at(0)}
        await _session(conn, user1, default_group, "s1", [
            {**ended, "running_at": at(300), "terminated_at": at(2100), "status_changed": at(2100),
             "occupied_slots": {"cpu": "2", "mem": str(GIB)}},
            {**ended, "running_at": at(300), "terminated_at": at(2100), "status_changed": at(2100),
             "occupied_slots": {"cpu": "1"}}])
        await _session(conn, user1, research, "s2", [
            {**ended, "running_at": at(900), "terminated_at": None, "status_changed": at(1800),
             "occupied_slots": {"cpu": "1", "mem": str(512 * MIB), "cuda.shares": "0.5"}}])
        await _session(conn, user2, default_group, "s3", [
            {"status": "CANCELLED", "created_at": at(0), "status_changed": at(4000), "terminated_at": at(4000),
             "requested_slots": {"cpu": "4"}, "occupied_slots": {}}])
        await _session(conn, user2, default_group, "s4", [
            {"status": "RUNNING", "created_at": NOW - timedelta(minutes=31),
             "running_at": NOW - timedelta(minutes=30), "occupied_slots": {"cpu": "1"}}])
        await _session(conn, other_admin, other_group, "s5", [
            {**ended, "running_at": at(0), "terminated_at": at(900), "status_changed": at(900),
             "occupied_slots": {"cpu": "8"}}])
    client = await make_client(usage_stats.routes)
    return World(client, manager_db.admin, user1, user2, other_admin, monitor, default_group, research,
                 other_group)


async def get(w: World, path: str, creds: Creds, body: Any = None) -> Reply:
    headers = {"Host": w.client.host, "Content-Type": "application/json", "X-BackendAI-Version": API_VERSION}
    signed = sign_request(creds.access_key, creds.secret_key, "GET", path, w.client.host, "application/json")
    headers.update({"Date": signed.date, "Authorization": signed.authorization})
    data = None if body is None else json.dumps(body).encode()
    async with w.client.client.get(path, headers=headers, data=data) as resp:
        return Reply(resp.status, resp.content_type, await resp.json(content_type=None))


def by_date(series: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {b["date"]: b for b in series}


def figures(bucket: dict[str, Any]) -> tuple[int, float, int, float]:
    return (bucket["num_sessions"]["value"], bucket["cpu_allocated"]["value"],
            bucket["mem_allocated"]["value"], bucket["gpu_allocated"]["value"])


async def test_user_series_in_15_minute_buckets(world: World) -> None:
    reply = await get(world, "/resource/stats/user/month", world.user1.creds)
    assert reply.status == 200, reply.body
    series = reply.body
    assert len(series) == 30 * 96  # the original's 2880 buckets
    dates = [b["date"] for b in series]
    assert dates == sorted(dates) and all(b - a == 900 for a, b in zip(dates, dates[1:], strict=False))
    # NOW is taken when the module is imported (collection), maybe minutes before this runs
    now = datetime.now(UTC).timestamp()
    assert dates[-1] <= now < dates[-1] + 900 + 60
    assert series[0]["cpu_allocated"] == {"value": 0.0, "unit_hint": "count"}
    assert series[0]["mem_allocated"]["unit_hint"] == "bytes"
    b = by_date(series)
    assert figures(b[BASE - 900]) == (0, 0.0, 0, 0.0)
    assert figures(b[BASE]) == (1, 2.0, round(GIB * 600 / 900), 0.0)
    assert figures(b[BASE + 900]) == (2, 4.0, GIB + 512 * MIB, 0.5)
    assert figures(b[BASE + 1800]) == (1, 1.0, round(GIB * 300 / 900), 0.0)
    assert figures(b[BASE + 2700]) == (0, 0.0, 0, 0.0)
    # user1's series holds only user1's kernels: nothing else anywhere
    assert sum(x["cpu_allocated"]["value"] for x in series) == pytest.approx(7.0)


async def test_hourly_and_daily_buckets_average_over_the_bucket(world: World) -> None:
    hourly = by_date((await get(world, "/resource/stats/user/month?interval=1h&days=7", world.user1.creds)).body)
    assert len(hourly) == 7 * 24
    # hour 0: K1+K1b 3 cpu for 1800 s, K2 1 cpu and 0.5 gpu for 900 s
    assert figures(hourly[BASE]) == (2, pytest.approx((3 * 1800 + 900) / 3600),
                                     round((GIB * 1800 + 512 * MIB * 900) / 3600), pytest.approx(0.125))
    daily = by_date((await get(world, "/resource/stats/user/month?interval=1d&days=5", world.user1.creds)).body)
    assert len(daily) == 5
    assert daily[BASE]["cpu_allocated"]["value"] == pytest.approx((3 * 1800 + 900) / 86400)


async def test_a_running_kernel_counts_until_now(world: World) -> None:
    before = (datetime.now(UTC) - NOW).total_seconds()
    series = (await get(world, "/resource/stats/user/month?interval=1h&days=1", world.user2.creds)).body
    after = (datetime.now(UTC) - NOW).total_seconds()
    # K4: 1 cpu since 30 minutes before NOW, still running (the cancelled K3 never counts)
    cpu_seconds = sum(b["cpu_allocated"]["value"] * 3600 for b in series)
    assert 1800 + before - 1 <= cpu_seconds <= 1800 + after + 1
    assert max(b["num_sessions"]["value"] for b in series) == 1


async def test_admin_series_is_scoped(world: World) -> None:
    for creds in (world.admin, world.monitor.creds):
        b = by_date((await get(world, "/resource/stats/admin/month", creds)).body)
        assert figures(b[BASE]) == (2, 2.0 + 8.0, round(GIB * 600 / 900), 0.0)
    other = by_date((await get(world, "/resource/stats/admin/month", world.other_admin.creds)).body)
    assert figures(other[BASE]) == (1, 8.0, 0, 0.0)
    assert figures(other[BASE + 900]) == (0, 0.0, 0, 0.0)
    refused = await get(world, "/resource/stats/admin/month", world.user1.creds)
    assert refused.status == 403 and refused.content_type == "application/problem+json"


async def test_project_series(world: World) -> None:
    path = f"/resource/stats/project/month?project_id={world.research}"
    b = by_date((await get(world, path, world.admin)).body)
    assert figures(b[BASE + 900]) == (1, 1.0, 512 * MIB, 0.5)
    assert figures(b[BASE]) == (0, 0.0, 0, 0.0)
    default = by_date((await get(world, f"/resource/stats/project/month?project_id={world.default_group}",
                                 world.monitor.creds)).body)
    assert figures(default[BASE]) == (1, 2.0, round(GIB * 600 / 900), 0.0)
    # a member is not an admin; another domain's admin learns nothing of the project
    assert (await get(world, path, world.user1.creds)).status == 403
    hidden = await get(world, path, world.other_admin.creds)
    assert hidden.status == 404 and hidden.content_type == "application/problem+json"
    assert (await get(world, f"/resource/stats/project/month?project_id={uuid.uuid4()}", world.admin)).status == 404
    own = by_date((await get(world, f"/resource/stats/project/month?project_id={world.other_group}",
                             world.other_admin.creds)).body)
    assert figures(own[BASE]) == (1, 8.0, 0, 0.0)


@pytest.mark.parametrize("query", ["interval=5m", "days=0", "days=31", "days=x", "bogus=1", "interval="])
async def test_bad_series_parameters_are_400(world: World, query: str) -> None:
    reply = await get(world, f"/resource/stats/user/month?{query}", world.user1.creds)
    assert reply.status == 400 and reply.content_type == "application/problem+json", reply.body


async def test_period_report(world: World) -> None:
    reply = await get(world, f"/resource/usage/period?start_date={DAY}&end_date={DAY}", world.admin)
    assert reply.status == 200, reply.body
    groups = {g["g_id"]: g for g in reply.body}
    assert set(groups) == {str(world.default_group), str(world.research), str(world.other_group)}
    d = groups[str(world.default_group)]
    assert (d["g_name"], d["domain_name"], d["g_cpu_allocated"], d["g_mem_allocated"]) == ("default", "default", 3.0, GIB)
    assert [c["name"] for c in d["c_infos"]] == ["s1", "s1"]
    c = d["c_infos"][0]
    assert c["email"] == "u1@usage.example" and c["used_days"] == 1 and c["used_time"] == "0:35:00"
    r = groups[str(world.research)]
    assert (r["g_gpu_allocated"], r["g_mem_allocated"]) == (0.5, 512 * MIB)
    assert r["c_infos"][0]["terminated_at"] == "None" and r["c_infos"][0]["status"] == "TERMINATED"
    assert groups[str(world.other_group)]["g_cpu_allocated"] == 8.0
    # one project only; the other domain's admin sees their domain only; a user their own kernels
    only = await get(world, f"/resource/usage/period?group_id={world.research}&start_date={DAY}&end_date={DAY}",
                     world.admin)
    assert [g["g_id"] for g in only.body] == [str(world.research)]
    theirs = await get(world, f"/resource/usage/period?start_date={DAY}&end_date={DAY}", world.other_admin.creds)
    assert [g["g_id"] for g in theirs.body] == [str(world.other_group)]
    mine = await get(world, f"/resource/usage/period?start_date={DAY}&end_date={DAY}", world.user1.creds)
    assert {g["g_id"] for g in mine.body} == {str(world.default_group), str(world.research)}
    nothing = await get(world, f"/resource/usage/period?start_date={DAY}&end_date={DAY}", world.user2.creds)
    assert nothing.body == []


@pytest.mark.parametrize("query", [
    "start_date=20260101&end_date=20260501",  # more than 100 days
    "start_date=20260105&end_date=20260101",  # ends before it starts
    "start_date=20261340&end_date=20261341",  # no such days
    "start_date=2026-01-01&end_date=20260102",
    "end_date=20260102",
    "start_date=20260101&end_date=20260102&group_id=nope",
])
async def test_bad_periods_are_400(world: World, query: str) -> None:
    reply = await get(world, f"/resource/usage/period?{query}", world.admin)
    assert reply.status == 400 and reply.content_type == "application/problem+json", reply.body


async def test_month_report_as_the_official_client_sends_it(world: World) -> None:
    month = DAY[:6]
    # the official client's usage_per_month: a GET with a JSON body
    reply = await get(world, "/resource/usage/month", world.admin, {"month": month, "group_ids": [str(world.research)]})
    assert reply.status == 200, reply.body
    assert [(g["g_id"], g["g_cpu_allocated"]) for g in reply.body] == [(str(world.research), 1.0)]
    by_query = await get(world, f"/resource/usage/month?month={month}&group_ids={world.research},{world.other_group}",
                         world.admin)
    assert {g["g_id"] for g in by_query.body} == {str(world.research), str(world.other_group)}
    for bad in ({"month": "202613"}, {"month": "2026"}, {"month": month, "group_ids": ["x"]}, {"group_ids": []}):
        refused = await get(world, "/resource/usage/month", world.admin, bad)
        assert refused.status == 400 and refused.content_type == "application/problem+json", (bad, refused.body)
